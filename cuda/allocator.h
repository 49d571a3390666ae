// allocator.h: the caching allocator for GPU memory.
//
// cudaMalloc and cudaFree are slow and cudaFree synchronises the whole device,
// so freed blocks are kept in a size-keyed cache and handed out again, as on
// the CPU (engine/allocator.h): a cached block serves a request when it is at
// most twice the requested size. A training step allocates the same sizes
// every time, so in steady state it calls cudaMalloc not at all.
//
// Reuse without waiting is safe because every kernel runs on the one stream of
// cuda/runtime.h: work that used a block is queued before work that reuses it.
#pragma once

#include <map>
#include <mutex>

#include "engine/allocator.h"

namespace loom::cuda {

class CachingCudaAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes, size_t* capacity) override;
  void deallocate(void* ptr, size_t capacity) override;
  AllocatorStats stats() const override;
  // Frees every cached block (cudaFree; waits for the device).
  void release_cached() override;

 private:
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> free_blocks_;  // capacity -> block
  AllocatorStats stats_;
};

// The allocator of Device::cuda tensors.
CachingCudaAllocator& allocator();

}  // namespace loom::cuda
