// nccl.cpp: the Communicator over NCCL, for "device": "cuda", one GPU per rank.
//
// NCCL needs a unique id known to every rank before it can connect them: rank 0
// makes it and MPI broadcasts it (the bootstrap NCCL's own examples use). The
// collectives run on the CUDA backend's one stream (cuda_stream_for_collectives), so they are
// ordered after the backward's kernels and before the optimizer's without extra
// events. A rank that dies mid-collective leaves the others waiting at their next
// synchronisation until mpirun, noticing the death, ends them; NCCL's own
// watchdog is not wired in. Host-side agreement (all_gather_text, abort) goes
// through MPI.
#include <cuda_runtime.h>  // the toolkit's: cudaStream_t
#include <nccl.h>

#include <cstdlib>
#include <cstring>

#include "engine/backend.h"
#include "engine/comm/comm.h"
#include "engine/error.h"

namespace loom::comm {

bool nccl_built() { return true; }

namespace {

void check(ncclResult_t status, const char* call) {
  if (status == ncclSuccess) return;
  LOOM_FAIL("NCCL: ", call, " failed: ", ncclGetErrorString(status), " (", ncclGetLastError(nullptr), ")");
}

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::i64: return ncclInt64;
  }
  LOOM_FAIL("NCCL: unsupported dtype");
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(Communicator& mpi) : mpi_(mpi) {
    set_timeout_seconds(mpi.timeout_seconds());
    ncclUniqueId id = {};
    if (mpi_.rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    // The id's bytes travel in an int64 host tensor of enough elements.
    Tensor bytes = Tensor::zeros({static_cast<int64_t>((sizeof id + 7) / 8)}, DType::i64);
    std::memcpy(bytes.raw_data(), &id, sizeof id);
    mpi_.broadcast(bytes, 0);
    std::memcpy(&id, bytes.raw_data(), sizeof id);
    stream_ = static_cast<cudaStream_t>(cuda_stream_for_collectives());  // checks that a device is present, selects it
    check(ncclCommInitRank(&comm_, mpi_.size(), id, mpi_.rank()), "ncclCommInitRank");
  }
  ~NcclCommunicator() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }

  int rank() const override { return mpi_.rank(); }
  int size() const override { return mpi_.size(); }
  std::string name() const override { return "nccl"; }
  Device device() const override { return Device::cuda; }

  void all_reduce_sum(const Tensor& x) override {
    LOOM_CHECK(x.device() == Device::cuda && x.is_contiguous() && (x.dtype() == DType::f32 || x.dtype() == DType::f64),
               "all_reduce_sum (NCCL): expected a contiguous float32 or float64 CUDA tensor");
    check(ncclAllReduce(x.raw_data(), x.raw_data(), static_cast<size_t>(x.numel()), nccl_type(x.dtype()), ncclSum,
                        comm_, stream_),
          "ncclAllReduce");
  }

  void broadcast(const Tensor& x, int root) override {
    LOOM_CHECK(x.device() == Device::cuda && x.is_contiguous(), "broadcast (NCCL): expected a contiguous CUDA tensor");
    check(ncclBroadcast(x.raw_data(), x.raw_data(), static_cast<size_t>(x.numel()), nccl_type(x.dtype()), root, comm_,
                        stream_),
          "ncclBroadcast");
  }

  void barrier() override {
    cuda_backend()->synchronize();  // the stream's collectives are done
    mpi_.barrier();
  }

  std::vector<std::string> all_gather_text(const std::string& text) override { return mpi_.all_gather_text(text); }
  [[noreturn]] void abort(int exit_code) override {
    if (comm_ != nullptr) ncclCommAbort(comm_), comm_ = nullptr;
    mpi_.abort(exit_code);
    std::_Exit(exit_code);  // not reached: MPI's abort ends the process
  }

 private:
  Communicator& mpi_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi) {
  return std::make_unique<NcclCommunicator>(mpi);
}

}  // namespace loom::comm
