// backend.cu: the CUDA backend object, its memory and host <-> device copies.
#include "cuda/allocator.h"
#include "cuda/cuda_backend.h"
#include "cuda/runtime.h"
#include "engine/comm/comm.h"

namespace loom {

namespace cuda {

Allocator& CudaBackend::allocator() { return cuda::allocator(); }

void CudaBackend::copy_from_host(void* dst, const void* src, size_t bytes) {
  // From pageable memory this returns once `src` has been read, so the caller
  // may free it at once; the copy is ordered before later kernels on the stream.
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()), "copy to cuda");
}

void CudaBackend::copy_to_host(void* dst, const void* src, size_t bytes) {
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()), "copy to cpu");
  // The caller reads dst next. Waiting here also reports any error raised by an
  // earlier kernel, under the op that noticed it.
  LOOM_CUDA_CHECK(cudaStreamSynchronize(stream()), "copy to cpu");
}

void CudaBackend::synchronize() { LOOM_CUDA_CHECK(cudaStreamSynchronize(stream()), "cuda synchronize"); }

CudaBackend& backend() {
  // Constructing it touches no CUDA API: a build with CUDA on a machine without
  // a GPU works on the CPU and fails only when a cuda tensor is made.
  static CudaBackend instance;
  return instance;
}

}  // namespace cuda

Backend* cuda_backend() { return &cuda::backend(); }

void* comm::cuda_stream_for_collectives() { return cuda::stream(); }

}  // namespace loom
