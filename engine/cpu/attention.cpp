// attention.cpp: CPU kernels of fused scaled dot-product attention.
//
// Work is split over (batch, head) pairs, one pair per thread at a time. A pair's
// q, k, v (and, backward, dL/dout) are first copied into contiguous [L, D]
// buffers, k and v also transposed. In place their rows lie B·H·D entries apart,
// a multiple of 4 KB at model sizes, so every row of a pair falls in the same
// few sets of L1 and L2 and the products' reuse would miss. The queries are then
// processed in blocks of kBlockRows rows:
//
//   forward   S = scale · Q_blk Kᵀ             (product on Kᵀ)
//             P = softmax(S) per row, masked keys set to 0; lse = logsumexp(S)
//             P ∘= dropout factors              (regenerated from Philox counters)
//             O_blk = P V                      (product on V)
//   backward  P = exp(scale · Q_blk Kᵀ - lse)  (rebuilt, not stored)
//             dPd = dO_blk Vᵀ;  Pd = P ∘ F;  dP = dPd ∘ F   (F: dropout factors, or 1)
//             dV += Pdᵀ dO_blk
//             dS = P ∘ (dP - rowsum(dP ∘ P))
//             dQ_blk = scale · dS K;  dK += scale · dSᵀ Q_blk
//
// Every product reads its operands in place, row-major or through strides
// (small_products.h's register tiles): its sizes (64 rows, a depth of 64 to a
// few hundred) are those where a GEMM library's packing of both operands at
// every call costs about as much as the product (engine/README.md has the
// measurements). A transposed left operand (Pᵀ, dSᵀ) costs nothing there.
//
// With the causal mask, a block of queries only reaches the keys up to its last
// row's position, so the products skip the keys no row of the block can see: for
// Lq = Lk that is close to half the work. A pair's sums run the same way whatever
// the thread count.
#include "engine/cpu/eigen.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/philox_lanes.h"
#include "engine/cpu/small_products.h"
#include "engine/kernel_clock.h"
#include "engine/kernels/row_math.h"
#include "engine/random.h"

namespace loom {

namespace {

using Args = Backend::AttentionArgs;
using cpu::Strided;

// Query rows per block: big enough for the products' tiles, small enough that
// the [rows, Lk] scratch matrices stay in cache.
constexpr int64_t kBlockRows = 64;

// The geometry shared by the forward and the backward.
struct Shape4 {
  int64_t Lq, Lk, B, H, D, Dv;
  // Keys query row i may see: all, or those up to its position Lk - Lq + i.
  int64_t visible(bool causal, int64_t i) const { return causal ? Lk - Lq + i + 1 : Lk; }
};

Shape4 shape_of(const Tensor& q, const Tensor& k, const Tensor& v) {
  return {q.size(0), k.size(0), q.size(1), q.size(2), q.size(3), v.size(3)};
}

// The rows of pair (b, h) of a [L, B, H, cols] tensor whose last axis has unit
// stride: row i at data + i·row.
template <class T>
struct PairRows {
  T* data;
  int64_t row;
  T* operator[](int64_t i) const { return data + i * row; }
};

template <class T>
PairRows<T> pair_rows(const Tensor& t, int64_t b, int64_t h) {
  const Strides& s = t.strides();
  return {t.data<T>() + b * s[1] + h * s[2], s[0]};
}

// out [L, cols] = pair (b, h) of t, row by row; the rows of pair `next` (the one
// this thread copies next, or -1) are asked for meanwhile: the tensors come from
// memory, a pair's rows a page apart.
template <class T>
void copy_pair(const Tensor& t, int64_t b, int64_t h, int64_t next, int64_t H, T* out) {
  const int64_t L = t.size(0), cols = t.size(3);
  const PairRows<T> rows = pair_rows<T>(t, b, h);
  const PairRows<T> ahead = next >= 0 ? pair_rows<T>(t, next / H, next % H) : PairRows<T>{nullptr, 0};
  for (int64_t i = 0; i < L; ++i) {
    if (ahead.data) cpu::prefetch_row(ahead[i], cols);
    std::memcpy(out + i * cols, rows[i], sizeof(T) * cols);
  }
}

// out [cols, rows] = in [rows, cols]ᵀ, in tiles of 16 × 16 that stay in L1 for
// both sides (in and out are a pair's contiguous copies).
template <class T>
void transpose(const T* in, int64_t rows, int64_t cols, T* out) {
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) out[c * rows + r] = in[r * cols + c];
    }
}

