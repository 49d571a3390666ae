// mpi.cpp: the Communicator over MPI_COMM_WORLD (OpenMPI, MPICH).
//
// Collectives are MPI's blocking ones (its tuned algorithms, shared memory on one
// host). MPI has no time limit, so a watchdog thread guards each collective: the
// main thread writes a deadline before it enters MPI and clears it after; when the
// watchdog finds a deadline passed it prints which collective waited for how long
// and aborts the job, which ends every rank (mpirun kills the others).
// Tensors on another device than the CPU go through host copies.
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "comm/comm.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace loom::comm {

bool mpi_built() { return true; }

namespace {

using Clock = std::chrono::steady_clock;

// Names the MPI error code in a loom::Error.
void check(int status, const char* call) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(status, text, &length);
  LOOM_FAIL("MPI: ", call, " failed: ", std::string(text, static_cast<size_t>(length)));
}

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i64: return MPI_INT64_T;
  }
  LOOM_FAIL("MPI: unsupported dtype");
}

// MPI counts are int: a buffer above 2^31 - 1 elements goes in pieces.
constexpr int64_t kMaxCount = int64_t{1} << 30;

class MpiCommunicator;

// One thread per process; armed around every collective.
class Watchdog {
 public:
  explicit Watchdog(int rank) : rank_(rank), thread_([this] { watch(); }) {}
  ~Watchdog() {
    stopping_ = true;
    thread_.join();
  }
  void arm(const char* what, double seconds) {
    what_ = what;
    seconds_ = seconds;
    deadline_ns_ = (Clock::now().time_since_epoch() + std::chrono::duration_cast<Clock::duration>(
                                                          std::chrono::duration<double>(seconds)))
                       .count();
  }
  void disarm() { deadline_ns_ = 0; }

 private:
  void watch() {
    while (!stopping_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const int64_t deadline = deadline_ns_;
      if (deadline != 0 && Clock::now().time_since_epoch().count() > deadline) {
        std::fprintf(stderr,
                     "\nrank %d: error: %s waited more than %.0f s for the other ranks (a rank died, hangs or "
                     "cannot be reached); aborting every rank\n",
                     rank_, what_.load(), seconds_.load());
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
        std::_Exit(1);  // MPI_Abort does not return; should it, this rank still ends
      }
    }
  }

  const int rank_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> deadline_ns_{0};
  std::atomic<const char*> what_{""};
  std::atomic<double> seconds_{0};
  std::thread thread_;
};

// Arms the watchdog for the scope of one collective.
struct Guarded {
  Watchdog& dog;
  Guarded(Watchdog& d, const char* what, double seconds) : dog(d) { dog.arm(what, seconds); }
  ~Guarded() { dog.disarm(); }
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      // Errors come back as codes (MPI_ERRORS_RETURN below), which check() names.
      check(MPI_Init(nullptr, nullptr), "MPI_Init");
      owns_world_ = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    watchdog_ = std::make_unique<Watchdog>(rank_);
  }
  ~MpiCommunicator() override {
    watchdog_.reset();
    if (owns_world_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }
  Device device() const override { return Device::cpu; }

  void all_reduce_sum(const Tensor& x) override {
    LOOM_CHECK(x.is_contiguous() && (x.dtype() == DType::f32 || x.dtype() == DType::f64),
               "all_reduce_sum: expected a contiguous float32 or float64 tensor");
    if (x.device() != Device::cpu) return through_host(x, [&](const Tensor& h) { all_reduce_sum(h); });
    Guarded guard(*watchdog_, "all-reduce", timeout_seconds());
    char* data = static_cast<char*>(x.raw_data());
    const int64_t element = x.dtype() == DType::f32 ? 4 : 8;
    for (int64_t done = 0; done < x.numel(); done += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, x.numel() - done));
      check(MPI_Allreduce(MPI_IN_PLACE, data + done * element, count, mpi_type(x.dtype()), MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce");
    }
  }

  void broadcast(const Tensor& x, int root) override {
    LOOM_CHECK(x.is_contiguous(), "broadcast: expected a contiguous tensor");
    if (x.device() != Device::cpu) return through_host(x, [&](const Tensor& h) { broadcast(h, root); });
    Guarded guard(*watchdog_, "broadcast", timeout_seconds());
    char* data = static_cast<char*>(x.raw_data());
    const int64_t element = dtype_size(x.dtype());
    for (int64_t done = 0; done < x.numel(); done += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, x.numel() - done));
      check(MPI_Bcast(data + done * element, count, mpi_type(x.dtype()), root, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }

  void barrier() override {
    Guarded guard(*watchdog_, "barrier", timeout_seconds());
    check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
  }

  std::vector<std::string> all_gather_text(const std::string& text) override {
    Guarded guard(*watchdog_, "start-up agreement", timeout_seconds());
    const std::string mine = text.substr(0, 1 << 20);
    int length = static_cast<int>(mine.size());
    std::vector<int> lengths(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
    check(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD), "MPI_Allgather");
    int total = 0;
    for (int r = 0; r < size_; ++r) offsets[r] = total, total += lengths[r];
    std::string all(static_cast<size_t>(total), '\0');
    check(MPI_Allgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR,
                         MPI_COMM_WORLD),
          "MPI_Allgatherv");
    std::vector<std::string> texts;
    for (int r = 0; r < size_; ++r) texts.push_back(all.substr(offsets[r], lengths[r]));
    return texts;
  }

  [[noreturn]] void abort(int exit_code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  template <class F>
  void through_host(const Tensor& x, F&& collective) {
    const Tensor host = x.to(Device::cpu);
    collective(host);
    copy_(x, host.to(x.device()));
  }

  int rank_ = 0, size_ = 1;
  bool owns_world_ = false;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<MpiCommunicator>(); }

}  // namespace loom::comm
