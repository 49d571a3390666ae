// recurrent_delta_net.cpp: CPU kernels of the Recurrent Delta Net (the
// recurrence is written out in engine/ops/recurrent_delta_net.cpp).
//
// Tensors are sequence-first and contiguous: element (t, s, i) of qx [L, B, H, D]
// lies at (t·S + s)·D + i, with s = b·H + h one of S = B·H independent
// sequences; the parameters of sequence s are those of head h = s mod H. Each
// sequence is one task (OpenMP over S): it walks time with its fast weight W
// [D, D] in a private buffer, and per step computes a = tanh(y_{t-1}), the slow
// net's q, k, v, beta (three [D, D]·[D] products with Rq, Rk, Rv), then the
// delta-rule write and the read-out y_t = W_t q_t.
//
// The backward sweeps time in reverse with two D×D buffers: W (starting at the
// saved W_L, rebuilt as W_{t-1} = W_t - u_t k_tᵀ, u_t = beta_t (v_t - vbar_t))
// and G = dL/dW_t (starting at 0), and a vector e = dL/dy_t carried back from
// step t+1 through a_{t+1} = tanh(y_t). Per step, with ĝ = grad_out_t + e:
//   G += ĝ q_tᵀ;  dq = W_tᵀ ĝ                           (y_t = W_t q_t)
//   du = G k_t;  dk = Gᵀ u_t                            (W_t = W_{t-1} + u kᵀ)
//   dv = beta du;  dbeta = (v - vbar)·du;  c = -beta du (= dL/dvbar)
//   W -= u k_tᵀ (now W_{t-1});  dk += W_{t-1}ᵀ c;  G += c k_tᵀ   (vbar = W_{t-1} k)
//   dqx = q ⊙ (dq - q·dq);  dkx = k ⊙ (dk - k·dk);  dvx = dv;  dbx = dbeta·beta(1 - beta)
//   dRq += dqx aᵀ;  dRk += dkx aᵀ;  dRv += dvx aᵀ;  drb += dbx a
//   e = (Rqᵀ dqx + Rkᵀ dkx + Rvᵀ dvx + rb dbx) ⊙ (1 - a²)   (dL/dy_{t-1})
// The parameters are shared by the B sequences of a head. So that the gradients
// do not depend on how sequences fall onto threads, every sequence sums its own
// dRq, dRk, dRv, drb into a buffer of its own, and a second loop adds those of
// each head in the order of b.
//
// tanh and exp go through Eigen's vectorised array functions (glibc's are scalar;
// at D = 16 Eigen's made the forward about 30% faster: bench_recurrent_delta_net,
// float32, 1 thread, medians 31-34 ms against 44-48 ms), on aligned buffers of
// whole 64-byte packets: Eigen computes unaligned leading and partial trailing
// elements on its scalar path, whose last bit differs, so whole packets keep
// every entry on one path whatever the thread split.
#include "engine/cpu/eigen.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/row_math.h"

namespace loom {

using cpu::dot;
using cpu::parallel_for;

namespace {

struct Dims {
  int64_t L = 0, S = 0, H = 0, D = 0;  // S = B·H sequences
};

Dims dims_of(const Tensor& qx) { return {qx.size(0), qx.size(1) * qx.size(2), qx.size(2), qx.size(3)}; }

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
  for (int64_t i = 0; i < D; ++i) pre[i] = qx[i] + dot(p.Rq + i * D, a, D);
  softmax(pre, q, D, Dp);
  for (int64_t i = 0; i < D; ++i) pre[i] = kx[i] + dot(p.Rk + i * D, a, D);
  softmax(pre, k, D, Dp);
  for (int64_t i = 0; i < D; ++i) v[i] = vx[i] + dot(p.Rv + i * D, a, D);
  return T(1) / (T(1) + std::exp(-(bx + dot(p.rb, a, D))));
}

template <class T>
struct Forward {
  const T *qx, *kx, *vx, *bx, *Rq, *Rk, *Rv, *rb, *W0, *y0;
  T *y, *W_last, *y_last;
  T *q, *k, *v, *beta, *vbar;  // per step, all null when the backward is not needed
};

template <class T>
void forward_sequences(const Forward<T>& f, const Dims& d) {
  const int64_t L = d.L, S = d.S, D = d.D;
  // Work per sequence and step: three slow-net products and three passes over W.
  parallel_for(S, 6 * L * D * D, [&](int64_t begin, int64_t end) {
    // Per thread: a and a pre-activation (aligned, Dp each), the step's q, k, v,
    // vbar when they are not saved, and W unless it lives in the final-state slot.
    const int64_t Dp = padded<T>(D);
    AlignedBuffer<T> scratch(2 * Dp + 4 * D + D * D);
    T* a = scratch.data();
    T* pre = a + Dp;
    for (int64_t s = begin; s < end; ++s) {
      const Head<T> p = head_of(f.Rq, f.Rk, f.Rv, f.rb, s % d.H, D);
      T* W = f.W_last ? f.W_last + s * D * D : pre + Dp + 4 * D;
      if (f.W0) std::memcpy(W, f.W0 + s * D * D, sizeof(T) * D * D);
      else std::fill(W, W + D * D, T(0));
      const T* y_prev = f.y0 ? f.y0 + s * D : nullptr;  // null: zeros
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = t * S + s;
        T* q = f.q ? f.q + row * D : pre + Dp;
        T* k = f.k ? f.k + row * D : pre + Dp + D;
        T* v = f.v ? f.v + row * D : pre + Dp + 2 * D;
        T* vbar = f.vbar ? f.vbar + row * D : pre + Dp + 3 * D;
        tanh_of(y_prev, a, D, Dp);
        const T b =
            slow_net(p, f.qx + row * D, f.kx + row * D, f.vx + row * D, f.bx[row], a, pre, q, k, v, D, Dp);
        if (f.beta) f.beta[row] = b;
        T* yt = f.y + row * D;
        for (int64_t i = 0; i < D; ++i) {
          T* w = W + i * D;
          vbar[i] = dot(w, k, D);
          const T u = b * (v[i] - vbar[i]);
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) w[j] += u * k[j];
          yt[i] = dot(w, q, D);
        }
        y_prev = yt;
      }
      if (f.y_last) {
        T* out = f.y_last + s * D;
        if (y_prev) std::memcpy(out, y_prev, sizeof(T) * D);
        else std::fill(out, out + D, T(0));
      }
    }
  });
}