// Asks for rows [i0, i0 + n) of pair (b, h) of t with the intent to write, ahead
// of store_rows: each row is a page from the last, so each store would otherwise
// wait for its line to be read first.
template <class T>
void prefetch_rows_for_write(const Tensor& t, int64_t b, int64_t h, int64_t i0, int64_t n) {
  const PairRows<T> rows = pair_rows<T>(t, b, h);
  for (int64_t i = 0; i < n; ++i) cpu::prefetch_row_for_write(rows[i0 + i], t.size(3));
}

// Rows [i0, i0 + n) of pair (b, h) of t = in [n, cols], row by row.
template <class T>
void store_rows(const T* in, int64_t n, const Tensor& t, int64_t b, int64_t h, int64_t i0) {
  const int64_t cols = t.size(3);
  const PairRows<T> rows = pair_rows<T>(t, b, h);
  for (int64_t i = 0; i < n; ++i) std::memcpy(rows[i0 + i], in + i * cols, sizeof(T) * cols);
}

// Z [rows, cols] (row stride z_row) = alpha · A · Y, A [rows, depth] through its
// strides, Y [depth, cols] row-major with row stride y_row.
template <class T>
void product(int64_t rows, int64_t depth, int64_t cols, T alpha, Strided<T> A, const T* Y, int64_t y_row, T* Z,
             int64_t z_row) {
  cpu::small_matmul<T, /*Accumulate=*/false>(rows, depth, cols, alpha, A, Y, y_row, Z, z_row);
}

// f[j] = dropout factor of probability e0 + j (0 or 1/(1-p)), j < n. The same
// counters as in the forward, whatever the block split or thread. `words` is
// scratch for the Philox output (cpu/philox_lanes.h: most of the cost of dropout).
template <class T>
void dropout_factors(T* f, int64_t n, uint64_t e0, const Args& a, std::vector<uint32_t>& words) {
  const uint64_t first = e0 / 4, blocks = (e0 + static_cast<uint64_t>(n) + 3) / 4 - first;
  words.resize(4 * blocks);
  cpu::philox_words(words.data(), a.offset + first, blocks, a.seed);
  const uint32_t* bits = words.data() + (e0 - 4 * first);
  const double keep = 1.0 - a.dropout_p;
  const uint32_t last_kept = dropout_last_kept(keep);
  const T kept = static_cast<T>(1.0 / keep);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) f[j] = dropout_factor_32(bits[j], last_kept, kept);
}

// Flat index of probability (b, h, i, 0): the dropout counter layout.
uint64_t prob_index(const Shape4& g, int64_t b, int64_t h, int64_t i) {
  return static_cast<uint64_t>(((b * g.H + h) * g.Lq + i) * g.Lk);
}

// A row of scores x[0, n) into probabilities, in place; returns its logsumexp.
// The sum runs in double, in loops.h's fixed lanes.
template <class T>
T softmax_in_place(T* x, int64_t n) {
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> row(x, n);
  const T m = row.maxCoeff();
  row = (row - m).exp();
  const double sum = cpu::sum_of(n, [x](int64_t j) { return static_cast<double>(x[j]); });
  row *= static_cast<T>(1.0 / sum);
  return static_cast<T>(m + std::log(sum));
}

// A thread's buffers: a pair's contiguous copies (q, k, kᵀ, v, vᵀ and, backward,
// dL/dout), a block's [rows, Lk] scratch matrices and the gradients being
// summed. They live as long as the thread and only grow: allocated afresh at
// every call they cost a page fault per 4 KB touched, a tenth of the kernel's
// time at the transformers' size. Every thread's buffers start on the same
// alignment (Eigen's, 64 bytes with AVX-512), so that Eigen's vectorised exp
// splits a row the same way in every thread (its unaligned head and tail go
// through the scalar exp, whose last bits differ): the results do not depend on
// the thread count.
template <class T>
using Buffer = std::vector<T, Eigen::aligned_allocator<T>>;

template <class T>
struct Scratch {
  Buffer<T> q, k, kt, v, vt, dout;             // the pair: [Lq, D], [Lk, D], [D, Lk], [Lk, Dv], [Dv, Lk], [Lq, Dv]
  Buffer<T> probs, grads, dropped, block_out;  // a block: P, dP, P ∘ F [rows, Lk]; O or dQ [rows, D or Dv]
  Buffer<T> dk, dv;                            // the pair's dK [Lk, D], dV [Lk, Dv]
  Buffer<T> factors;                           // a row's dropout factors [Lk]
  std::vector<uint32_t> words;                 // their Philox words

