// runtime.h: the CUDA runtime as the backend uses it: error checks that name
// the op, the one stream every kernel and copy goes on, and launch helpers.
//
// Every CUDA call goes through LOOM_CUDA_CHECK and every kernel launch is
// followed by LOOM_CUDA_CHECK_LAUNCH, so a failure surfaces as a loom::Error
// naming the op and CUDA's own message, never as a silent wrong result.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/error.h"

// LOOM_CUDA_CHECK(cudaMalloc(&p, n), "cuda allocator") throws
// "cuda allocator: cudaMalloc(&p, n) failed: out of memory (cudaErrorMemoryAllocation)".
#define LOOM_CUDA_CHECK(call, op)                                                                    \
  do {                                                                                               \
    const cudaError_t loom_cuda_status_ = (call);                                                    \
    if (loom_cuda_status_ != cudaSuccess) ::loom::cuda::throw_error(loom_cuda_status_, op, #call); \
  } while (0)

// After every <<<...>>> launch: a bad configuration only shows up in
// cudaGetLastError. Errors raised while the kernel runs appear at the next
// synchronising call, which is checked too (copies to the host, synchronize());
// with LOOM_CUDA_SYNC=1 in the environment every launch also waits for its
// kernel, so such an error names the kernel that raised it (slow; for debugging).
#define LOOM_CUDA_CHECK_LAUNCH(op) ::loom::cuda::check_launch(op)

namespace loom::cuda {

[[noreturn]] void throw_error(cudaError_t status, const char* op, const char* call);
void check_launch(const char* op);

// The stream every kernel, copy and cuBLAS call of the backend runs on. One
// stream keeps all work in order, so the caching allocator may hand a freed
// block to the next op without waiting for the GPU. The first call checks that
// a device is present and throws a loom::Error saying why when it is not.
cudaStream_t stream();

// Threads per block of the elementwise and reduce kernels.
constexpr int kBlockThreads = 256;

// Blocks for a grid-stride loop over n items: enough to fill the GPU, never
// more than needed (the loop covers the rest).
int grid_for(int64_t n);

// Lets `kernel` start with `bytes` of dynamic shared memory. Above 48 KiB (static
// and dynamic together) a kernel must opt in, up to the device's limit (227 KiB
// per block on H100, 163 KiB on A100); past that limit this throws, naming the
// op and `what` needs the space, rather than letting the launch fail with
// "invalid argument".
void reserve_shared_memory(const void* kernel, size_t bytes, const char* op, const std::string& what);

}  // namespace loom::cuda
