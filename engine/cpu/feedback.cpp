// feedback.cpp: CPU kernels of feedback_attention, one step of attention of a
// query over the feedback memory with relative-position terms:
//   score_j = scale · ((q + u)·k_j + q·P[r0+j] + s[r0+j]),  r0 = R − n
//   out     = Σ_j α_j v_j,  α = softmax(score)
//
// Loop order: keys and values are [n, B, H, D], so the rows of one (b, h) lie a
// whole [B, H, D] slab apart (a new page per slot). Both kernels therefore walk
// the memory slot j outermost and the (b, h) rows inside it, which reads each
// slot's rows in the order they lie in memory; the per-(b, h) state (q + u, the
// scores or the dq accumulator) lives in a per-thread scratch that stays in cache.
//
// Forward: pass 1 computes the scores [n][rows] (keys and P), then the softmax is
// vectorised over the whole scratch, then pass 2 sums the values. Only the
// log-sum-exp per (b, h) is kept for the backward.
//
// Backward, with do the output's gradient, delta = do·out = Σ_j α_j (do·v_j):
//   ds_j   = scale · α_j · (do·v_j − delta)     (the softmax backward, times scale)
//   dq     = Σ_j ds_j (k_j + P[r0+j])           du   = Σ_b Σ_j ds_j k_j
//   dk_j  += ds_j (q + u)                       dv_j += α_j do
//   dP[r0+j] += Σ_b ds_j q                      ds[r0+j] += Σ_b ds_j
// One pass over j recomputes α_j from the saved log-sum-exp and produces the
// gradients of the rows (dq, dk_j, dv_j, and du per row), reading each k_j, v_j and
// P row once; threads split the batch. dP, ds and du are shared by the batch, so a
// second, small pass sums them per head from the ds_j the first pass kept.
// Read through a FeedbackMemory, the backward files ds_j and α_j instead of adding
// dk_j and dv_j (key_weights, value_weights), and memory_gradient adds the filed
// reads of one step into the memory's gradient buffer together (engine/ops/feedback.cpp).
#include "engine/cpu/eigen.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_clock.h"
#include "engine/cpu/loops.h"
#include "engine/kernels/feedback.h"
#include "engine/kernels/row_math.h"

namespace loom {

using cpu::dot;
using cpu::parallel_for;

namespace {

using feedback::Inputs;
using feedback::inputs_of;
using feedback::Grads;

// score_j with qu = q + u precomputed.
template <class T>
T score(const Inputs<T>& a, int64_t j, int64_t b, int64_t h, const T* qu) {
  const T* qb = a.q_row(b, h);
  const T* kj = a.k.at(j, b, h);
  const T* pj = a.P_row(j, h);
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < a.D; ++d) acc += qu[d] * kj[d] + qb[d] * pj[d];
  return a.scale * (acc + a.s_at(j, h));
}

template <class T>
void query_plus_bias(const Inputs<T>& a, int64_t b, int64_t h, T* qu) {
  const T* qb = a.q_row(b, h);
  const T* uh = a.u + h * a.D;
  for (int64_t d = 0; d < a.D; ++d) qu[d] = qb[d] + uh[d];
}

// y += alpha * x
template <class T>
void axpy(T alpha, const T* x, T* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// A per-thread scratch buffer, grown as needed and kept: no allocation per call in
// steady state. Buffers of one call that are used together need distinct slots (a
// float64 kernel's T scratch and its double sums would otherwise be the same buffer).
// The buffer starts on a 64-byte boundary (see the forward's exp for why).
template <class T, int Slot = 0>
T* scratch(size_t size) {
  thread_local std::vector<T, Eigen::aligned_allocator<T>> buffer;
  if (buffer.size() < size) buffer.resize(size);
  return buffer.data();
}

template <class T>
void forward(const Inputs<T>& a, T* out, T* lse) {
  const int64_t n = a.n, B = a.B, H = a.H, D = a.D, Dv = a.Dv;
  // Rows i = b·H + h, split over threads. Memory slot j outermost: each step of j reads
  // the chunk's rows of keys (then values) in the order they lie in memory; looping j
  // innermost instead would jump a whole [B, H, D] slab per slot.
  parallel_for(B * H, n * (2 * D + Dv + 4), [&](int64_t i0, int64_t i1) {
    const int64_t m = i1 - i0;
    // scores [n][m] (padded to whole 64-byte packets), then qu [m][D], then per
    // row: max, 1 / sum. Eigen's vectorised exp computes leading unaligned and
    // trailing partial-packet elements on its scalar path, whose last bit differs;
    // an aligned, whole-packet buffer sends every score through the same path, so
    // a row's numbers do not depend on how many rows its thread got.
    constexpr int64_t kPacket = 64 / static_cast<int64_t>(sizeof(T));
    const int64_t padded = (n * m + kPacket - 1) / kPacket * kPacket;
    T* sc = scratch<T>(static_cast<size_t>(padded + m * (D + 2)));
    T* qu = sc + padded;
    T* mx = qu + m * D;
    T* inv = mx + m;
    for (int64_t i = i0; i < i1; ++i) {
      query_plus_bias(a, i / H, i % H, qu + (i - i0) * D);
      mx[i - i0] = -std::numeric_limits<T>::infinity();
    }
    for (int64_t j = 0; j < n; ++j) {
      T* row = sc + j * m;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t k = i - i0;
        row[k] = score(a, j, i / H, i % H, qu + k * D);
        mx[k] = row[k] > mx[k] ? row[k] : mx[k];
      }
    }
    // exp(score − max) through Eigen's vectorised exp; the sums in double (as the
    // softmax kernel does). Every loop here runs along the rows: contiguous, vectorised.
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < m; ++k) sc[j * m + k] -= mx[k];
    for (int64_t p = n * m; p < padded; ++p) sc[p] = 0;
    Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::AlignedMax> e(sc, padded);
    e = e.exp();
    double* sums = scratch<double, 1>(static_cast<size_t>(m));
    for (int64_t k = 0; k < m; ++k) sums[k] = 0.0;
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < m; ++k) sums[k] += sc[j * m + k];
    for (int64_t k = 0; k < m; ++k) {
      inv[k] = static_cast<T>(1.0 / sums[k]);
      lse[i0 + k] = static_cast<T>(static_cast<double>(mx[k]) + std::log(sums[k]));
    }
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t d = 0; d < Dv; ++d) out[i * Dv + d] = 0;
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t k = i - i0;
        axpy(sc[j * m + k] * inv[k], a.v.at(j, i / H, i % H), out + i * Dv, Dv);
      }
  });
}

