// delta_rows.h: the delta-rule step on the CPU, a block of rows of the fast
// weight at a time; the step of delta_rule, delta_rnn and delta_lstm (the math
// and its derivation are in engine/kernels/delta_rule.h, kernels::delta_step).
//
// A step sweeps the rows of W [Dv, Dk] in blocks of 8 that share each load of
// k_t and q_t: two passes over a block (vbar, then write and read out) while it
// is in L1. Each row of a block keeps its partial sums in one vector register
// (type Vec below: 16 floats with AVX-512, 8 with AVX2, 4 with SSE), so a block
// has 8 independent accumulators; in the backward, the partial sums of dq_t and
// dk_t (columns, summed over the rows) are one more register each. At the end
// of a pass the block's 8 rows have their lanes summed together (sum_rows).
// (The timings that chose this layout are in engine/README.md.)
//
// CPU only: the CUDA kernels give each row of W to threads of a block instead.
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>

#include "engine/kernels/delta_rule.h"

namespace loom::cpu {

namespace step = kernels::delta_step;

// One vector register of T, written with the GCC/Clang vector extension: the
// compiler keeps each accumulator in a register, where [R][lanes] arrays were
// kept in stack slots and stored back each iteration. The width is the target's
// register: 64 bytes with AVX-512, 32 with AVX2 (64-byte vectors there take two
// registers each, 8 rows of them spill: compiled for Zen 3 and run here, the
// kernels ran twice as slow as the former loops), 16 otherwise.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

// Vector registers the target has: 32 with AVX-512, 16 with AVX2 and SSE on
// x86-64. Register tiles (small_products.h) are sized to fit them: a tile of 16
// accumulators with its operands spills on AVX2.
#if defined(__AVX512F__)
constexpr int kVectorRegisters = 32;
#else
constexpr int kVectorRegisters = 16;
#endif

template <class T, int Bytes = kVectorBytes>
struct VecOf {
  typedef T type __attribute__((vector_size(Bytes)));
};
template <class T>
using Vec = typename VecOf<T>::type;

template <class T>
constexpr int64_t kLanes = sizeof(Vec<T>) / sizeof(T);

// Rows of W handled together (8 vectors of partial sums in flight) in the
// backward step.
constexpr int kRows = 8;

// Rows handled together in the forward step and dot_all_rows: 8 with AVX-512's
// 32 registers; 4 with 16, where a block's 8 accumulators, its rows' scalars and
// the vectors of k and q did not fit (engine/README.md: on a Zen 3, forward
// kernels 1.18–1.22× faster). A row of whole vectors has its sums run the same
// way in either; a row with a scalar tail (Dk not a multiple of the lanes) can
// differ in its last bits, since the tail's multiply-adds compile differently per
// block size (the targets' lanes differ anyway). The backward keeps 8: 4 showed
// no clear gain, and its dbeta adds the rows' shares block by block.
constexpr int kForwardRows = kVectorRegisters >= 32 ? 8 : 4;

template <class T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class T>
inline void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof v);
}

// The sum of N lanes as a tree: add the two halves, then the halves of that
// (log2 N vector adds; a chain of N dependent scalar adds per row was a large
// part of each block's time, more so the shorter the rows).
template <class T, int N>
inline T tree_sum(const T* lanes) {
  if constexpr (N == 1) {
    return lanes[0];
  } else {
    using Half = typename VecOf<T, N / 2 * sizeof(T)>::type;
    Half lo, hi;
    std::memcpy(&lo, lanes, sizeof lo);
    std::memcpy(&hi, lanes + N / 2, sizeof hi);
    const Half sum = lo + hi;
    T halves[N / 2];
    std::memcpy(halves, &sum, sizeof sum);
    return tree_sum<T, N / 2>(halves);
  }
}

template <class T>
inline T sum_lanes(const Vec<T>& v) {
  T lanes[kLanes<T>];
  std::memcpy(lanes, &v, sizeof v);
  return tree_sum<T, kLanes<T>>(lanes);
}

// The sums of R rows' accumulators at once: out[r] = sum_lanes(acc[r]), with the
// same pairs added in the same order (lane j with j + N/2, then with j + N/4, …),
// so the same bits. Each level adds the halves of two rows' partials in one
// vector: two shuffles and one add serve both rows, where sum_lanes spends a
// chain of half-width adds on each row alone.
//
// A vector at P partials per row holds V / P rows, each row's P partials together.
// Combining x and y (each with the partials of V / P rows) gives 2V / P rows of
// P / 2 partials: x's rows in the low half, y's in the high half.
template <int V, int P, bool High>
constexpr int combine_index(int lane) {
  const int half = V / 2, from_y = lane >= half ? V : 0, o = lane % half;
  return from_y + (o / (P / 2)) * P + o % (P / 2) + (High ? P / 2 : 0);
}

template <class T, int P, int... Lane>
inline Vec<T> combine(const Vec<T>& x, const Vec<T>& y, std::integer_sequence<int, Lane...>) {
  constexpr int V = static_cast<int>(kLanes<T>);
  return __builtin_shufflevector(x, y, combine_index<V, P, false>(Lane)...) +
         __builtin_shufflevector(x, y, combine_index<V, P, true>(Lane)...);
}