template <class T>
struct Backward {
  const T *g, *y, *y0, *Rq, *Rk, *Rv, *rb, *q, *k, *v, *beta, *vbar, *W_last;
  T *gqx, *gkx, *gvx, *gbx;
  T* partials;  // [S, 3·D·D + D]: each sequence's dRq, dRk, dRv, drb
};

template <class T>
void backward_sequences(const Backward<T>& f, const Dims& d) {
  const int64_t L = d.L, S = d.S, D = d.D, P = 3 * D * D + D;
  // Work per sequence and step: about seven passes over W and G, six over the parameters.
  parallel_for(S, 13 * L * D * D, [&](int64_t begin, int64_t end) {
    const int64_t Dp = padded<T>(D);
    std::vector<T> W(D * D), G(D * D), vec(7 * D);
    AlignedBuffer<T> a_buffer(Dp);
    T* a = a_buffer.data();
    T* e = vec.data();  // dL/dy_t from the steps after t
    T* gh = e + D;      // ĝ
    T* dq = gh + D;
    T* dk = dq + D;
    T* u = dk + D;
    T* c = u + D;
    T* da = c + D;
    for (int64_t s = begin; s < end; ++s) {
      const Head<T> p = head_of(f.Rq, f.Rk, f.Rv, f.rb, s % d.H, D);
      T* dRq = f.partials + s * P;
      T* dRk = dRq + D * D;
      T* dRv = dRk + D * D;
      T* drb = dRv + D * D;
      std::fill(dRq, dRq + P, T(0));
      std::memcpy(W.data(), f.W_last + s * D * D, sizeof(T) * D * D);
      std::fill(G.begin(), G.end(), T(0));
      std::fill(e, e + D, T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t row = t * S + s;
        const T *q = f.q + row * D, *k = f.k + row * D, *v = f.v + row * D, *vbar = f.vbar + row * D;
        const T b = f.beta[row];
        const T* y_prev = t > 0 ? f.y + (row - S) * D : (f.y0 ? f.y0 + s * D : nullptr);
        tanh_of(y_prev, a, D, Dp);
        for (int64_t i = 0; i < D; ++i) gh[i] = f.g[row * D + i] + e[i];

        // The read-out y_t = W_t q_t, and the write W_t = W_{t-1} + u kᵀ.
        std::fill(dq, dq + D, T(0));
        std::fill(dk, dk + D, T(0));
        T dbeta = 0;
        T* dv = f.gvx + row * D;  // dvx = dv
        for (int64_t i = 0; i < D; ++i) {
          T* gr = G.data() + i * D;
          const T* w = W.data() + i * D;
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) {
            gr[j] += gh[i] * q[j];
            dq[j] += gh[i] * w[j];
          }
          const T du = dot(gr, k, D);
          const T diff = v[i] - vbar[i];
          u[i] = b * diff;  // the forward's expression: the same bits
          c[i] = -b * du;
          dv[i] = b * du;
          dbeta += diff * du;
        }
        // dk from the write, W back to W_{t-1}, dk from the read vbar = W_{t-1} k, G to dL/dW_{t-1}.
        for (int64_t i = 0; i < D; ++i) {
          T* gr = G.data() + i * D;
          T* w = W.data() + i * D;
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) {
            dk[j] += u[i] * gr[j];
            const T wn = w[j] - u[i] * k[j];
            w[j] = wn;
            dk[j] += c[i] * wn;
            gr[j] += c[i] * k[j];
          }
        }

        // Through the slow net: the softmaxes, the sigmoid, the products with a.
        T* dqx = f.gqx + row * D;
        T* dkx = f.gkx + row * D;
        softmax_backward(q, dq, dqx, D);
        softmax_backward(k, dk, dkx, D);
        const T dbx = dbeta * b * (T(1) - b);
        f.gbx[row] = dbx;
        std::fill(da, da + D, T(0));
        for (int64_t i = 0; i < D; ++i) {
          T *rq = dRq + i * D, *rk = dRk + i * D, *rv = dRv + i * D;
          const T *Rq = p.Rq + i * D, *Rk = p.Rk + i * D, *Rv = p.Rv + i * D;
          const T gq = dqx[i], gk = dkx[i], gv = dv[i];
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) {
            rq[j] += gq * a[j];
            rk[j] += gk * a[j];
            rv[j] += gv * a[j];
            da[j] += Rq[j] * gq + Rk[j] * gk + Rv[j] * gv;
          }
        }
        for (int64_t j = 0; j < D; ++j) {
          drb[j] += dbx * a[j];
          e[j] = (da[j] + p.rb[j] * dbx) * (T(1) - a[j] * a[j]);
        }
      }
    }
  });
}

