// comm.cpp: what every build has, with or without MPI: the launch environment,
// the averaging all-reduce, start-up agreement, and the stubs that say MPI or
// NCCL support is not built.
#include "engine/comm/comm.h"

#include <cstdlib>
#include <string>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/record.h"

namespace loom::comm {

namespace {

// The first of `names` that is set to an integer, or -1.
int integer_from_environment(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    char* end = nullptr;
    const long v = std::strtol(value, &end, 10);
    if (*end == '\0' && v >= 0 && v < (1 << 24)) return static_cast<int>(v);
  }
  return -1;
}

}  // namespace

Launch launch_from_environment() {
  Launch l;
  const int size = integer_from_environment({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"});
  const int rank = integer_from_environment({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"});
  if (size < 1 || rank < 0) return l;
  l.launched = true;
  l.size = size;
  l.rank = rank;
  const int local_rank = integer_from_environment({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"});
  const int local_size = integer_from_environment({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"});
  l.local_rank = local_rank >= 0 ? local_rank : rank;
  l.local_size = local_size >= 1 ? local_size : size;
  return l;
}

std::string visible_device_for_rank(const Launch& launch, const char* visible) {
  if (!launch.launched || launch.local_size <= 1) return "";
  std::vector<std::string> devices;
  for (std::string rest = visible ? visible : ""; !rest.empty();) {
    const size_t comma = rest.find(',');
    devices.push_back(rest.substr(0, comma));
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
  }
  if (devices.empty()) return std::to_string(launch.local_rank);
  if (devices.size() == 1) return "";
  LOOM_CHECK(launch.local_rank < static_cast<int>(devices.size()), "CUDA_VISIBLE_DEVICES=", visible, " names ",
             devices.size(), " devices, but ", launch.local_size, " ranks run on this machine (local rank ",
             launch.local_rank, " has no GPU of its own)");
  return devices[launch.local_rank];
}

void Communicator::all_reduce_average(const Tensor& x) {
  all_reduce_sum(x);
  if (size() > 1) {
    GradModeGuard no_grad(false);  // engine/record.h
    mul_(x, 1.0 / size());
  }
}

void agree_or_throw(Communicator& comm, const std::string& local_error) {
  const std::vector<std::string> errors = comm.all_gather_text(local_error);
  std::string message;
  for (size_t r = 0; r < errors.size(); ++r)
    if (!errors[r].empty()) message += (message.empty() ? "" : "\n") + detail::concat("rank ", r, ": ", errors[r]);
  if (!message.empty()) throw AgreedError(message);
}

#ifndef LOOM_WITH_MPI
bool mpi_built() { return false; }
std::unique_ptr<Communicator> make_mpi_communicator() {
  LOOM_FAIL("MPI support is not built: this build found no MPI (apt-get install libopenmpi-dev openmpi-bin, "
            "then reconfigure: meson setup --reconfigure build)");
}
#endif

#ifndef LOOM_WITH_NCCL
bool nccl_built() { return false; }
std::unique_ptr<Communicator> make_nccl_communicator(Communicator&) {
  LOOM_FAIL("NCCL support is not built: this build has no CUDA backend or found no NCCL (nccl.h and libnccl); "
            "training on \"cuda\" over MPI copies the gradients through the host instead");
}
#endif

}  // namespace loom::comm
