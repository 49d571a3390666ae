// recurrent_delta_net.cpp: CPU kernels of the Recurrent Delta Net; the math,
// layout and derivation are in engine/kernels/recurrent_delta_net.h.
//
// Each sequence is one task (OpenMP over S; small heads a few side by side,
// sequences_side_by_side in engine/kernels/row_math.h): it walks time with its
// fast weight W [D, D] in a private buffer, and per step computes
// a = tanh(y_{t-1}), the slow net's q, k, v, beta (three [D, D]·[D] products
// with Rq, Rk, Rv), then the delta rule's step and read-out
// (engine/cpu/delta_rows.h, 8 rows of W at a time).
// The backward's sweep keeps every step's a and writes the slow net's input
// gradients (dqx, dkx, dvx, dbx); the parameters' gradients are then one product
// per head over all steps and sequences (dRq = Σ dqx aᵀ: K = L·B), as the LSTM's
// dW_hh is. Adding D × D rank-one updates into a private buffer at every step
// read and wrote 3·D² entries per step beside the sweep's own W and G, out of L1
// at D = 64 (engine/README.md, "Measurements behind the CPU kernels"); and the
// sums no longer depend on how sequences fall onto threads.
//
// tanh and exp go through Eigen's vectorised array functions (glibc's are
// scalar, and Eigen's made the forward about 30% faster at D = 16:
// engine/README.md, "Measurements"), on aligned buffers of whole 64-byte
// packets: Eigen computes unaligned leading and partial trailing elements on its
// scalar path, whose last bit differs, so whole packets keep every entry on one
// path whatever the thread split.
#include "engine/cpu/eigen.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_clock.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/delta_rows.h"
#include "engine/kernels/recurrent_delta_net.h"
#include "engine/kernels/row_math.h"

