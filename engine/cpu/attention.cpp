// attention.cpp: CPU kernels of fused scaled dot-product attention.
//
// Work is split over (batch, head) pairs, one pair per thread at a time. For a
// pair, q, k, v are [L, D] matrices read in place (row stride = the tensor's
// stride on axis 0) and the queries are processed in blocks of kBlockRows rows:
//
//   forward   S = scale · Q_blk Kᵀ             (GEMM)
//             P = softmax(S) per row, masked keys set to 0; lse = logsumexp(S)
//             P ∘= dropout factors              (regenerated from Philox counters)
//             O_blk = P V                      (GEMM)
//   backward  P = exp(scale · Q_blk Kᵀ - lse)  (rebuilt, not stored)
//             dPd = dO_blk Vᵀ;  Pd = P ∘ F;  dP = dPd ∘ F   (F: dropout factors, or 1)
//             dV += Pdᵀ dO_blk
//             dS = P ∘ (dP - rowsum(dP ∘ P))
//             dQ_blk = scale · dS K;  dK += scale · dSᵀ Q_blk
//
// With the causal mask, a block of queries only reaches the keys up to its last
// row's position, so the GEMMs skip the keys no row of the block can see: for
// Lq = Lk that is close to half the work.
#include "engine/cpu/eigen.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_clock.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/philox_lanes.h"
#include "engine/random.h"