  // Sizes the buffers for one call of the forward or the backward.
  void size_for(const Shape4& s, bool backward, bool dropout) {
    const int64_t block = std::min(s.Lq, kBlockRows);
    q.resize(s.Lq * s.D);
    k.resize(s.Lk * s.D);
    kt.resize(s.D * s.Lk);
    v.resize(s.Lk * s.Dv);
    probs.resize(block * s.Lk);
    block_out.resize(block * std::max(s.D, s.Dv));
    factors.resize(dropout ? s.Lk : 0);
    if (!backward) return;
    vt.resize(s.Dv * s.Lk);
    dout.resize(s.Lq * s.Dv);
    grads.resize(block * s.Lk);
    dropped.resize(dropout ? block * s.Lk : 0);
    dk.resize(s.Lk * s.D);
    dv.resize(s.Lk * s.Dv);
  }

  // Pair (b, h)'s q, k, kᵀ and v (and vᵀ for the backward) into the buffers;
  // `next` is the pair this thread copies next (-1: none), asked for meanwhile.
  void load_pair(const Tensor& tq, const Tensor& tk, const Tensor& tv, const Shape4& s, int64_t b, int64_t h,
                 int64_t next, bool backward) {
    copy_pair<T>(tq, b, h, next, s.H, q.data());
    copy_pair<T>(tk, b, h, next, s.H, k.data());
    transpose(k.data(), s.Lk, s.D, kt.data());
    copy_pair<T>(tv, b, h, next, s.H, v.data());
    if (backward) transpose(v.data(), s.Lk, s.Dv, vt.data());
  }
};

template <class T>
Scratch<T>& thread_scratch() {
  thread_local Scratch<T> scratch;
  return scratch;
}

template <class T>
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Args& a, const Tensor& out,
                       const Tensor& lse) {
  const Shape4 g = shape_of(q, k, v);
  const bool dropout = a.dropout_p > 0;
  const T scale = static_cast<T>(a.scale);
  T* lse_data = lse.data<T>();
  const int64_t cost = g.Lq * g.Lk * (g.D + g.Dv + 4);
  cpu::parallel_for(g.B * g.H, cost, [&](int64_t p0, int64_t p1) {
    Scratch<T>& buf = thread_scratch<T>();
    buf.size_for(g, /*backward=*/false, dropout);
    T* S = buf.probs.data();  // scores, then probabilities
    for (int64_t pair = p0; pair < p1; ++pair) {
      const int64_t b = pair / g.H, h = pair % g.H;
      buf.load_pair(q, k, v, g, b, h, pair + 1 < p1 ? pair + 1 : -1, /*backward=*/false);
      T* lse_row = lse_data + pair * g.Lq;
      for (int64_t i0 = 0; i0 < g.Lq; i0 += kBlockRows) {
        const int64_t rows = std::min(kBlockRows, g.Lq - i0);
        const int64_t keys = g.visible(a.causal, i0 + rows - 1);  // the block's last row sees the most
        prefetch_rows_for_write<T>(out, b, h, i0, rows);
        product<T>(rows, g.D, keys, scale, {buf.q.data() + i0 * g.D, g.D, 1}, buf.kt.data(), g.Lk, S, g.Lk);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r, n = g.visible(a.causal, i);
          T* x = S + r * g.Lk;
          lse_row[i] = softmax_in_place(x, n);
          std::fill(x + n, x + keys, T(0));  // masked keys
          if (dropout) {
            dropout_factors(buf.factors.data(), n, prob_index(g, b, h, i), a, buf.words);
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) x[j] *= buf.factors[j];
          }
        }
        product<T>(rows, keys, g.Dv, T(1), {S, g.Lk, 1}, buf.v.data(), g.Dv, buf.block_out.data(), g.Dv);
        store_rows<T>(buf.block_out.data(), rows, out, b, h, i0);
      }
    }
  });
}

