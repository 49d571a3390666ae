// allocator.h: memory for tensors.
//
// Training allocates the same sizes every step, so freed blocks are kept in a
// cache keyed by size and handed out again; in steady state a step asks the
// system for nothing. CPU blocks are 64-byte aligned (one cache line, one AVX-512
// vector). The CUDA backend has its own allocator with the same interface.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>

namespace loom {

struct AllocatorStats {
  size_t active_bytes = 0;   // handed out and not yet freed
  size_t peak_bytes = 0;     // the most active_bytes ever was
  size_t cached_bytes = 0;   // freed, kept for reuse
  size_t system_allocations = 0;  // times we asked the system for memory
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns a block of at least `bytes`; `*capacity` receives its real size.
  virtual void* allocate(size_t bytes, size_t* capacity) = 0;
  virtual void deallocate(void* ptr, size_t capacity) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void release_cached() = 0;  // give cached blocks back to the system
};

// A size-keyed cache of freed blocks in front of a device's own allocation
// calls. A cached block serves a request when it is no more than twice the
// requested size. Devices supply the system calls and the size rounding.
class CachingAllocator : public Allocator {
 public:
  void* allocate(size_t bytes, size_t* capacity) override;
  // Runs in Storage's destructor: never throws, never calls the system.
  void deallocate(void* ptr, size_t capacity) override;
  AllocatorStats stats() const override;
  void release_cached() override;

 protected:
  virtual const char* device_label() const = 0;
  virtual size_t round_size(size_t bytes) const = 0;
  // A block of exactly `bytes`, or nullptr when the device is out of memory.
  virtual void* system_allocate(size_t bytes) = 0;
  virtual void system_free(void* ptr) = 0;

 private:
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> free_blocks_;  // capacity -> block
  AllocatorStats stats_;
};

// 64-byte aligned blocks (one cache line, one AVX-512 vector) from the C library.
class CachingCpuAllocator final : public CachingAllocator {
 public:
  ~CachingCpuAllocator() override { release_cached(); }

 protected:
  const char* device_label() const override { return "cpu"; }
  size_t round_size(size_t bytes) const override;
  void* system_allocate(size_t bytes) override;
  void system_free(void* ptr) override;
};

Allocator& cpu_allocator();

}  // namespace loom
