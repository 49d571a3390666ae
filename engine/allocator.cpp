#include "engine/allocator.h"

#include <cstdlib>
#include <new>

#include "engine/error.h"

namespace loom {

namespace {
constexpr size_t kAlignment = 64;
size_t round_up(size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }
}  // namespace

CachingCpuAllocator::~CachingCpuAllocator() { release_cached(); }

void* CachingCpuAllocator::allocate(size_t bytes, size_t* capacity) {
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
  void* ptr = std::aligned_alloc(kAlignment, want);
  if (!ptr) {
    // The cache may hold enough memory: give it back and try once more.
    release_cached();
    ptr = std::aligned_alloc(kAlignment, want);
  }
  LOOM_CHECK(ptr != nullptr, "out of memory: could not allocate ", want, " bytes on the cpu");
  std::lock_guard<std::mutex> lock(mutex_);
  *capacity = want;
  stats_.system_allocations += 1;
  stats_.active_bytes += want;
  if (stats_.active_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.active_bytes;
  return ptr;
}

void CachingCpuAllocator::deallocate(void* ptr, size_t capacity) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.active_bytes -= capacity;
  stats_.cached_bytes += capacity;
  free_blocks_.emplace(capacity, ptr);
}

AllocatorStats CachingCpuAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingCpuAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, ptr] : free_blocks_) std::free(ptr);
  free_blocks_.clear();
  stats_.cached_bytes = 0;
}

Allocator& cpu_allocator() {
  // Never destroyed: tensors in static storage may be freed after main returns.
  static auto* allocator = new CachingCpuAllocator();
  return *allocator;
}

}  // namespace loom
