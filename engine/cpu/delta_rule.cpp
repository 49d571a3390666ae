// delta_rule.cpp: CPU kernels of the fast-weight recurrence (delta and sum
// rule); the math, layout and derivation are in engine/kernels/delta_rule.h,
// the chunked form in its section "In chunks".
//
// Each sequence is one task (OpenMP over S), walked in one of two ways, chosen
// by the head's size (in_chunks):
// - step by step (heads below 64 × 64): W [Dv, Dk] in a private buffer, one
//   step at a time, a block of rows of W at a time in vector registers
//   (engine/cpu/delta_rows.h, the step the Delta RNN, Delta LSTM and RDN use
//   too, since their next key depends on this step's output); a thread walks
//   a few small heads' sequences side by side (sequences_side_by_side,
//   engine/kernels/row_math.h);
// - 16 steps at a time (heads of 64 × 64 and more): a chunk's rows of q, k, v
//   are copied into contiguous buffers (they lie S rows apart; the next chunk's
//   are asked for meanwhile), and the chunk is a handful of small matrix
//   products (engine/cpu/small_products.h) around a step-by-step solve over
//   C × Dv entries. The forward keeps W transposed, so that both of its large
//   products run over rows of Wᵀ; the backward keeps W and G = dL/dW as they
//   are, so that six of its seven large products run over their rows.
// The measurements behind both choices are in engine/README.md.
#include "engine/cpu/eigen.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_clock.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/delta_rows.h"
#include "engine/cpu/small_products.h"
#include "engine/kernels/row_math.h"