// Reduces n vectors at P partials per row, in place, until one partial per row is left.
template <class T, int P>
inline void reduce_rows(Vec<T>* vecs, int n) {
  constexpr int V = static_cast<int>(kLanes<T>);
  if constexpr (P > 1) {
    const auto lanes = std::make_integer_sequence<int, V>{};
    if (n == 1) {
      vecs[0] = combine<T, P>(vecs[0], vecs[0], lanes);  // the high half repeats the low one
    } else {
      for (int i = 0; i < n / 2; ++i) vecs[i] = combine<T, P>(vecs[2 * i], vecs[2 * i + 1], lanes);
      n /= 2;
    }
    reduce_rows<T, P / 2>(vecs, n);
  }
}

// The accumulators are reduced where they are (acc is left holding partial
// sums): a copy of the array first went through memory in 32-byte halves, and
// reading them back as 64-byte vectors stalled each block on store forwarding.
template <class T, int R>
inline void sum_rows(Vec<T> (&acc)[R], T* out) {
  constexpr int V = static_cast<int>(kLanes<T>);
  static_assert((R & (R - 1)) == 0, "sum_rows pairs rows: R must be a power of two");
  reduce_rows<T, V>(acc, R);
  // Row r's sum now sits in lane r % V of vector r / V (rows per vector: V, or R if fewer).
  for (int r = 0; r < R; ++r) out[r] = acc[r / V][r % V];
}

// out[r] = the sum of acc[r]'s lanes; acc is consumed.
template <class T, int R>
inline void sum_each(Vec<T> (&acc)[R], T* out) {
  if constexpr (R == 1) out[0] = sum_lanes<T>(acc[0]);
  else sum_rows<T, R>(acc, out);
}

// out[r] = w[r]·x for R rows (Row: T* or const T*).
template <class T, int R, class Row>
void dot_rows(const Row (&w)[R], const T* x, int64_t n, T* out) {
  constexpr int64_t V = kLanes<T>;
  Vec<T> acc[R] = {};
  int64_t j = 0;
  for (; j + V <= n; j += V) {
    const Vec<T> xv = load(x + j);
    for (int r = 0; r < R; ++r) acc[r] += load(w[r] + j) * xv;
  }
  for (; j < n; ++j)
    for (int r = 0; r < R; ++r) acc[r][0] += w[r][j] * x[j];
  sum_each<T, R>(acc, out);
}

// One step for rows [i, i+R) of W: vbar = W k, u = beta (v - vbar) (or v),
// W += u kᵀ, y = W q.
template <class T, int R>
void forward_rows(T* W, int64_t i, const T* qt, const T* kt, const T* vt, T b, bool delta, T* yt, T* vbt,
                  int64_t Dk) {
  constexpr int64_t V = kLanes<T>;
  T* w[R];
  T u[R];
  for (int r = 0; r < R; ++r) {
    w[r] = W + (i + r) * Dk;
    u[r] = vt[i + r];
  }
  if (delta) {
    T vb[R];
    dot_rows<T, R>(w, kt, Dk, vb);
    for (int r = 0; r < R; ++r) {
      if (vbt) vbt[i + r] = vb[r];
      u[r] = step::write_strength(b, vt[i + r], vb[r]);
    }
  }
  Vec<T> acc[R] = {};
  int64_t j = 0;
  for (; j + V <= Dk; j += V) {
    const Vec<T> kv = load(kt + j), qv = load(qt + j);
    for (int r = 0; r < R; ++r) {
      const Vec<T> wn = step::write(load(w[r] + j), u[r], kv);
      store(w[r] + j, wn);
      acc[r] += wn * qv;
    }
  }
  for (; j < Dk; ++j)
    for (int r = 0; r < R; ++r) {
      w[r][j] = step::write(w[r][j], u[r], kt[j]);
      acc[r][0] += w[r][j] * qt[j];
    }
  sum_each<T, R>(acc, yt + i);
}

// One forward step over all Dv rows of W [Dv, Dk] (blocks of kForwardRows, then single
// rows): vbar = W k, u = beta (v - vbar) (or v for the sum rule), W += u kᵀ,
// y = W q. vbt may be null.
template <class T>
void forward_step(T* W, const T* qt, const T* kt, const T* vt, T b, bool delta, T* yt, T* vbt, int64_t Dk,
                  int64_t Dv) {
  int64_t i = 0;
  for (; i + kForwardRows <= Dv; i += kForwardRows)
    forward_rows<T, kForwardRows>(W, i, qt, kt, vt, b, delta, yt, vbt, Dk);
  for (; i < Dv; ++i) forward_rows<T, 1>(W, i, qt, kt, vt, b, delta, yt, vbt, Dk);
}

// out[i] = W[i]·x for the `rows` rows of W [rows, n], in blocks of kForwardRows.
template <class T>
void dot_all_rows(const T* W, const T* x, int64_t rows, int64_t n, T* out) {
  int64_t i = 0;
  for (; i + kForwardRows <= rows; i += kForwardRows) {
    const T* w[kForwardRows];
    for (int r = 0; r < kForwardRows; ++r) w[r] = W + (i + r) * n;
    dot_rows<T, kForwardRows>(w, x, n, out + i);
  }
  for (; i < rows; ++i) {
    const T* const w[1] = {W + i * n};
    dot_rows<T, 1>(w, x, n, out + i);
  }
}