// Gradient outputs; null pointers are not wanted.
//
// Threads split the rows i = b·H + h, as the forward does, so each streams one
// contiguous run of every memory slot (split by heads instead, a thread read
// every other kilobyte, and two threads took as long as one). dq and u's
// gradient are sums over j per row, kept per row. The gradients that P, s and u
// share across the batch are summed afterwards, in an order that does not
// depend on the threads: dP and ds per head from the ds_j the first pass kept
// (one running sum over j, then b), du per head over b.
template <class T>
void backward(const Inputs<T>& a, const T* grad_out, const T* out, const T* lse, const Grads<T>& g) {
  const int64_t n = a.n, B = a.B, H = a.H, D = a.D, Dv = a.Dv, R = a.R;
  // ds_j of every row, [n, B, H]: the filed key weights when the caller wants them.
  // In the calling thread's scratch slots 2 and 3: it is also a worker of the
  // region below, which uses slot 0.
  T* ds_all = g.k_weights;
  if (!ds_all && (g.P || g.s)) ds_all = scratch<T, 2>(static_cast<size_t>(n * B * H));
  // du per row [B·H][D], summed over b below.
  T* du_rows = g.u ? scratch<T, 3>(static_cast<size_t>(B * H * D)) : nullptr;
  parallel_for(B * H, n * (6 * D + 3 * Dv), [&](int64_t i0, int64_t i1) {
    const int64_t m = i1 - i0;
    // qu [m][D], dq [m][D], delta [m], then α and ds of one (j, b) for each head
    T* qu = scratch<T>(static_cast<size_t>(m * (2 * D + 1) + 2 * H));
    T* dq = qu + m * D;
    T* delta = dq + m * D;
    T* alphas = delta + m;
    T* dss = alphas + H;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t k = i - i0;
      query_plus_bias(a, i / H, i % H, qu + k * D);
      delta[k] = dot(grad_out + i * Dv, out + i * Dv, Dv);
      for (int64_t d = 0; d < D; ++d) dq[k * D + d] = 0;
      if (du_rows)
        for (int64_t d = 0; d < D; ++d) du_rows[i * D + d] = 0;
    }
    for (int64_t j = 0; j < n; ++j)
      for (int64_t b = i0 / H; b * H < i1; ++b) {
        // α_j and ds_j of the item's heads in the thread's rows first, then their adds:
        // the heads' chains (a dot, an exp, a dot) are independent, and apart they can
        // overlap.
        const int64_t h0 = std::max(i0 - b * H, int64_t{0}), h1 = std::min(i1 - b * H, H);
        for (int64_t h = h0; h < h1; ++h) {
          const int64_t i = b * H + h, k = i - i0;
          const T alpha = std::exp(score(a, j, b, h, qu + k * D) - lse[i]);
          alphas[h] = alpha;
          dss[h] = a.scale * alpha * (dot(grad_out + i * Dv, a.v.at(j, b, h), Dv) - delta[k]);
        }
        for (int64_t h = h0; h < h1; ++h) {
          const int64_t i = b * H + h, k = i - i0, ji = j * B * H + i;
          const T* kj = a.k.at(j, b, h);
          const T alpha = alphas[h], ds = dss[h];
          if (g.q) {
            const T* pj = a.P_row(j, h);
            T* dqk = dq + k * D;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) dqk[d] += ds * (kj[d] + pj[d]);
          }
          if (du_rows) axpy(ds, kj, du_rows + i * D, D);
          if (g.k) axpy(ds, qu + k * D, g.k + ji * D, D);
          if (ds_all) ds_all[ji] = ds;
          if (g.v) axpy(alpha, grad_out + i * Dv, g.v + ji * Dv, Dv);
          if (g.v_weights) g.v_weights[ji] = alpha;
        }
      }
    if (g.q)
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t d = 0; d < D; ++d) g.q[i * D + d] = dq[(i - i0) * D + d];
  });
  // The batch's shared gradients, a head per thread.
  if (!g.P && !g.s && !g.u) return;
  parallel_for(H, n * B * 2 * D, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      if (g.P || g.s)
        for (int64_t j = 0; j < n; ++j) {
          const int64_t r = R - n + j;
          for (int64_t b = 0; b < B; ++b) {
            const T ds = ds_all[(j * B + b) * H + h];
            if (g.P) axpy(ds, a.q_row(b, h), g.P + (r * H + h) * D, D);
            if (g.s) g.s[r * H + h] += ds;
          }
        }
      if (g.u)
        for (int64_t b = 0; b < B; ++b)
          for (int64_t d = 0; d < D; ++d) g.u[h * D + d] += du_rows[(b * H + h) * D + d];
    }
  });
}

