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
// The steps' products read W_hh packed once per call into each tile's panels
// (engine/cpu/panel_matmul.h), forward and backward, where a library call would
// pack the tile's rows again at every step; dW_hh's products are single-threaded
// calls of the library matmul uses (engine/cpu/gemm_call.h). The results do not
// depend on the thread count: the tiles are fixed by the sizes alone, each
// product is computed inside one task (neither library threads there), and no
// sum is split between threads.
#include <algorithm>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/gemm_call.h"
#include "engine/cpu/panel_matmul.h"
#include "engine/kernel_clock.h"
#include "engine/kernels/lstm.h"

namespace loom {

namespace {

// Hidden units per task; 8 tasks per step at H = 256.
constexpr int64_t kTileUnits = 32;
// Rows of dW_hh per task.
constexpr int64_t kWeightRows = 64;

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

// Every tile's operand of the steps' products, packed into panels once per call:
// operand(tile) is the tile's [K, N] matrix; tile k's panels start at offset[k].
template <class T>
struct TilePanels {
  std::vector<T> data;
  std::vector<int64_t> offset, columns;
  template <class Operand>
  TilePanels(int64_t tiles, int64_t K, Operand&& operand) : offset(tiles), columns(tiles) {
    int64_t total = 0;
    for (int64_t k = 0; k < tiles; ++k) {
      offset[k] = total;
      columns[k] = operand(k).cols;
      total += cpu::panel_count<T>(columns[k]) * K * cpu::panel_width<T>();
    }
    data.resize(static_cast<size_t>(total));
    for (int64_t k = 0; k < tiles; ++k) cpu::pack_panels(operand(k), data.data() + offset[k], 0, cpu::panel_count<T>(columns[k]));
  }
  // out [a.rows, N] = a · tile k's operand.
  void product(int64_t k, const cpu::MatrixIn<T>& a, T* out) const {
    cpu::panel_matmul(a, data.data() + offset[k], columns[k], out, columns[k], false, 0,
                      cpu::panel_count<T>(columns[k]));
  }
};

template <class T>
void forward(const T* gates_x, const T* w, T* h, T* cell, T* gates, lstm_cell::Dims d) {
  const int64_t B = d.B, H = d.H, G = 4 * H;
  const std::vector<T> regrouped = pack_per_tile(w, H);
  const TilePanels<T> panels(tile_count(H), H, [&](int64_t k) {
    const Tile tl = tile(k, H);
    return cpu::MatrixIn<T>{regrouped.data() + 4 * tl.first * H, H, 4 * tl.width, false, H};
  });
  const std::vector<T> zeros(B * H, T(0));  // h_0 = c_0 = 0
  for (int64_t t = 0; t < d.L; ++t) {
    const T* gx = gates_x + t * B * G;
    const T* h_prev = t > 0 ? h + (t - 1) * B * H : nullptr;
    const T* c_prev = t > 0 ? cell + (t - 1) * B * H : zeros.data();
    for_each_task(tile_count(H), [&](int64_t k) {
      const Tile tl = tile(k, H);
      const int64_t w4 = 4 * tl.width;
      // The recurrent half of the tile's pre-activations (zero at t = 0: h_0 = 0).
      std::vector<T> rec(B * w4, T(0));
      // Where the gates go when no backward will read them (one row, rewritten).
      std::vector<T> unkept_gates(gates ? 0 : G);
      if (h_prev && H > 0) panels.product(k, {h_prev, B, H, true, H}, rec.data());
      for (int64_t b = 0; b < B; ++b) {
        // The tile's units of row b: gate q's pre-activations, input and recurrent
        // halves, and where its results go (plain pointers, so the loop vectorizes).
        const int64_t n = tl.width, row = (t * B + b) * H + tl.first;
        const T* a = gx + b * G;
        const T* r = rec.data() + b * w4;
        const T *a_i = a + lstm_cell::column(0, tl.first, H), *a_f = a + lstm_cell::column(1, tl.first, H);
        const T *a_g = a + lstm_cell::column(2, tl.first, H), *a_o = a + lstm_cell::column(3, tl.first, H);
        const T* c_in = c_prev + b * H + tl.first;
        T *c_out = cell + row, *h_out = h + row;
        T* z = gates ? gates + (t * B + b) * G : unkept_gates.data();
        T *z_i = z + lstm_cell::column(0, tl.first, H), *z_f = z + lstm_cell::column(1, tl.first, H);
        T *z_g = z + lstm_cell::column(2, tl.first, H), *z_o = z + lstm_cell::column(3, tl.first, H);
        // One unit per SIMD lane: the cell math is branch-free (engine/vector_math.h).
#pragma omp simd
        for (int64_t u = 0; u < n; ++u) {
          const lstm_cell::Step<T> s = lstm_cell::forward(a_i[u] + r[u], a_f[u] + r[n + u], a_g[u] + r[2 * n + u],
                                                          a_o[u] + r[3 * n + u], c_in[u]);
          c_out[u] = s.c;
          h_out[u] = s.h;
          z_i[u] = s.z.i;
          z_f[u] = s.z.f;
          z_g[u] = s.z.g;
          z_o[u] = s.z.o;
        }
      }
    });
  }
}

template <class T>
void backward(const T* grad_h, const T* w, const T* h, const T* cell, const T* gates, T* grad_gates, T* grad_w,
              lstm_cell::Dims d) {
  const int64_t L = d.L, B = d.B, H = d.H, G = 4 * H;
  const TilePanels<T> panels(tile_count(H), G, [&](int64_t k) {
    const Tile tl = tile(k, H);
    return cpu::MatrixIn<T>{w + tl.first, G, tl.width, true, H};  // W_hh[:, tile]
  });
  std::vector<T> dc(B * H, T(0));  // dL/dc_t from step t+1; each task owns its tile's columns
  const std::vector<T> zeros(B * H, T(0));  // c_0 = 0
  for (int64_t t = L - 1; t >= 0; --t) {
    const T* dG_next = t + 1 < L ? grad_gates + (t + 1) * B * G : nullptr;
    const T* c_before = t > 0 ? cell + (t - 1) * B * H : zeros.data();  // c_{t−1}
    for_each_task(tile_count(H), [&](int64_t k) {
      const Tile tl = tile(k, H);
      // dL/dh_t through step t+1's gates (zero after the last step).
      std::vector<T> dh_rec(B * tl.width, T(0));
      if (dG_next && H > 0) panels.product(k, {dG_next, B, G, true, G}, dh_rec.data());
      for (int64_t b = 0; b < B; ++b) {
        // The tile's units of row b, as plain pointers (so the loop vectorizes).
        const int64_t n = tl.width, row = (t * B + b) * H + tl.first;
        const T* z = gates + (t * B + b) * G;
        T* dG = grad_gates + (t * B + b) * G;
        const T *z_i = z + lstm_cell::column(0, tl.first, H), *z_f = z + lstm_cell::column(1, tl.first, H);
        const T *z_g = z + lstm_cell::column(2, tl.first, H), *z_o = z + lstm_cell::column(3, tl.first, H);
        T *da_i = dG + lstm_cell::column(0, tl.first, H), *da_f = dG + lstm_cell::column(1, tl.first, H);
        T *da_g = dG + lstm_cell::column(2, tl.first, H), *da_o = dG + lstm_cell::column(3, tl.first, H);
        const T *c_in = c_before + b * H + tl.first, *c_out = cell + row, *dh_out = grad_h + row;
        const T* dh_next = dh_rec.data() + b * n;
        T* dc_row = dc.data() + b * H + tl.first;
#pragma omp simd
        for (int64_t u = 0; u < n; ++u) {
          const lstm_cell::CellGrads<T> r =
              lstm_cell::backward({z_i[u], z_f[u], z_g[u], z_o[u]}, c_in[u], c_out[u], dh_out[u] + dh_next[u], dc_row[u]);
          da_i[u] = r.da.i;
          da_f[u] = r.da.f;
          da_g[u] = r.da.g;
          da_o[u] = r.da.o;
          dc_row[u] = r.dc_prev;
        }
      }
    });
  }
  if (!grad_w) return;
  // dW_hh[rows] = (dG_2 … dG_L)[:, rows]ᵀ · (h_1 … h_{L−1}): K = (L − 1)·B.
  const int64_t K = L > 1 ? (L - 1) * B : 0;
  for_each_task((G + kWeightRows - 1) / kWeightRows, [&](int64_t k) {
    const int64_t first = k * kWeightRows, rows = std::min(kWeightRows, G - first);
    cpu::gemm_call<T>({grad_gates + B * G + first, rows, K, false, G}, {h, K, H, true, H}, grad_w + first * H, H,
                      false);
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
