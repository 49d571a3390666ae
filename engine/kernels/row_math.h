// row_math.h: small per-row helpers of the CPU kernels that walk sequences
// step by step over rows of a few dozen entries (the fused recurrences,
// feedback), and how many sequences a thread walks side by side.
// CPU only: the CUDA kernels reduce a row across a warp instead.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/vector_math.h"

namespace loom::cpu {

// Asks for the cache lines of n entries at p, ahead of their use. A recurrence's
// next step reads rows S = B·H rows further on in [L, B, H, D] (kilobytes to tens
// of kilobytes away, in another page): a stride the hardware prefetchers do not
// follow, so without this each step waits for its rows to arrive from memory.
template <class T>
inline void prefetch_row(const T* p, int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < n * static_cast<int64_t>(sizeof(T)); b += 64) __builtin_prefetch(bytes + b);
}

// The same for n entries the next step will write (dq, dk, dv of the backward):
// asking with the intent to write saves the read-for-ownership on the first store.
template <class T>
inline void prefetch_row_for_write(const T* p, int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < n * static_cast<int64_t>(sizeof(T)); b += 64) __builtin_prefetch(bytes + b, 1);
}

// How many sequences one thread walks side by side, taking step t of each
// before step t + 1 of any. A step of one sequence is a chain of dependent
// reductions (each waits on the one before), which leaves the core idle at
// small heads; the steps of other sequences are independent of it, so the
// core can overlap them, and each sequence does the same arithmetic in the
// same order as alone (the same bits). The group's states (state_bytes each)
// stay within part of L1, so that the states are not evicted by one another.
inline int64_t sequences_side_by_side(int64_t state_bytes) {
  constexpr int64_t kL1Share = 8 * 1024, kMostSequences = 4;
  const int64_t fit = kL1Share / (state_bytes > 0 ? state_bytes : 1);
  return std::clamp<int64_t>(fit, 1, kMostSequences);
}

// The states of a group's n sequences from s0, `size` entries each and
// contiguous: in `slot` (the op's final-state output, so that nothing is copied
// at the end) when there is one, else in `scratch`; set to `initial` or zeros.
template <class T>
T* group_states(T* slot, T* scratch, const T* initial, int64_t s0, int64_t n, int64_t size) {
  T* states = slot ? slot + s0 * size : scratch;
  if (initial) std::copy(initial + s0 * size, initial + (s0 + n) * size, states);
  else std::fill(states, states + n * size, T(0));
  return states;
}

// a·b over n entries.
template <class T>
T dot(const T* a, const T* b, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) acc += a[j] * b[j];
  return acc;
}

// out = softmax(x) over n entries, the maximum subtracted first (n = 0: nothing).
// out may be x. The exponentials are vmath's (engine/vector_math.h), so the loop
// vectorizes: with glibc's exp, one call per entry took most of a Delta RNN step
// at D = 32.
template <class T>
void softmax_row(const T* x, T* out, int64_t n) {
  if (n == 0) return;
  // A reduction GCC vectorizes in this form only: written with std::max (or as
  // std::max_element) it stayed one scalar max per entry, half of this
  // function's time at D = 64. The maximum is exact: the same value either way.
  T top = x[0];
#pragma omp simd reduction(max : top)
  for (int64_t j = 1; j < n; ++j) top = x[j] > top ? x[j] : top;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = vmath::exp(x[j] - top);
  // The sum in entry order, one add after another: the order the kernels have
  // always had, so their bits stay those of earlier results (a reduction in
  // vector lanes would change the last bits of every softmax).
  T total = 0;
  for (int64_t j = 0; j < n; ++j) total += out[j];
  const T inv = T(1) / total;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] *= inv;
}

}  // namespace loom::cpu
