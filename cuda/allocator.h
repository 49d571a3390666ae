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

#include "engine/allocator.h"

namespace loom::cuda {

class CachingCudaAllocator final : public CachingAllocator {
 protected:
  const char* device_label() const override { return "cuda device"; }
  size_t round_size(size_t bytes) const override;
  void* system_allocate(size_t bytes) override;  // cudaMalloc
  // cudaFree waits for the device, so no queued kernel still uses the block.
  void system_free(void* ptr) override;
};

// The allocator of Device::cuda tensors.
CachingCudaAllocator& allocator();

}  // namespace loom::cuda