template <class T>
void attention_backward_typed(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& lse, const Args& a, const Tensor& grad_q, const Tensor& grad_k,
                              const Tensor& grad_v) {
  const Shape4 g = shape_of(q, k, v);
  const bool dropout = a.dropout_p > 0;
  const T* lse_data = lse.data<T>();
  const T scale = static_cast<T>(a.scale);
  const int64_t cost = g.Lq * g.Lk * (2 * g.D + 2 * g.Dv + 8);
  cpu::parallel_for(g.B * g.H, cost, [&](int64_t p0, int64_t p1) {
    Scratch<T>& buf = thread_scratch<T>();
    buf.size_for(g, /*backward=*/true, dropout);
    T* P = buf.probs.data();
    T* dP = buf.grads.data();
    T* Pd = buf.dropped.data();
    for (int64_t pair = p0; pair < p1; ++pair) {
      const int64_t b = pair / g.H, h = pair % g.H;
      const int64_t next = pair + 1 < p1 ? pair + 1 : -1;
      buf.load_pair(q, k, v, g, b, h, next, /*backward=*/true);
      copy_pair<T>(grad_out, b, h, next, g.H, buf.dout.data());
      std::fill(buf.dk.begin(), buf.dk.end(), T(0));
      std::fill(buf.dv.begin(), buf.dv.end(), T(0));
      const T* lse_row = lse_data + pair * g.Lq;
      for (int64_t i0 = 0; i0 < g.Lq; i0 += kBlockRows) {
        const int64_t rows = std::min(kBlockRows, g.Lq - i0);
        const int64_t keys = g.visible(a.causal, i0 + rows - 1);
        prefetch_rows_for_write<T>(grad_q, b, h, i0, rows);
        if (i0 + kBlockRows >= g.Lq) {  // the last block: dK and dV are stored after it
          prefetch_rows_for_write<T>(grad_k, b, h, 0, g.Lk);
          prefetch_rows_for_write<T>(grad_v, b, h, 0, g.Lk);
        }
        const T* Qb = buf.q.data() + i0 * g.D;
        const T* dOb = buf.dout.data() + i0 * g.Dv;
        product<T>(rows, g.D, keys, scale, {Qb, g.D, 1}, buf.kt.data(), g.Lk, P, g.Lk);
        product<T>(rows, g.Dv, keys, T(1), {dOb, g.Dv, 1}, buf.vt.data(), g.Lk, dP, g.Lk);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r, n = g.visible(a.causal, i);
          T* p = P + r * g.Lk;
          T* dp = dP + r * g.Lk;
          const T shift = lse_row[i];
          Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> p_row(p, n);
          p_row = (p_row - shift).exp();
          std::fill(p + n, p + keys, T(0));
          if (dropout) {
            dropout_factors(buf.factors.data(), n, prob_index(g, b, h, i), a, buf.words);
            T* pd = Pd + r * g.Lk;
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) {
              pd[j] = p[j] * buf.factors[j];
              dp[j] *= buf.factors[j];
            }
            std::fill(pd + n, pd + keys, T(0));
          }
          // dS = P ∘ (dP - sum_j dP_j P_j); masked entries have P = 0, so dS = 0 there.
          const T d = static_cast<T>(
              cpu::sum_of(n, [dp, p](int64_t j) { return static_cast<double>(dp[j]) * p[j]; }));
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - d);
          std::fill(dp + n, dp + keys, T(0));
        }
        const T* probs = dropout ? Pd : P;
        // dV[:keys] += Pdᵀ dO_blk; dK[:keys] += scale · dSᵀ Q_blk.
        cpu::small_matmul<T>(keys, rows, g.Dv, T(1), {probs, 1, g.Lk}, dOb, g.Dv, buf.dv.data(), g.Dv);
        cpu::small_matmul<T>(keys, rows, g.D, scale, {dP, 1, g.Lk}, Qb, g.D, buf.dk.data(), g.D);
        // dQ_blk = scale · dS K.
        product<T>(rows, keys, g.D, scale, {dP, g.Lk, 1}, buf.k.data(), g.D, buf.block_out.data(), g.D);
        store_rows<T>(buf.block_out.data(), rows, grad_q, b, h, i0);
      }
      store_rows<T>(buf.dk.data(), g.Lk, grad_k, b, h, 0);
      store_rows<T>(buf.dv.data(), g.Lk, grad_v, b, h, 0);
    }
  });
}

}  // namespace

void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args,
                           const Tensor& out, const Tensor& lse) {
  const TimedKernel timed(KernelKind::attention);
  dispatch_float(q.dtype(), "attention", [&](auto zero) {
    using T = decltype(zero);
    attention_forward<T>(q, k, v, args, out, lse);
  });
}

void CpuBackend::attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& lse, const AttentionArgs& args, const Tensor& grad_q,
                                    const Tensor& grad_k, const Tensor& grad_v) {
  const TimedKernel timed(KernelKind::attention);
  dispatch_float(q.dtype(), "attention_backward", [&](auto zero) {
    using T = decltype(zero);
    attention_backward_typed<T>(grad_out, q, k, v, lse, args, grad_q, grad_k, grad_v);
  });
}

}  // namespace loom