namespace loom {

using cpu::parallel_for;
using cpu::prefetch_row;
using cpu::prefetch_row_for_write;
using cpu::forward_step;
using cpu::backward_step;
using cpu::Vec;
namespace step = kernels::delta_step;

namespace {

struct Dims {
  int64_t L = 0, S = 0, Dk = 0, Dv = 0;  // S = B·H sequences
};

Dims dims_of(const Tensor& q, const Tensor& v) {
  return {q.size(0), q.size(1) * q.size(2), q.size(3), v.size(3)};
}

// Chunks pay for their products of 16 rows with C × C dot products and a
// step-by-step solve per chunk, which only heads of at least 64 × 64 outweigh:
// the chunked forward + backward took about 0.9× the step kernels' time at
// Dk 64, Dv 64, 1.05× at Dk 64, Dv 32 and 1.5–1.7× at Dk 32, Dv 16
// (engine/README.md, "Measurements behind the CPU kernels").
bool in_chunks(const Dims& d) { return d.Dk >= 64 && d.Dv >= 64; }

// ---- step by step: the small heads ---------------------------------------------------------

// Each sequence walks time with its W [Dv, Dk] in a private buffer and reads q,
// k, v, beta one step at a time; the step itself, a block of rows of W at a
// time in vector registers, is engine/cpu/delta_rows.h. A thread walks a few
// sequences side by side (sequences_side_by_side, engine/kernels/row_math.h):
// their rows of a step lie next to each other, and each step asks for the
// group's rows of the next step before it starts (they lie S rows further on).
template <class T>
void forward_steps(const T* q, const T* k, const T* v, const T* beta, const T* w0, T* y, T* w_last, T* vbar,
                   const Dims& d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv;
  const int64_t group = cpu::sequences_side_by_side(static_cast<int64_t>(sizeof(T)) * Dv * Dk);
  // Work per sequence: three passes of Dv·Dk per step.
  parallel_for(S, 3 * L * Dv * Dk, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(w_last ? 0 : group * Dv * Dk);
    for (int64_t s0 = begin; s0 < end; s0 += group) {
      const int64_t n = std::min(group, end - s0);
      T* W = cpu::group_states(w_last, scratch.data(), w0, s0, n, Dv * Dk);  // sequence s0 + j's at j·Dv·Dk
      for (int64_t t = 0; t < L; ++t) {
        const int64_t first = t * S + s0;  // the group's rows of step t
        if (t + 1 < L) {
          prefetch_row(q + (first + S) * Dk, n * Dk);
          prefetch_row(k + (first + S) * Dk, n * Dk);
          prefetch_row(v + (first + S) * Dv, n * Dv);
          prefetch_row_for_write(y + (first + S) * Dv, n * Dv);
          if (vbar) prefetch_row_for_write(vbar + (first + S) * Dv, n * Dv);
        }
        for (int64_t j = 0; j < n; ++j) {
          const int64_t row = first + j;
          const T b = beta ? beta[row] : T(1);
          forward_step(W + j * Dv * Dk, q + row * Dk, k + row * Dk, v + row * Dv, b, beta != nullptr, y + row * Dv,
                       vbar ? vbar + row * Dv : nullptr, Dk, Dv);
        }
      }
    }
  });
}

template <class T>
void backward_steps(const T* g, const T* q, const T* k, const T* v, const T* beta, const T* vbar,
                    const T* w_last, T* gq, T* gk, T* gv, T* gbeta, const Dims& d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv;
  // W and G = dL/dW per sequence.
  const int64_t group = cpu::sequences_side_by_side(2 * static_cast<int64_t>(sizeof(T)) * Dv * Dk);
  // Work per sequence: about seven passes of Dv·Dk per step.
  parallel_for(S, 7 * L * Dv * Dk, [&](int64_t begin, int64_t end) {
    std::vector<T> W(group * Dv * Dk), G(group * Dv * Dk);
    for (int64_t s0 = begin; s0 < end; s0 += group) {
      const int64_t n = std::min(group, end - s0);
      std::memcpy(W.data(), w_last + s0 * Dv * Dk, sizeof(T) * n * Dv * Dk);
      std::fill(G.begin(), G.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t first = t * S + s0;  // the group's rows of step t
        if (t > 0) {
          const int64_t before = first - S;
          prefetch_row(q + before * Dk, n * Dk);
          prefetch_row(k + before * Dk, n * Dk);
          prefetch_row(v + before * Dv, n * Dv);
          prefetch_row(g + before * Dv, n * Dv);
          if (beta) prefetch_row(vbar + before * Dv, n * Dv);
          prefetch_row_for_write(gq + before * Dk, n * Dk);
          prefetch_row_for_write(gk + before * Dk, n * Dk);
          prefetch_row_for_write(gv + before * Dv, n * Dv);
        }
        std::fill(gq + first * Dk, gq + (first + n) * Dk, T(0));
        std::fill(gk + first * Dk, gk + (first + n) * Dk, T(0));
        const bool reverse = t % 2 == 1;  // alternate sweeps: W and G overflow L1 (delta_rows.h)
        for (int64_t j = 0; j < n; ++j) {
          const int64_t row = first + j;
          T* Wj = W.data() + j * Dv * Dk;
          T* Gj = G.data() + j * Dv * Dk;
          const T* vbt = beta ? vbar + row * Dv : nullptr;
          const T b = beta ? beta[row] : T(1);
          const T* qt = q + row * Dk;
          const T* kt = k + row * Dk;
          const T* vt = v + row * Dv;
          const T* gt = g + row * Dv;
          T* dq = gq + row * Dk;
          T* dk = gk + row * Dk;
          T* dv = gv + row * Dv;
          if (beta) gbeta[row] = backward_step<T, true>(Wj, Gj, qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk, Dv, reverse);
          else backward_step<T, false>(Wj, Gj, qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk, Dv, reverse);
        }
      }
    }
  });
}


// ---- in chunks: heads of 64 × 64 and more ---------------------------------------------------

// Steps per chunk (engine/kernels/delta_rule.h, "In chunks").
constexpr int64_t kChunk = 16;

// One sequence's buffers for the chunked forward, reused chunk after chunk.
template <class T>
struct ChunkBuffers {
  std::vector<T> kq;     // [2C, Dk]: the chunk's keys, then its queries (contiguous copies)
  std::vector<T> read;   // [2C, Dv]: W_0 k_t, then W_0 q_t (W_0: W before the chunk)
  std::vector<T> dots;   // [2C, C]: k_t·k_s, then q_t·k_s
  std::vector<T> u;      // [C, Dv]: the writes u_t
  std::vector<T> mixed;  // [C, C]: q_t·k_s for s <= t, 0 above
  std::vector<T> y;      // [C, Dv]: the outputs, copied out row by row
  ChunkBuffers(int64_t Dk, int64_t Dv)
      : kq(2 * kChunk * Dk), read(2 * kChunk * Dv), dots(2 * kChunk * kChunk), u(kChunk * Dv),
        mixed(kChunk * kChunk), y(kChunk * Dv) {}
};

// Rows [t0, t0 + c) of sequence s of an [L, S, D] tensor, into a contiguous [c, D].
// The rows lie S·D apart (S·D·4 bytes is a multiple of 4 KB at model sizes, so in
// place they would share L1's sets). The rows [next_t0, next_t0 + next_c) of the
// chunk read next (the following one forward, the previous one backward) are
// asked for meanwhile.
template <class T>
void gather_rows(const T* x, int64_t t0, int64_t c, int64_t next_t0, int64_t next_c, int64_t S, int64_t s, int64_t D,
                 T* out) {
  for (int64_t t = 0; t < c; ++t) {
    if (t < next_c) prefetch_row(x + ((next_t0 + t) * S + s) * D, D);
    std::memcpy(out + t * D, x + ((t0 + t) * S + s) * D, sizeof(T) * D);
  }
}

// out[t][s] = m[t][s] for s <= t, 0 above (c × c; out may be m).
template <class T>
void lower_part(const T* m, int64_t c, T* out) {
  for (int64_t t = 0; t < c; ++t)
    for (int64_t r = 0; r < c; ++r) out[t * c + r] = r <= t ? m[t * c + r] : T(0);
}

// out[t][t'] = m[t'][t] for t' >= t, 0 below: the lower part of m, transposed (c × c).
template <class T>
void upper_of_transposed(const T* m, int64_t c, T* out) {
  for (int64_t t = 0; t < c; ++t)
    for (int64_t t2 = 0; t2 < c; ++t2) out[t * c + t2] = t2 >= t ? m[t2 * c + t] : T(0);
}

// One chunk of c steps from t0 (engine/kernels/delta_rule.h, "In chunks"). The
// fast weight is held transposed, Wt = Wᵀ [Dk, Dv], so that both large products
// run over rows of Wt: the reads [K; Q] W_0ᵀ = [K; Q]·Wt, and the write
// Wt += Kᵀ U. Wt is W_0ᵀ on entry and W_cᵀ on return.
template <class T>
void forward_chunk(T* Wt, const T* q, const T* k, const T* v, const T* beta, T* y, T* vbar, int64_t t0, int64_t c,
                   int64_t L, int64_t s, const Dims& d, ChunkBuffers<T>& buf) {
  using cpu::Strided;
  constexpr int64_t V = cpu::kLanes<T>;
  const int64_t S = d.S, Dk = d.Dk, Dv = d.Dv;
  const int64_t c_next = std::min(kChunk, L - t0 - c);
  T* K = buf.kq.data();
  T* Q = K + c * Dk;
  // The chunk's output rows, a page apart, are asked for with the intent to
  // write before the products: stored later, each would wait for its line.
  for (int64_t t = 0; t < c; ++t) {
    const int64_t row = (t0 + t) * S + s;
    cpu::prefetch_row_for_write(y + row * Dv, Dv);
    if (vbar) cpu::prefetch_row_for_write(vbar + row * Dv, Dv);
  }
  gather_rows(k, t0, c, t0 + c, c_next, S, s, Dk, K);
  gather_rows(q, t0, c, t0 + c, c_next, S, s, Dk, Q);
  // read[t] = W_0 k_t (t < c), then W_0 q_t.
  T* read = buf.read.data();
  std::fill(read, read + 2 * c * Dv, T(0));
  cpu::small_matmul<T>(2 * c, Dk, Dv, T(1), Strided<T>{K, Dk, 1}, Wt, Dv, read, Dv);
  T* u = buf.u.data();
  if (beta) {
    // dots[t][s] = k_t·k_s and dots[c + t][s] = q_t·k_s, read for s <= t.
    T* dots = buf.dots.data();
    cpu::row_dots<T>(c, c, Dk, K, Dk, K, Dk, dots, c, /*lower=*/true);
    cpu::row_dots<T>(c, c, Dk, Q, Dk, K, Dk, dots + c * c, c, /*lower=*/true);
    // vbar_t = W_0 k_t + Σ_{s<t} (k_s·k_t) u_s, then u_t, step by step, a vector of rows at a time.
    for (int64_t t = 0; t < c; ++t) {
      const int64_t row = (t0 + t) * S + s;
      const T* vt = v + row * Dv;
      if (c_next > 0 && t == 0) prefetch_row(v + (row + c * S) * Dv, Dv);
      const T b = beta[row];
      const Vec<T> b_lanes = Vec<T>{} + b;
      T* ut = u + t * Dv;
      T* vbt = vbar ? vbar + row * Dv : nullptr;
      int64_t i = 0;
      for (; i + V <= Dv; i += V) {
        Vec<T> acc = cpu::load(read + t * Dv + i);
        for (int64_t r = 0; r < t; ++r) acc += dots[t * c + r] * cpu::load(u + r * Dv + i);
        if (vbt) cpu::store(vbt + i, acc);
        cpu::store(ut + i, step::write_strength<Vec<T>>(b_lanes, cpu::load(vt + i), acc));
      }
      for (; i < Dv; ++i) {
        T acc = read[t * Dv + i];
        for (int64_t r = 0; r < t; ++r) acc += dots[t * c + r] * u[r * Dv + i];
        if (vbt) vbt[i] = acc;
        ut[i] = step::write_strength(b, vt[i], acc);
      }
    }
    lower_part(dots + c * c, c, buf.mixed.data());
  } else {
    gather_rows(v, t0, c, t0 + c, c_next, S, s, Dv, u);  // the sum rule writes u_t = v_t
    cpu::row_dots<T>(c, c, Dk, Q, Dk, K, Dk, buf.mixed.data(), c, /*lower=*/true);
    lower_part(buf.mixed.data(), c, buf.mixed.data());
  }
  // y_t = W_0 q_t + Σ_{s<=t} (k_s·q_t) u_s.
  T* yc = buf.y.data();
  std::memcpy(yc, read + c * Dv, sizeof(T) * c * Dv);
  cpu::small_matmul<T>(c, c, Dv, T(1), Strided<T>{buf.mixed.data(), c, 1}, u, Dv, yc, Dv);
  for (int64_t t = 0; t < c; ++t) std::memcpy(y + ((t0 + t) * S + s) * Dv, yc + t * Dv, sizeof(T) * Dv);
  // W_c = W_0 + Σ_t u_t k_tᵀ, transposed: Wt[j] += Σ_t k_t[j] u_t.
  cpu::small_matmul<T>(Dk, c, Dv, T(1), Strided<T>{K, 1, Dk}, u, Dv, Wt, Dv);
}

// out [cols, rows] = in [rows, cols]ᵀ, by Eigen's assignment (faster here than a
// plain double loop).
template <class T>
void transpose(const T* in, int64_t rows, int64_t cols, T* out) {
  using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<RowMajor>(out, cols, rows) = Eigen::Map<const RowMajor>(in, rows, cols).transpose();
}

template <class T>
void forward_chunks(const T* q, const T* k, const T* v, const T* beta, const T* w0, T* y, T* w_last, T* vbar,
                    const Dims& d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv;
  // Work per sequence: three passes of Dv·Dk per step.
  parallel_for(S, 3 * L * Dv * Dk, [&](int64_t begin, int64_t end) {
    std::vector<T> Wt(Dk * Dv);  // Wᵀ
    ChunkBuffers<T> buf(Dk, Dv);
    for (int64_t s = begin; s < end; ++s) {
      if (w0) transpose(w0 + s * Dv * Dk, Dv, Dk, Wt.data());
      else std::fill(Wt.begin(), Wt.end(), T(0));
      for (int64_t t0 = 0; t0 < L; t0 += kChunk)
        forward_chunk(Wt.data(), q, k, v, beta, y, vbar, t0, std::min(kChunk, L - t0), L, s, d, buf);
      if (w_last) transpose(Wt.data(), Dk, Dv, w_last + s * Dv * Dk);
    }
  });
}

// One sequence's buffers for the chunked backward.
template <class T>
struct BackwardBuffers {
  std::vector<T> k, q;        // [C, Dk]: the chunk's keys and queries
  std::vector<T> g, v, vbar;  // [C, Dv]: its output gradients, values, saved reads
  std::vector<T> u, du, dvbar;  // [C, Dv]
  std::vector<T> qk, kk, gu, udv, mix;  // [C, C]
  std::vector<T> dq, dk;      // [C, Dk]
  BackwardBuffers(int64_t Dk, int64_t Dv)
      : k(kChunk * Dk), q(kChunk * Dk), g(kChunk * Dv), v(kChunk * Dv), vbar(kChunk * Dv), u(kChunk * Dv),
        du(kChunk * Dv), dvbar(kChunk * Dv), qk(kChunk * kChunk), kk(kChunk * kChunk), gu(kChunk * kChunk),
        udv(kChunk * kChunk), mix(kChunk * kChunk), dq(kChunk * Dk), dk(kChunk * Dk) {}
};

// One chunk of c steps from t0, in reverse (engine/kernels/delta_rule.h, "In
// chunks"). W [Dv, Dk] is W_c on entry and W_0 on return; G = dL/dW_c on entry
// and dL/dW_0 on return.
template <class T>
void backward_chunk(T* W, T* G, const T* g, const T* q, const T* k, const T* v, const T* beta, const T* vbar, T* gq,
                    T* gk, T* gv, T* gbeta, int64_t t0, int64_t c, int64_t s, const Dims& d, BackwardBuffers<T>& buf) {
  using cpu::Strided;
  constexpr int64_t V = cpu::kLanes<T>;
  const int64_t S = d.S, Dk = d.Dk, Dv = d.Dv;
  const int64_t c_prev = std::min(kChunk, t0);  // the chunk read next, before this one
  auto gather = [&](const T* x, int64_t D, T* out) { gather_rows(x, t0, c, t0 - c_prev, c_prev, S, s, D, out); };
  // The chunk's gradient rows, a page apart, asked for with the intent to write
  // (as the forward's outputs).
  for (int64_t t = 0; t < c; ++t) {
    const int64_t row = (t0 + t) * S + s;
    cpu::prefetch_row_for_write(gq + row * Dk, Dk);
    cpu::prefetch_row_for_write(gk + row * Dk, Dk);
    cpu::prefetch_row_for_write(gv + row * Dv, Dv);
  }
  T *K = buf.k.data(), *Q = buf.q.data(), *Gy = buf.g.data(), *U = buf.u.data(), *dU = buf.du.data();
  T* dVbar = buf.dvbar.data();
  gather(k, Dk, K);
  gather(q, Dk, Q);
  gather(g, Dv, Gy);
  // u_t, recomputed from the saved reads with the forward's expression.
  if (beta) {
    gather(v, Dv, buf.v.data());
    gather(vbar, Dv, buf.vbar.data());
    for (int64_t t = 0; t < c; ++t) {
      const T b = beta[(t0 + t) * S + s];
      const Vec<T> b_lanes = Vec<T>{} + b;
      const T* vt = buf.v.data() + t * Dv;
      const T* vbt = buf.vbar.data() + t * Dv;
      int64_t i = 0;
      for (; i + V <= Dv; i += V)
        cpu::store(U + t * Dv + i, step::write_strength<Vec<T>>(b_lanes, cpu::load(vt + i), cpu::load(vbt + i)));
      for (; i < Dv; ++i) U[t * Dv + i] = step::write_strength(b, vt[i], vbt[i]);
    }
  } else {
    gather(v, Dv, U);
  }
  // W_0 = W_c - Σ_t u_t k_tᵀ.
  cpu::small_matmul<T>(Dv, c, Dk, T(-1), Strided<T>{U, 1, Dv}, K, Dk, W, Dk);
  // qk[t'][t] = q_t'·k_t and kk[t'][t] = k_t'·k_t, read for t <= t'.
  cpu::row_dots<T>(c, c, Dk, Q, Dk, K, Dk, buf.qk.data(), c, /*lower=*/true);
  if (beta) cpu::row_dots<T>(c, c, Dk, K, Dk, K, Dk, buf.kk.data(), c, /*lower=*/true);
  // du_t, before the reads' part: G_c k_t + Σ_{t'>=t} (q_t'·k_t) gy_t'.
  cpu::row_dots<T>(c, Dv, Dk, K, Dk, G, Dk, dU, Dv);
  upper_of_transposed(buf.qk.data(), c, buf.mix.data());
  cpu::small_matmul<T>(c, c, Dv, T(1), Strided<T>{buf.mix.data(), c, 1}, Gy, Dv, dU, Dv);
  // Then, from the last step back, the reads of the later steps: du_t += Σ_{t'>t}
  // (k_t'·k_t) dvbar_t', and each step's dv, dbeta and dvbar.
  for (int64_t t = c - 1; t >= 0; --t) {
    const int64_t row = (t0 + t) * S + s;
    const T* du = dU + t * Dv;
    T* dv = gv + row * Dv;
    if (!beta) {
      std::memcpy(dv, du, sizeof(T) * Dv);  // the sum rule: v_t is u_t
      continue;
    }
    const T b = beta[row];
    const Vec<T> b_lanes = Vec<T>{} + b;
    const T* vt = buf.v.data() + t * Dv;
    const T* vbt = buf.vbar.data() + t * Dv;
    Vec<T> dbeta_lanes = {};
    T dbeta = 0;
    int64_t i = 0;
    for (; i + V <= Dv; i += V) {
      Vec<T> acc = cpu::load(du + i);
      for (int64_t t2 = t + 1; t2 < c; ++t2) acc += buf.kk[t2 * c + t] * cpu::load(dVbar + t2 * Dv + i);
      const step::RowGrads<Vec<T>> rg = step::row_backward<Vec<T>>(b_lanes, cpu::load(vt + i), cpu::load(vbt + i), acc);
      cpu::store(dVbar + t * Dv + i, rg.dvbar);
      cpu::store(dv + i, rg.dv);
      dbeta_lanes += rg.dbeta;
    }
    for (; i < Dv; ++i) {
      T acc = du[i];
      for (int64_t t2 = t + 1; t2 < c; ++t2) acc += buf.kk[t2 * c + t] * dVbar[t2 * Dv + i];
      const step::RowGrads<T> rg = step::row_backward(b, vt[i], vbt[i], acc);
      dVbar[t * Dv + i] = rg.dvbar;
      dv[i] = rg.dv;
      dbeta += rg.dbeta;
    }
    gbeta[row] = cpu::sum_lanes<T>(dbeta_lanes) + dbeta;
  }
  // gu[t][s] = gy_t·u_s, read for s <= t.
  cpu::row_dots<T>(c, c, Dv, Gy, Dv, U, Dv, buf.gu.data(), c, /*lower=*/true);
  // dq_t = W_0ᵀ gy_t + Σ_{s<=t} (u_s·gy_t) k_s.
  T* dQ = buf.dq.data();
  std::fill(dQ, dQ + c * Dk, T(0));
  cpu::small_matmul<T>(c, Dv, Dk, T(1), Strided<T>{Gy, Dv, 1}, W, Dk, dQ, Dk);
  lower_part(buf.gu.data(), c, buf.mix.data());
  cpu::small_matmul<T>(c, c, Dk, T(1), Strided<T>{buf.mix.data(), c, 1}, K, Dk, dQ, Dk);
  // dk_t = W_0ᵀ dvbar_t + G_cᵀ u_t + Σ_{s<t} (u_s·dvbar_t) k_s + Σ_{t'>t} (u_t·dvbar_t') k_t'
  //        + Σ_{t'>=t} (u_t·gy_t') q_t'.
  T* dK = buf.dk.data();
  std::fill(dK, dK + c * Dk, T(0));
  cpu::small_matmul<T>(c, Dv, Dk, T(1), Strided<T>{U, Dv, 1}, G, Dk, dK, Dk);
  upper_of_transposed(buf.gu.data(), c, buf.mix.data());
  cpu::small_matmul<T>(c, c, Dk, T(1), Strided<T>{buf.mix.data(), c, 1}, Q, Dk, dK, Dk);
  if (beta) {
    cpu::small_matmul<T>(c, Dv, Dk, T(1), Strided<T>{dVbar, Dv, 1}, W, Dk, dK, Dk);
    cpu::row_dots<T>(c, c, Dv, dVbar, Dv, U, Dv, buf.udv.data(), c);  // udv[t][s] = dvbar_t·u_s
    for (int64_t t = 0; t < c; ++t)
      for (int64_t s2 = 0; s2 < c; ++s2)
        buf.mix[t * c + s2] = s2 < t ? buf.udv[t * c + s2] : s2 > t ? buf.udv[s2 * c + t] : T(0);
    cpu::small_matmul<T>(c, c, Dk, T(1), Strided<T>{buf.mix.data(), c, 1}, K, Dk, dK, Dk);
  }
  for (int64_t t = 0; t < c; ++t) {
    const int64_t row = (t0 + t) * S + s;
    std::memcpy(gq + row * Dk, dQ + t * Dk, sizeof(T) * Dk);
    std::memcpy(gk + row * Dk, dK + t * Dk, sizeof(T) * Dk);
  }
  // G_0 = G_c + Σ_t gy_t q_tᵀ + Σ_t dvbar_t k_tᵀ.
  cpu::small_matmul<T>(Dv, c, Dk, T(1), Strided<T>{Gy, 1, Dv}, Q, Dk, G, Dk);
  if (beta) cpu::small_matmul<T>(Dv, c, Dk, T(1), Strided<T>{dVbar, 1, Dv}, K, Dk, G, Dk);
}

template <class T>
void backward_chunks(const T* g, const T* q, const T* k, const T* v, const T* beta, const T* vbar,
                     const T* w_last, T* gq, T* gk, T* gv, T* gbeta, const Dims& d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv;
  // Work per sequence: about seven passes of Dv·Dk per step.
  parallel_for(S, 7 * L * Dv * Dk, [&](int64_t begin, int64_t end) {
    std::vector<T> W(Dv * Dk), G(Dv * Dk);
    BackwardBuffers<T> buf(Dk, Dv);
    for (int64_t s = begin; s < end; ++s) {
      std::memcpy(W.data(), w_last + s * Dv * Dk, sizeof(T) * Dv * Dk);
      std::fill(G.begin(), G.end(), T(0));
      for (int64_t t0 = (L - 1) / kChunk * kChunk; t0 >= 0 && L > 0; t0 -= kChunk)
        backward_chunk(W.data(), G.data(), g, q, k, v, beta, vbar, gq, gk, gv, gbeta, t0, std::min(kChunk, L - t0), s,
                       d, buf);
    }
  });
}

}  // namespace