// grads[j, i] += Σ_p weights[p, j, i] rows[p, i] for j < n and every row i = b·H + h,
// p in order through the same axpy the backward uses: each (j, i) row of the buffer
// is read and written once for all the reads instead of once per read, and its sums
// are the ones the backward's direct adds would make. Rows are independent, so
// threads split them freely.
template <class T>
void memory_gradient(const FeedbackMemoryGradientArgs& a) {
  const int64_t capacity = a.grads.size(0), BH = a.grads.size(1), D = a.grads.size(2);
  T* grads = a.grads.data<T>();
  const T* weights = a.weights.data<T>();
  const T* rows = a.rows.data<T>();
  const int64_t count = a.count;
  parallel_for(a.n * BH, count * 2 * D, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t j = e / BH, i = e % BH;
      T* dst = grads + e * D;
      for (int64_t p = 0; p < count; ++p) axpy(weights[(p * capacity + j) * BH + i], rows + (p * BH + i) * D, dst, D);
    }
  });
}

}  // namespace

void CpuBackend::feedback_attention(const FeedbackAttentionArgs& a) {
  const TimedKernel timed(KernelKind::attention);
  dispatch_float(a.q.dtype(), "feedback_attention", [&](auto zero) {
    using T = decltype(zero);
    forward<T>(inputs_of<T>(a), a.out.data<T>(), a.lse.data<T>());
  });
}

void CpuBackend::feedback_attention_backward(const FeedbackAttentionBackwardArgs& a) {
  const TimedKernel timed(KernelKind::attention);
  dispatch_float(a.q.dtype(), "feedback_attention_backward", [&](auto zero) {
    using T = decltype(zero);
    backward<T>(inputs_of<T>(a), a.grad_out.data<T>(), a.out.data<T>(), a.lse.data<T>(), feedback::grads_of<T>(a));
  });
}

void CpuBackend::feedback_memory_gradient(const FeedbackMemoryGradientArgs& a) {
  const TimedKernel timed(KernelKind::attention);
  dispatch_float(a.grads.dtype(), "feedback_memory_gradient", [&](auto zero) { memory_gradient<decltype(zero)>(a); });
}

}  // namespace loom