// One reverse step for rows [i, i+R) of W (= W_t on entry, W_{t-1} on return) and
// G (= dL/dW_t without this step's readout on entry, dL/dW_{t-1} on return).
// Accumulates into dq, dk; writes dv[i..i+R) and returns this block's share of dbeta.
template <class T, int R, bool Delta>
T backward_rows(T* W, T* G, int64_t i, const T* qt, const T* kt, const T* vt, const T* gt, const T* vbt, T b, T* dq,
                T* dk, T* dv, int64_t Dk) {
  constexpr int64_t V = kLanes<T>;
  T* w[R];
  T* g[R];
  T gi[R];
  for (int r = 0; r < R; ++r) {
    w[r] = W + (i + r) * Dk;
    g[r] = G + (i + r) * Dk;
    gi[r] = gt[i + r];
  }
  // G += ĝ qᵀ;  dq += W_tᵀ ĝ;  du = G k.
  Vec<T> acc[R] = {};
  int64_t j = 0;
  for (; j + V <= Dk; j += V) {
    const Vec<T> qv = load(qt + j), kv = load(kt + j);
    Vec<T> dqv = load(dq + j);
    for (int r = 0; r < R; ++r) {
      const Vec<T> gn = load(g[r] + j) + gi[r] * qv;
      store(g[r] + j, gn);
      dqv += gi[r] * load(w[r] + j);
      acc[r] += gn * kv;
    }
    store(dq + j, dqv);
  }
  for (; j < Dk; ++j)
    for (int r = 0; r < R; ++r) {
      g[r][j] += gi[r] * qt[j];
      dq[j] += gi[r] * w[r][j];
      acc[r][0] += g[r][j] * kt[j];
    }
  T du[R];
  sum_each<T, R>(acc, du);

  T u[R], c[R], dbeta = 0;
  for (int r = 0; r < R; ++r) {
    if (Delta) {
      const step::RowGrads<T> rg = step::row_backward(b, vt[i + r], vbt[i + r], du[r]);
      u[r] = rg.u;
      c[r] = rg.dvbar;
      dv[i + r] = rg.dv;
      dbeta += rg.dbeta;
    } else {
      u[r] = vt[i + r];
      c[r] = 0;
      dv[i + r] = du[r];
    }
  }
  // dk += Gᵀ u (the write);  W -= u kᵀ;  dk += W_{t-1}ᵀ c (the read);  G += c kᵀ.
  j = 0;
  for (; j + V <= Dk; j += V) {
    const Vec<T> kv = load(kt + j);
    Vec<T> dkv = load(dk + j);
    for (int r = 0; r < R; ++r) {
      Vec<T> wv = load(w[r] + j), gv = load(g[r] + j);
      if (Delta) {
        step::unwrite(u[r], c[r], kv, wv, gv, dkv);
        store(g[r] + j, gv);
      } else {
        step::unwrite_sum(u[r], kv, wv, gv, dkv);
      }
      store(w[r] + j, wv);
    }
    store(dk + j, dkv);
  }
  for (; j < Dk; ++j)
    for (int r = 0; r < R; ++r) {
      if (Delta) step::unwrite(u[r], c[r], kt[j], w[r][j], g[r][j], dk[j]);
      else step::unwrite_sum(u[r], kt[j], w[r][j], g[r][j], dk[j]);
    }
  return dbeta;
}

// One reverse step over all rows (blocks of kRows, then single rows); returns dbeta_t.
// With `reverse` the rows go from the last up. A backward that alternates the
// direction step by step starts each sweep on the rows the previous one left in
// L1: W and G together (64 KB at labml's fast-weights size) do not fit there, and
// a sweep in the same direction would find each row evicted. The column sums dq,
// dk and dbeta then add the rows in the other order: other last bits.
template <class T, bool Delta>
T backward_step(T* W, T* G, const T* qt, const T* kt, const T* vt, const T* gt, const T* vbt, T b, T* dq, T* dk,
                T* dv, int64_t Dk, int64_t Dv, bool reverse = false) {
  T dbeta = 0;
  const int64_t blocks = Dv / kRows;
  if (reverse) {
    for (int64_t i = Dv - 1; i >= blocks * kRows; --i)
      dbeta += backward_rows<T, 1, Delta>(W, G, i, qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk);
    for (int64_t blk = blocks - 1; blk >= 0; --blk)
      dbeta += backward_rows<T, kRows, Delta>(W, G, blk * kRows, qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk);
    return dbeta;
  }
  int64_t i = 0;
  for (; i + kRows <= Dv; i += kRows)
    dbeta += backward_rows<T, kRows, Delta>(W, G, i, qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk);
  for (; i < Dv; ++i) dbeta += backward_rows<T, 1, Delta>(W, G, i, qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk);
  return dbeta;
}

}  // namespace loom::cpu