void CpuBackend::delta_rule(const DeltaRuleArgs& a) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(a.q.dtype(), "delta_rule", [&](auto zero) {
    using T = decltype(zero);
    const Tensor qc = dense(a.q), kc = dense(a.k), vc = dense(a.v), bc = dense(a.beta), w0 = dense(a.initial_state);
    const Dims d = dims_of(a.q, a.v);
    auto forward = in_chunks(d) ? forward_chunks<T> : forward_steps<T>;
    forward(qc.data<T>(), kc.data<T>(), vc.data<T>(), data_or_null<const T>(bc), data_or_null<const T>(w0),
            a.out.data<T>(), data_or_null<T>(a.final_state), data_or_null<T>(a.vbar), d);
  });
}

void CpuBackend::delta_rule_backward(const DeltaRuleBackwardArgs& a) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(a.q.dtype(), "delta_rule_backward", [&](auto zero) {
    using T = decltype(zero);
    const Tensor g = dense(a.grad_out), qc = dense(a.q), kc = dense(a.k), vc = dense(a.v), bc = dense(a.beta),
                 vb = dense(a.vbar), wl = dense(a.final_state);
    const Dims d = dims_of(a.q, a.v);
    auto backward = in_chunks(d) ? backward_chunks<T> : backward_steps<T>;
    backward(g.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(), data_or_null<const T>(bc),
             data_or_null<const T>(vb), wl.data<T>(), a.grad_q.data<T>(), a.grad_k.data<T>(), a.grad_v.data<T>(),
             data_or_null<T>(a.grad_beta), d);
  });
}

}  // namespace loom