namespace loom {

namespace {

using Args = Backend::AttentionArgs;

// Query rows per block: big enough for efficient GEMMs, small enough that the
// [rows, Lk] scratch matrices stay in cache.
constexpr int64_t kBlockRows = 64;

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMap = Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using MutMap = Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using RowArray = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

// The geometry shared by the forward and the backward.
struct Shape4 {
  int64_t Lq, Lk, B, H, D, Dv;
  // Keys query row i may see: all, or those up to its position Lk - Lq + i.
  int64_t visible(bool causal, int64_t i) const { return causal ? Lk - Lq + i + 1 : Lk; }
};

Shape4 shape_of(const Tensor& q, const Tensor& k, const Tensor& v) {
  return {q.size(0), k.size(0), q.size(1), q.size(2), q.size(3), v.size(3)};
}

// A [rows, cols] matrix of a (batch, head) pair of a [L, B, H, cols] tensor.
template <class T>
ConstMap<T> pair_matrix(const Tensor& t, int64_t b, int64_t h, int64_t row0, int64_t rows) {
  const Strides& s = t.strides();
  const T* p = t.data<T>() + b * s[1] + h * s[2] + row0 * s[0];
  return ConstMap<T>(p, rows, t.size(3), Eigen::OuterStride<>(s[0]));
}
template <class T>
MutMap<T> pair_matrix_mut(const Tensor& t, int64_t b, int64_t h, int64_t row0, int64_t rows) {
  const Strides& s = t.strides();
  T* p = t.data<T>() + b * s[1] + h * s[2] + row0 * s[0];
  return MutMap<T>(p, rows, t.size(3), Eigen::OuterStride<>(s[0]));
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
  const uint64_t threshold = dropout_keep_threshold(keep);
  const T kept = static_cast<T>(1.0 / keep);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) f[j] = dropout_factor(bits[j], threshold, kept);
}

// Flat index of probability (b, h, i, 0): the dropout counter layout.
uint64_t prob_index(const Shape4& g, int64_t b, int64_t h, int64_t i) {
  return static_cast<uint64_t>(((b * g.H + h) * g.Lq + i) * g.Lk);
}

template <class T>
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Args& a, const Tensor& out,
                       const Tensor& lse) {
  const Shape4 g = shape_of(q, k, v);
  const bool dropout = a.dropout_p > 0;
  T* lse_data = lse.data<T>();
  const int64_t cost = g.Lq * g.Lk * (g.D + g.Dv + 4);
  cpu::parallel_for(g.B * g.H, cost, [&](int64_t p0, int64_t p1) {
    Mat<T> S(std::min(g.Lq, kBlockRows), g.Lk);  // scores, then probabilities
    std::vector<T> factors(dropout ? g.Lk : 0);
    std::vector<uint32_t> words;
    for (int64_t pair = p0; pair < p1; ++pair) {
      const int64_t b = pair / g.H, h = pair % g.H;
      const ConstMap<T> K = pair_matrix<T>(k, b, h, 0, g.Lk), V = pair_matrix<T>(v, b, h, 0, g.Lk);
      T* lse_row = lse_data + pair * g.Lq;
      for (int64_t i0 = 0; i0 < g.Lq; i0 += kBlockRows) {
        const int64_t rows = std::min(kBlockRows, g.Lq - i0);
        const int64_t keys = g.visible(a.causal, i0 + rows - 1);  // the block's last row sees the most
        auto Sb = S.topLeftCorner(rows, keys);
        Sb.noalias() = pair_matrix<T>(q, b, h, i0, rows) * K.topRows(keys).transpose();
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r, n = g.visible(a.causal, i);
          RowArray<T> x(&Sb(r, 0), n);
          x *= static_cast<T>(a.scale);
          const T m = x.maxCoeff();
          x = (x - m).exp();
          double sum = 0.0;
          for (int64_t j = 0; j < n; ++j) sum += x[j];
          lse_row[i] = static_cast<T>(m + std::log(sum));
          x *= static_cast<T>(1.0 / sum);
          for (int64_t j = n; j < keys; ++j) Sb(r, j) = T(0);  // masked keys
          if (dropout) {
            dropout_factors(factors.data(), n, prob_index(g, b, h, i), a, words);
            x *= RowArray<T>(factors.data(), n);
          }
        }
        pair_matrix_mut<T>(out, b, h, i0, rows).noalias() = Sb * V.topRows(keys);
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
    const int64_t block = std::min(g.Lq, kBlockRows);
    Mat<T> P(block, g.Lk), dP(block, g.Lk), Pd(dropout ? block : 0, g.Lk);
    std::vector<T> factors(dropout ? g.Lk : 0);
    std::vector<uint32_t> words;
    for (int64_t pair = p0; pair < p1; ++pair) {
      const int64_t b = pair / g.H, h = pair % g.H;
      const ConstMap<T> K = pair_matrix<T>(k, b, h, 0, g.Lk), V = pair_matrix<T>(v, b, h, 0, g.Lk);
      MutMap<T> dK = pair_matrix_mut<T>(grad_k, b, h, 0, g.Lk), dV = pair_matrix_mut<T>(grad_v, b, h, 0, g.Lk);
      dK.setZero();
      dV.setZero();
      const T* lse_row = lse_data + pair * g.Lq;
      for (int64_t i0 = 0; i0 < g.Lq; i0 += kBlockRows) {
        const int64_t rows = std::min(kBlockRows, g.Lq - i0);
        const int64_t keys = g.visible(a.causal, i0 + rows - 1);
        const ConstMap<T> Qb = pair_matrix<T>(q, b, h, i0, rows), dOb = pair_matrix<T>(grad_out, b, h, i0, rows);
        auto Pb = P.topLeftCorner(rows, keys);
        auto dPb = dP.topLeftCorner(rows, keys);
        Pb.noalias() = Qb * K.topRows(keys).transpose();
        dPb.noalias() = dOb * V.topRows(keys).transpose();  // gradient of the dropped probabilities
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r, n = g.visible(a.causal, i);
          RowArray<T> p(&Pb(r, 0), n), dp(&dPb(r, 0), n);
          p = (p * scale - lse_row[i]).exp();
          for (int64_t j = n; j < keys; ++j) Pb(r, j) = T(0);
          if (dropout) {
            dropout_factors(factors.data(), n, prob_index(g, b, h, i), a, words);
            const RowArray<T> f(factors.data(), n);
            RowArray<T>(&Pd(r, 0), n) = p * f;
            for (int64_t j = n; j < keys; ++j) Pd(r, j) = T(0);
            dp *= f;
          }
          // dS = P ∘ (dP - sum_j dP_j P_j); masked entries have P = 0, so dS = 0 there.
          double dot = 0.0;
          for (int64_t j = 0; j < n; ++j) dot += static_cast<double>(dp[j]) * p[j];
          dp = p * (dp - static_cast<T>(dot));
          for (int64_t j = n; j < keys; ++j) dPb(r, j) = T(0);
        }
        if (dropout) dV.topRows(keys).noalias() += Pd.topLeftCorner(rows, keys).transpose() * dOb;
        else dV.topRows(keys).noalias() += Pb.transpose() * dOb;
        pair_matrix_mut<T>(grad_q, b, h, i0, rows).noalias() = (dPb * K.topRows(keys)) * scale;
        dK.topRows(keys).noalias() += (dPb.transpose() * Qb) * scale;
      }
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