namespace loom {

using cpu::dot;
using cpu::parallel_for;
using cpu::prefetch_row;
using cpu::prefetch_row_for_write;
using cpu::backward_step;
using cpu::dot_all_rows;
using cpu::forward_step;

namespace {

using Dims = kernels::RecurrentDeltaNetDims;
template <class T>
using Forward = kernels::RecurrentDeltaNetForward<T>;
template <class T>
using Backward = kernels::RecurrentDeltaNetBackward<T>;

// The parameters of one head: Rq, Rk, Rv [D, D] (row i is output i) and rb [D].
template <class T>
struct Head {
  const T *Rq, *Rk, *Rv, *rb;
};

template <class T>
Head<T> head_of(const T* Rq, const T* Rk, const T* Rv, const T* rb, int64_t h, int64_t D) {
  return {Rq + h * D * D, Rk + h * D * D, Rv + h * D * D, rb + h * D};
}

// Vectors of D entries live in buffers of Dp = D rounded up to whole packets.
template <class T>
constexpr int64_t kPacket = 64 / static_cast<int64_t>(sizeof(T));

template <class T>
int64_t padded(int64_t n) {
  return (n + kPacket<T> - 1) / kPacket<T> * kPacket<T>;
}

template <class T>
using AlignedBuffer = std::vector<T, Eigen::aligned_allocator<T>>;

template <class T>
using PacketMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::AlignedMax>;

// a[0, Dp) = tanh(y[0, Dp)) with y's D entries (zeros when y is null) padded by zeros.
template <class T>
void tanh_of(const T* y, T* a, int64_t D, int64_t Dp) {
  if (y) std::copy(y, y + D, a);
  else std::fill(a, a + D, T(0));
  std::fill(a + D, a + Dp, T(0));
  PacketMap<T>(a, Dp) = PacketMap<T>(a, Dp).tanh();
}

// out = softmax(x) over D entries, the maximum subtracted first. x is an aligned
// buffer of Dp entries (overwritten).
template <class T>
void softmax(T* x, T* out, int64_t D, int64_t Dp) {
  T m = x[0];
  for (int64_t j = 1; j < D; ++j) m = std::max(m, x[j]);
  for (int64_t j = 0; j < D; ++j) x[j] -= m;
  std::fill(x + D, x + Dp, T(0));
  PacketMap<T>(x, Dp) = PacketMap<T>(x, Dp).exp();
  T s = 0;
  for (int64_t j = 0; j < D; ++j) s += x[j];
  const T inv = T(1) / s;
  for (int64_t j = 0; j < D; ++j) out[j] = x[j] * inv;
}

// dx = p ⊙ (dp - p·dp): the gradient through p = softmax(x).
template <class T>
void softmax_backward(const T* p, const T* dp, T* dx, int64_t n) {
  const T pd = dot(p, dp, n);
  for (int64_t j = 0; j < n; ++j) dx[j] = p[j] * (dp[j] - pd);
}

// The slow net of one step: q, k, v, beta from the feed-forward parts of one row
// and a = tanh(y_{t-1}); pre is an aligned buffer of Dp entries.
template <class T>
T slow_net(const Head<T>& p, const T* qx, const T* kx, const T* vx, T bx, const T* a, T* pre, T* q, T* k, T* v,
           int64_t D, int64_t Dp) {
  // The products R a, 8 rows at a time (engine/cpu/delta_rows.h).
  dot_all_rows(p.Rq, a, D, D, pre);
  for (int64_t i = 0; i < D; ++i) pre[i] = qx[i] + pre[i];
  softmax(pre, q, D, Dp);
  dot_all_rows(p.Rk, a, D, D, pre);
  for (int64_t i = 0; i < D; ++i) pre[i] = kx[i] + pre[i];
  softmax(pre, k, D, Dp);
  dot_all_rows(p.Rv, a, D, D, v);
  for (int64_t i = 0; i < D; ++i) v[i] = vx[i] + v[i];
  return T(1) / (T(1) + std::exp(-(bx + dot(p.rb, a, D))));
}

template <class T>
void forward_sequences(const Forward<T>& f, const Dims& d) {
  const int64_t L = d.L, S = d.S, D = d.D;
  const int64_t group = cpu::sequences_side_by_side(static_cast<int64_t>(sizeof(T)) * D * D);
  // Work per sequence and step: three slow-net products and three passes over W.
  parallel_for(S, 6 * L * D * D, [&](int64_t begin, int64_t end) {
    // Per thread: a and a pre-activation (aligned, Dp each), the step's q, k, v,
    // vbar when they are not saved, and the group's W unless they live in the
    // final-state slot.
    const int64_t Dp = padded<T>(D);
    AlignedBuffer<T> scratch(2 * Dp + 4 * D + group * D * D);
    T* a = scratch.data();
    T* pre = a + Dp;
    std::vector<const T*> y_prev(group);  // per sequence of the group; null: zeros
    for (int64_t s0 = begin; s0 < end; s0 += group) {
      const int64_t n = std::min(group, end - s0);
      T* W = cpu::group_states(f.W_last, pre + Dp + 4 * D, f.W0, s0, n, D * D);  // sequence s0 + j's at j·D·D
      for (int64_t j = 0; j < n; ++j) y_prev[j] = f.y0 ? f.y0 + (s0 + j) * D : nullptr;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t first = t * S + s0;  // the group's rows of step t
        if (t + 1 < L) {  // the next step's rows, S rows on (engine/kernels/row_math.h)
          for (int64_t j = 0; j < n; ++j) {
            const int64_t b_of_s = (s0 + j) / d.H, h_of_s = (s0 + j) % d.H;
            prefetch_row(f.qx.at(t + 1, b_of_s, h_of_s), D);
            prefetch_row(f.kx.at(t + 1, b_of_s, h_of_s), D);
            prefetch_row(f.vx.at(t + 1, b_of_s, h_of_s), D);
          }
          // and the rows it writes, with the intent to write (a page apart as well)
          for (T* m : {f.y, f.q, f.k, f.v, f.vbar})
            if (m) prefetch_row_for_write(m + (first + S) * D, n * D);
        }
        for (int64_t j = 0; j < n; ++j) {
          const int64_t s = s0 + j, row = first + j;
          const int64_t b_of_s = s / d.H, h_of_s = s % d.H;  // where the inputs' rows of s lie
          const Head<T> p = head_of(f.Rq, f.Rk, f.Rv, f.rb, h_of_s, D);
          T* q = f.q ? f.q + row * D : pre + Dp;
          T* k = f.k ? f.k + row * D : pre + Dp + D;
          T* v = f.v ? f.v + row * D : pre + Dp + 2 * D;
          T* vbar = f.vbar ? f.vbar + row * D : pre + Dp + 3 * D;
          tanh_of(y_prev[j], a, D, Dp);
          const T b = slow_net(p, f.qx.at(t, b_of_s, h_of_s), f.kx.at(t, b_of_s, h_of_s),
                               f.vx.at(t, b_of_s, h_of_s), *f.bx.at(t, b_of_s, h_of_s), a, pre, q, k, v, D, Dp);
          if (f.beta) f.beta[row] = b;
          T* yt = f.y + row * D;
          // The delta rule's step (engine/cpu/delta_rows.h): vbar, the write, y_t = W_t q_t.
          forward_step(W + j * D * D, q, k, v, b, true, yt, vbar, D, D);
          y_prev[j] = yt;
        }
      }
      if (f.y_last) {
        for (int64_t j = 0; j < n; ++j) {
          T* out = f.y_last + (s0 + j) * D;
          if (y_prev[j]) std::memcpy(out, y_prev[j], sizeof(T) * D);
          else std::fill(out, out + D, T(0));
        }
      }
    }
  });
}

// The reverse sweep, a few sequences side by side per thread: writes dqx, dkx,
// dvx, dbx and keeps every step's a = tanh(y_{t-1}) in a_all (row t·S + s, Dp
// entries each).
template <class T>
void backward_sequences(const Backward<T>& f, T* a_all, const Dims& d) {
  const int64_t L = d.L, S = d.S, D = d.D, Dp = padded<T>(D);
  // W and G = dL/dW per sequence.
  const int64_t group = cpu::sequences_side_by_side(2 * static_cast<int64_t>(sizeof(T)) * D * D);
  // Work per sequence and step: about seven passes over W and G, three over the parameters.
  parallel_for(S, 10 * L * D * D, [&](int64_t begin, int64_t end) {
    // Per sequence of the group: W, G and e = dL/dy_t from the steps after t.
    std::vector<T> W(group * D * D), G(group * D * D), e_all(group * D), vec(4 * D);
    T* gh = vec.data();  // ĝ
    T* dq = gh + D;
    T* dk = dq + D;
    T* da = dk + D;
    for (int64_t s0 = begin; s0 < end; s0 += group) {
      const int64_t n = std::min(group, end - s0);
      std::memcpy(W.data(), f.W_last + s0 * D * D, sizeof(T) * n * D * D);
      std::fill(G.begin(), G.end(), T(0));
      std::fill(e_all.begin(), e_all.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t first = t * S + s0;  // the group's rows of step t
        if (t > 0) {  // the previous step's rows, read next
          for (const T* m : {f.q, f.k, f.v, f.vbar, f.g}) prefetch_row(m + (first - S) * D, n * D);
          if (t > 1) prefetch_row(f.y + (first - 2 * S) * D, n * D);
          for (T* m : {f.gvx, f.gqx, f.gkx}) prefetch_row_for_write(m + (first - S) * D, n * D);
        }
        for (int64_t j = 0; j < n; ++j) {
          const int64_t s = s0 + j, row = first + j;
          const Head<T> p = head_of(f.Rq, f.Rk, f.Rv, f.rb, s % d.H, D);  // s's head (its batch row is s / H)
          T* e = e_all.data() + j * D;
          const T *q = f.q + row * D, *k = f.k + row * D, *v = f.v + row * D, *vbar = f.vbar + row * D;
          const T b = f.beta[row];
          const T* y_prev = t > 0 ? f.y + (row - S) * D : (f.y0 ? f.y0 + s * D : nullptr);
          T* a = a_all + row * Dp;
          tanh_of(y_prev, a, D, Dp);
          for (int64_t i = 0; i < D; ++i) gh[i] = f.g[row * D + i] + e[i];

          std::fill(dq, dq + D, T(0));
          std::fill(dk, dk + D, T(0));
          T* dv = f.gvx + row * D;  // dvx = dv
          // The delta rule's reverse step (engine/cpu/delta_rows.h) with output gradient ĝ.
          const T dbeta = backward_step<T, true>(W.data() + j * D * D, G.data() + j * D * D, q, k, v, gh, vbar, b, dq,
                                                 dk, dv, D, D);

          // Through the slow net: the softmaxes, the sigmoid, the products with a.
          T* dqx = f.gqx + row * D;
          T* dkx = f.gkx + row * D;
          softmax_backward(q, dq, dqx, D);
          softmax_backward(k, dk, dkx, D);
          const T dbx = dbeta * b * (T(1) - b);
          f.gbx[row] = dbx;
          // da = Rqᵀ dqx + Rkᵀ dkx + Rvᵀ dvx, row i of each R at a time.
          std::fill(da, da + D, T(0));
          for (int64_t i = 0; i < D; ++i) {
            const T *Rq = p.Rq + i * D, *Rk = p.Rk + i * D, *Rv = p.Rv + i * D;
            const T gq = dqx[i], gk = dkx[i], gv = dv[i];
#pragma omp simd
            for (int64_t c = 0; c < D; ++c) da[c] += Rq[c] * gq + Rk[c] * gk + Rv[c] * gv;
          }
          for (int64_t c = 0; c < D; ++c) e[c] = (da[c] + p.rb[c] * dbx) * (T(1) - a[c] * a[c]);
        }
      }
    }
  });
}

template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstRows = Eigen::Map<const RowMajor<T>, 0, Eigen::OuterStride<>>;
template <class T>
using ConstEntries = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>;

// The parameters' gradients, one task per head and parameter: with the rows
// (t, b) of head h, dRq[h] = dQXᵀ A (and so dRk, dRv) and drb[h] = Aᵀ dbx, where A
// holds a = tanh(y_{t-1}). Inside a parallel region even for one task, so that
// Eigen never threads a product itself: each entry's sum has one order for any
// thread count.
template <class T>
void parameter_gradients(const Backward<T>& f, const T* a_all, T* gRq, T* gRk, T* gRv, T* grb, int64_t B,
                         const Dims& d) {
  const int64_t H = d.H, D = d.D, Dp = padded<T>(D), rows = d.L * B;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t task = 0; task < 3 * H; ++task) {
    const int64_t h = task / 3, which = task % 3;
    const ConstRows<T> a(a_all + h * Dp, rows, D, Eigen::OuterStride<>(H * Dp));
    const T* grad_x = which == 0 ? f.gqx : which == 1 ? f.gkx : f.gvx;
    T* grad_R = (which == 0 ? gRq : which == 1 ? gRk : gRv) + h * D * D;
    Eigen::Map<RowMajor<T>> out(grad_R, D, D);
    if (rows == 0) out.setZero();
    else out.noalias() = ConstRows<T>(grad_x + h * D, rows, D, Eigen::OuterStride<>(H * D)).transpose() * a;
    if (which == 2) {
      Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>> rb(grb + h * D, D);
      if (rows == 0) rb.setZero();
      else rb.noalias() = a.transpose() * ConstEntries<T>(f.gbx + h, rows, Eigen::InnerStride<>(H));
    }
  }
}

}  // namespace

void CpuBackend::recurrent_delta_net(const RecurrentDeltaNetArgs& a) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(a.qx.dtype(), "recurrent_delta_net", [&](auto zero) {
    using T = decltype(zero);
    forward_sequences<T>(kernels::pointers_of<T>(a), kernels::recurrent_delta_net_dims(a.qx));
  });
}

void CpuBackend::recurrent_delta_net_backward(const RecurrentDeltaNetBackwardArgs& a) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(a.y.dtype(), "recurrent_delta_net_backward", [&](auto zero) {
    using T = decltype(zero);
    const Dims d = kernels::recurrent_delta_net_dims(a.y);
    const int64_t B = a.y.size(1);
    const Backward<T> f = kernels::pointers_of<T>(a, nullptr);  // no per-sequence partials (file comment)
    AlignedBuffer<T> a_all(d.L * d.S * padded<T>(d.D));
    backward_sequences<T>(f, a_all.data(), d);
    parameter_gradients<T>(f, a_all.data(), a.grad_Rq.data<T>(), a.grad_Rk.data<T>(), a.grad_Rv.data<T>(),
                           a.grad_rb.data<T>(), B, d);
  });
}

}  // namespace loom
