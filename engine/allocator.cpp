#include "engine/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "engine/error.h"

namespace loom {

namespace {
constexpr size_t kAlignment = 64;
size_t round_up(size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }
}  // namespace

void* CachingAllocator::allocate(size_t bytes, size_t* capacity) {
  const size_t want = round_size(bytes == 0 ? 1 : bytes);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_blocks_.lower_bound(want);
    if (it != free_blocks_.end() && it->first <= 2 * want) {
      void* ptr = it->second;
      *capacity = it->first;
      stats_.cached_bytes -= it->first;
      free_blocks_.erase(it);
      stats_.active_bytes += *capacity;
      stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.active_bytes);
      return ptr;
    }
  }
  void* ptr = system_allocate(want);
  if (!ptr) {
    // The cache may hold enough memory: give it back and try once more.
    release_cached();
    ptr = system_allocate(want);
  }
  LOOM_CHECK(ptr != nullptr, "out of memory: could not allocate ", want, " bytes on the ", device_label(), " (",
             stats().active_bytes, " bytes in use by tensors)");
  std::lock_guard<std::mutex> lock(mutex_);
  *capacity = want;
  stats_.system_allocations += 1;
  stats_.active_bytes += want;
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.active_bytes);
  return ptr;
}

void CachingAllocator::deallocate(void* ptr, size_t capacity) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.active_bytes -= capacity;
  stats_.cached_bytes += capacity;
  free_blocks_.emplace(capacity, ptr);
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::release_cached() {
  std::multimap<size_t, void*> blocks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    blocks.swap(free_blocks_);
    stats_.cached_bytes = 0;
  }
  for (auto& [size, ptr] : blocks) system_free(ptr);
}

size_t CachingCpuAllocator::round_size(size_t bytes) const { return round_up(bytes); }
void* CachingCpuAllocator::system_allocate(size_t bytes) { return std::aligned_alloc(kAlignment, bytes); }
void CachingCpuAllocator::system_free(void* ptr) { std::free(ptr); }

Allocator& cpu_allocator() {
  // Never destroyed: tensors in static storage may be freed after main returns.
  static auto* allocator = new CachingCpuAllocator();
  return *allocator;
}

}  // namespace loom