// grad[h] = Σ_b partials[b·H + h], b in order: the same sums for any thread count.
template <class T>
void reduce_heads(const T* partials, T* gRq, T* gRk, T* gRv, T* grb, int64_t B, const Dims& d) {
  const int64_t H = d.H, D = d.D, P = 3 * D * D + D;
  parallel_for(H * P, B, [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t h = idx / P, x = idx % P;
      T sum = 0;
      for (int64_t b = 0; b < B; ++b) sum += partials[(b * H + h) * P + x];
      if (x < D * D) gRq[h * D * D + x] = sum;
      else if (x < 2 * D * D) gRk[h * D * D + x - D * D] = sum;
      else if (x < 3 * D * D) gRv[h * D * D + x - 2 * D * D] = sum;
      else grb[h * D + x - 3 * D * D] = sum;
    }
  });
}

}  // namespace

void CpuBackend::recurrent_delta_net(const Tensor& qx, const Tensor& kx, const Tensor& vx, const Tensor& bx,
                                     const Tensor& Rq, const Tensor& Rk, const Tensor& Rv, const Tensor& rb,
                                     const Tensor& initial_W, const Tensor& initial_y, const Tensor& out,
                                     const Tensor& final_W, const Tensor& final_y, const Tensor& q, const Tensor& k,
                                     const Tensor& v, const Tensor& beta, const Tensor& vbar) {
  dispatch_float(qx.dtype(), "recurrent_delta_net", [&](auto zero) {
    using T = decltype(zero);
    const Tensor qc = dense(qx), kc = dense(kx), vc = dense(vx), bc = dense(bx), rq = dense(Rq), rk = dense(Rk),
                 rv = dense(Rv), rbc = dense(rb), w0 = dense(initial_W), y0 = dense(initial_y);
    const Forward<T> f{qc.data<T>(), kc.data<T>(), vc.data<T>(), bc.data<T>(),
                       rq.data<T>(), rk.data<T>(), rv.data<T>(), rbc.data<T>(),
                       data_or_null<const T>(w0), data_or_null<const T>(y0), out.data<T>(),
                       data_or_null<T>(final_W), data_or_null<T>(final_y), data_or_null<T>(q),
                       data_or_null<T>(k), data_or_null<T>(v), data_or_null<T>(beta), data_or_null<T>(vbar)};
    forward_sequences<T>(f, dims_of(qx));
  });
}

void CpuBackend::recurrent_delta_net_backward(const Tensor& grad_out, const Tensor& y, const Tensor& initial_y,
                                              const Tensor& Rq, const Tensor& Rk, const Tensor& Rv, const Tensor& rb,
                                              const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                                              const Tensor& vbar, const Tensor& final_W, const Tensor& grad_qx,
                                              const Tensor& grad_kx, const Tensor& grad_vx, const Tensor& grad_bx,
                                              const Tensor& grad_Rq, const Tensor& grad_Rk, const Tensor& grad_Rv,
                                              const Tensor& grad_rb) {
  dispatch_float(y.dtype(), "recurrent_delta_net_backward", [&](auto zero) {
    using T = decltype(zero);
    const Dims d = dims_of(y);
    const int64_t B = y.size(1), D = d.D;
    const Tensor g = dense(grad_out), yc = dense(y), y0 = dense(initial_y), rq = dense(Rq), rk = dense(Rk),
                 rv = dense(Rv), rbc = dense(rb), qc = dense(q), kc = dense(k), vc = dense(v), bc = dense(beta),
                 vb = dense(vbar), wl = dense(final_W);
    std::vector<T> partials(d.S * (3 * D * D + D));
    const Backward<T> f{g.data<T>(),  yc.data<T>(),  data_or_null<const T>(y0), rq.data<T>(), rk.data<T>(),
                        rv.data<T>(), rbc.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(),
                        bc.data<T>(), vb.data<T>(),  wl.data<T>(), grad_qx.data<T>(), grad_kx.data<T>(),
                        grad_vx.data<T>(), grad_bx.data<T>(), partials.data()};
    backward_sequences<T>(f, d);
    reduce_heads<T>(partials.data(), grad_Rq.data<T>(), grad_Rk.data<T>(), grad_Rv.data<T>(), grad_rb.data<T>(), B, d);
  });
}

}  // namespace loom
