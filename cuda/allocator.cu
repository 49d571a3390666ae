#include "cuda/allocator.h"

#include "cuda/runtime.h"

namespace loom::cuda {

namespace {
// cudaMalloc aligns to 256 bytes; rounding sizes to 512 lets blocks of nearly
// equal sizes share one cache slot.
constexpr size_t kRound = 512;
size_t round_up(size_t n) { return (n + kRound - 1) / kRound * kRound; }
}  // namespace

size_t CachingCudaAllocator::round_size(size_t bytes) const { return round_up(bytes); }

void* CachingCudaAllocator::system_allocate(size_t bytes) {
  (void)stream();  // fails with a clear message when there is no device
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it: the caller frees its cache and retries
    return nullptr;
  }
  LOOM_CUDA_CHECK(status, "cuda allocator");
  return ptr;
}

void CachingCudaAllocator::system_free(void* ptr) { LOOM_CUDA_CHECK(cudaFree(ptr), "cuda allocator: release_cached"); }

CachingCudaAllocator& allocator() {
  // Never destroyed: tensors in static storage may be freed after main returns.
  static auto* instance = new CachingCudaAllocator();
  return *instance;
}

}  // namespace loom::cuda
