// lstm.cpp: CPU kernels of the LSTM recurrence (engine/kernels/lstm.h holds the
// arguments and the cell math, shared with cuda/lstm.cu).
//
// Time is sequential; inside a step the hidden units are cut into tiles of
// kTileUnits, one task each (OpenMP over tiles, one parallel region per step).
// A tile needs only its own columns of the step's product, so each task does
// its product and its cells with no synchronisation between them:
//   forward:  a[:, tile's 4 gates] = h_{t−1} · (W_hh's rows of the tile)ᵀ,
//             one GEMM [B, H] × [H, 4·w] against W_hh's rows regrouped per tile
//             (packed once per call), then the cells of the tile's units;
//   backward: dh[:, tile] = dG_{t+1} · W_hh[:, tile], one GEMM [B, 4H] × [4H, w],
//             then the cells' backward, which write dG_t's columns of the tile.
// dW_hh = Σ_t dG_tᵀ h_{t−1} is one product over all steps after the sweep, cut
// into tiles of kWeightRows rows of W_hh.
//
// The results do not depend on the thread count: the tiles are fixed by the
// sizes alone, every product runs on single-threaded Eigen inside a parallel
// region (Eigen threads a product only outside one), and no sum is split
// between threads.
#include "engine/cpu/eigen.h"

#include <algorithm>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_clock.h"
#include "engine/kernels/lstm.h"

