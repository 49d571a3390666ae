#include "cuda/allocator.h"

#include "cuda/runtime.h"

namespace loom::cuda {

namespace {
// cudaMalloc aligns to 256 bytes; rounding sizes to 512 lets blocks of nearly
// equal sizes share one cache slot.
constexpr size_t kRound = 512;
size_t round_up(size_t n) { return (n + kRound - 1) / kRound * kRound; }
}  // namespace

void* CachingCudaAllocator::allocate(size_t bytes, size_t* capacity) {
  const size_t want = round_up(bytes == 0 ? 1 : bytes);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_blocks_.lower_bound(want);
    if (it != free_blocks_.end() && it->first <= 2 * want) {
      void* ptr = it->second;
      *capacity = it->first;
      stats_.cached_bytes -= it->first;
      free_blocks_.erase(it);
      stats_.active_bytes += *capacity;
      if (stats_.active_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.active_bytes;
      return ptr;
    }
  }
  (void)stream();  // fails with a clear message when there is no device
  void* ptr = nullptr;
  cudaError_t status = cudaMalloc(&ptr, want);
  if (status == cudaErrorMemoryAllocation) {
    // The cache may hold enough memory: give it back and try once more.
    (void)cudaGetLastError();
    release_cached();
    status = cudaMalloc(&ptr, want);
  }
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    const AllocatorStats s = stats();
    LOOM_FAIL("out of memory: could not allocate ", want, " bytes on cuda (", s.active_bytes,
              " bytes in use by tensors)");
  }
  LOOM_CUDA_CHECK(status, "cuda allocator");
  std::lock_guard<std::mutex> lock(mutex_);
  *capacity = want;
  stats_.system_allocations += 1;
  stats_.active_bytes += want;
  if (stats_.active_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.active_bytes;
  return ptr;
}

void CachingCudaAllocator::deallocate(void* ptr, size_t capacity) {
  // Runs in Storage's destructor: never throws, never calls CUDA.
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.active_bytes -= capacity;
  stats_.cached_bytes += capacity;
  free_blocks_.emplace(capacity, ptr);
}

AllocatorStats CachingCudaAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingCudaAllocator::release_cached() {
  std::multimap<size_t, void*> blocks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    blocks.swap(free_blocks_);
    stats_.cached_bytes = 0;
  }
  // cudaFree waits for the device, so no queued kernel still uses these blocks.
  for (auto& [size, ptr] : blocks) LOOM_CUDA_CHECK(cudaFree(ptr), "cuda allocator: release_cached");
}

CachingCudaAllocator& allocator() {
  // Never destroyed: tensors in static storage may be freed after main returns.
  static auto* instance = new CachingCudaAllocator();
  return *instance;
}

}  // namespace loom::cuda
