// comm.h: the collectives data-parallel training needs, behind one interface.
//
// One process per CPU machine or per GPU, started by `mpirun`; each is a rank of
// a group of size() ranks. The group all-reduces flat gradient buffers, broadcasts
// rank 0's parameters, and agrees on start-up errors. Two implementations:
//
//   MPI   (comm/mpi.cpp)   host tensors; built when meson finds MPI (OpenMPI's pkg-config)
//   NCCL  (comm/nccl.cpp)  CUDA tensors, one GPU per rank; bootstrapped over MPI;
//                          built when the CUDA backend is built and nccl.h/libnccl are found
//
// Every collective waits at most timeout_seconds() for the other ranks: MPI has no
// time limit of its own, and a rank that hangs (or a network that drops) would
// otherwise hold every other rank forever. On a timeout the waiting rank prints
// which collective and how long, and aborts the whole job (MPI_Abort), so no rank
// is left behind.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace loom::comm {

// What `mpirun` (or another launcher) told this process through its environment,
// read before any MPI call: OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}, or PMI_RANK /
// PMI_SIZE (MPICH, Slurm). `launched` is false for a plain `./train`.
struct Launch {
  bool launched = false;
  int rank = 0, size = 1, local_rank = 0, local_size = 1;
};
Launch launch_from_environment();

// One GPU per rank: the CUDA_VISIBLE_DEVICES this rank should run under, given
// the launcher's (`visible`, null when unset). With several ranks on this
// machine: entry local_rank of the launcher's comma-separated list when it
// names several devices, or the local rank itself when it names none. "" means
// "leave it as it is": one rank on the machine, or a list of one device (the
// launcher chose this rank's GPU). Throws loom::Error when the list names fewer
// devices than there are ranks on the machine.
std::string visible_device_for_rank(const Launch& launch, const char* visible);

// True when this build has the MPI implementation (meson found MPI).
bool mpi_built();
// True when this build has the NCCL implementation (CUDA backend and NCCL found).
bool nccl_built();

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi" or "nccl".
  virtual std::string name() const = 0;
  // The device whose tensors all_reduce_sum / broadcast take (cpu for MPI, cuda for NCCL).
  virtual Device device() const = 0;

  // In place over every rank: x <- sum over ranks of x. x is a contiguous float32
  // or float64 tensor on device(). Every rank gets bit-identical results.
  virtual void all_reduce_sum(const Tensor& x) = 0;
  // x <- (sum over ranks of x) / size().
  void all_reduce_average(const Tensor& x);
  // In place: every rank's x becomes root's x (contiguous, any dtype, on device()).
  virtual void broadcast(const Tensor& x, int root = 0) = 0;
  virtual void barrier() = 0;

  // Host-side agreement, used before and between the steps. Every rank passes its
  // own text; every rank receives all of them, in rank order.
  virtual std::vector<std::string> all_gather_text(const std::string& text) = 0;
  // Ends every rank of the job at once (MPI_Abort), after this rank printed why.
  [[noreturn]] virtual void abort(int exit_code) = 0;

  // Seconds a collective may wait for the other ranks before the job is aborted.
  double timeout_seconds() const { return timeout_seconds_; }
  void set_timeout_seconds(double seconds) { timeout_seconds_ = seconds; }

 private:
  double timeout_seconds_ = 600;
};

// MPI_Init and a communicator over MPI_COMM_WORLD. Throws loom::Error when this
// build has no MPI ("MPI support is not built ..."). The world is finalised when
// the last MPI communicator is destroyed.
std::unique_ptr<Communicator> make_mpi_communicator();
// A NCCL communicator over the same ranks, bootstrapped through `mpi` (which
// must outlive it); the calling rank uses the current CUDA device. Throws when
// this build has no NCCL.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi);
// The CUDA backend's stream (a cudaStream_t) on which the NCCL collectives run,
// ordered with the kernels. Defined by the CUDA backend (cuda/backend.cu), as
// engine/backend.h's cuda_backend() is: this folder includes nothing from cuda/.
void* cuda_stream_for_collectives();

// An error every rank raised together (from agree_or_throw): each rank reports it
// and ends normally, no abort needed.
class AgreedError : public Error {
 public:
  using Error::Error;
};

// Every rank passes its error ("" when it has none). When any rank has one, every
// rank throws an AgreedError that names each failing rank and its message; otherwise
// nothing happens. A collective: every rank must call it.
void agree_or_throw(Communicator& comm, const std::string& local_error);

}  // namespace loom::comm