namespace loom {

namespace {

// Hidden units per task; 8 tasks per step at H = 256.
constexpr int64_t kTileUnits = 32;
// Rows of dW_hh per task.
constexpr int64_t kWeightRows = 64;

template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ColMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
template <class T>
using ConstRowMap = Eigen::Map<const RowMajor<T>, 0, Eigen::OuterStride<>>;
template <class T>
using ConstColMap = Eigen::Map<const ColMajor<T>, 0, Eigen::OuterStride<>>;
template <class T>
using OutMap = Eigen::Map<RowMajor<T>, 0, Eigen::OuterStride<>>;

// Hidden units [first, first + width) of tile k.
struct Tile {
  int64_t first, width;
};
Tile tile(int64_t k, int64_t H) { return {k * kTileUnits, std::min(kTileUnits, H - k * kTileUnits)}; }
int64_t tile_count(int64_t H) { return (H + kTileUnits - 1) / kTileUnits; }

// body(k) for k in [0, n), inside a parallel region even when n is 1, so that
// Eigen never threads a product itself (see the file comment).
template <class Body>
void for_each_task(int64_t n, Body&& body) {
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < n; ++k) body(k);
}

// W_hh's rows regrouped per tile: tile k's rows, gate by gate (i rows of its
// units, then f, g, o), start at row 4·first, so its product is one GEMM.
template <class T>
std::vector<T> pack_per_tile(const T* w, int64_t H) {
  std::vector<T> packed(4 * H * H);
  for (int64_t k = 0; k < tile_count(H); ++k) {
    const Tile tl = tile(k, H);
    for (int64_t q = 0; q < 4; ++q)
      for (int64_t u = 0; u < tl.width; ++u)
        std::copy_n(w + lstm_cell::column(q, tl.first + u, H) * H, H,
                    packed.data() + (4 * tl.first + q * tl.width + u) * H);
  }
  return packed;
}

template <class T>
void forward(const T* gates_x, const T* w, T* h, T* cell, T* gates, lstm_cell::Dims d) {
  const int64_t B = d.B, H = d.H, G = 4 * H;
  const std::vector<T> packed = pack_per_tile(w, H);
  for (int64_t t = 0; t < d.L; ++t) {
    const T* gx = gates_x + t * B * G;
    const T* h_prev = t > 0 ? h + (t - 1) * B * H : nullptr;  // h_0 = c_0 = 0
    const T* c_prev = t > 0 ? cell + (t - 1) * B * H : nullptr;
    for_each_task(tile_count(H), [&](int64_t k) {
      const Tile tl = tile(k, H);
      const int64_t w4 = 4 * tl.width;
      // The recurrent half of the tile's pre-activations (zero at t = 0: h_0 = 0).
      std::vector<T> rec(B * w4, T(0));
      if (h_prev && H > 0) {
        OutMap<T> out(rec.data(), B, w4, Eigen::OuterStride<>(w4));
        out.noalias() = ConstRowMap<T>(h_prev, B, H, Eigen::OuterStride<>(H)) *
                        ConstColMap<T>(packed.data() + 4 * tl.first * H, H, w4, Eigen::OuterStride<>(H));
      }
      for (int64_t b = 0; b < B; ++b) {
        const T* r = rec.data() + b * w4;
        for (int64_t u = 0; u < tl.width; ++u) {
          const int64_t j = tl.first + u;
          const T* a = gx + b * G;
          const lstm_cell::Step<T> s = lstm_cell::forward(a[lstm_cell::column(0, j, H)] + r[u], a[lstm_cell::column(1, j, H)] + r[tl.width + u],
                                               a[lstm_cell::column(2, j, H)] + r[2 * tl.width + u],
                                               a[lstm_cell::column(3, j, H)] + r[3 * tl.width + u],
                                               c_prev ? c_prev[b * H + j] : T(0));
          const int64_t e = (t * B + b) * H + j;
          cell[e] = s.c;
          h[e] = s.h;
          if (gates) {
            T* z = gates + (t * B + b) * G;
            z[lstm_cell::column(0, j, H)] = s.z.i;
            z[lstm_cell::column(1, j, H)] = s.z.f;
            z[lstm_cell::column(2, j, H)] = s.z.g;
            z[lstm_cell::column(3, j, H)] = s.z.o;
          }
        }
      }
    });
  }
}

template <class T>
void backward(const T* grad_h, const T* w, const T* h, const T* cell, const T* gates, T* grad_gates, T* grad_w,
              lstm_cell::Dims d) {
  const int64_t L = d.L, B = d.B, H = d.H, G = 4 * H;
  std::vector<T> dc(B * H, T(0));  // dL/dc_t from step t+1; each task owns its tile's columns
  for (int64_t t = L - 1; t >= 0; --t) {
    const T* dG_next = t + 1 < L ? grad_gates + (t + 1) * B * G : nullptr;
    for_each_task(tile_count(H), [&](int64_t k) {
      const Tile tl = tile(k, H);
      // dL/dh_t through step t+1's gates (zero after the last step).
      std::vector<T> dh_rec(B * tl.width, T(0));
      if (dG_next && H > 0) {
        OutMap<T> out(dh_rec.data(), B, tl.width, Eigen::OuterStride<>(tl.width));
        out.noalias() = ConstRowMap<T>(dG_next, B, G, Eigen::OuterStride<>(G)) *
                        ConstRowMap<T>(w + tl.first, G, tl.width, Eigen::OuterStride<>(H));
      }
      for (int64_t b = 0; b < B; ++b) {
        const T* z = gates + (t * B + b) * G;
        T* dG = grad_gates + (t * B + b) * G;
        for (int64_t u = 0; u < tl.width; ++u) {
          const int64_t j = tl.first + u, e = (t * B + b) * H + j;
          const lstm_cell::Gates<T> zj{z[lstm_cell::column(0, j, H)], z[lstm_cell::column(1, j, H)], z[lstm_cell::column(2, j, H)],
                                  z[lstm_cell::column(3, j, H)]};
          const T c_prev = t > 0 ? cell[e - B * H] : T(0);
          const lstm_cell::CellGrads<T> r =
              lstm_cell::backward(zj, c_prev, cell[e], grad_h[e] + dh_rec[b * tl.width + u], dc[b * H + j]);
          dG[lstm_cell::column(0, j, H)] = r.da.i;
          dG[lstm_cell::column(1, j, H)] = r.da.f;
          dG[lstm_cell::column(2, j, H)] = r.da.g;
          dG[lstm_cell::column(3, j, H)] = r.da.o;
          dc[b * H + j] = r.dc_prev;
        }
      }
    });
  }
  if (!grad_w) return;
  // dW_hh[rows] = (dG_2 … dG_L)[:, rows]ᵀ · (h_1 … h_{L−1}): K = (L − 1)·B.
  const int64_t K = L > 1 ? (L - 1) * B : 0;
  for_each_task((G + kWeightRows - 1) / kWeightRows, [&](int64_t k) {
    const int64_t first = k * kWeightRows, rows = std::min(kWeightRows, G - first);
    OutMap<T> out(grad_w + first * H, rows, H, Eigen::OuterStride<>(H));
    if (K == 0) {
      out.setZero();
      return;
    }
    out.noalias() = ConstColMap<T>(grad_gates + B * G + first, rows, K, Eigen::OuterStride<>(G)) *
                    ConstRowMap<T>(h, K, H, Eigen::OuterStride<>(H));
  });
}

}  // namespace

void CpuBackend::lstm(const LstmArgs& args) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(args.gates_x.dtype(), "lstm", [&](auto zero) {
    using T = decltype(zero);
    forward<T>(args.gates_x.data<T>(), args.weight_hh.data<T>(), args.h.data<T>(), args.cell.data<T>(),
               data_or_null<T>(args.gates), lstm_cell::dims_of(args.gates_x));
  });
}

void CpuBackend::lstm_backward(const LstmBackwardArgs& args) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(args.gates.dtype(), "lstm_backward", [&](auto zero) {
    using T = decltype(zero);
    backward<T>(args.grad_h.data<T>(), args.weight_hh.data<T>(), args.h.data<T>(), args.cell.data<T>(),
                args.gates.data<T>(), args.grad_gates_x.data<T>(), data_or_null<T>(args.grad_weight_hh),
                lstm_cell::dims_of(args.gates));
  });
}

}  // namespace loom
