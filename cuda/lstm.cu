// lstm.cu: CUDA kernels of the LSTM recurrence (engine/kernels/lstm.h holds the
// arguments and the cell math, shared with engine/cpu/lstm.cpp).
//
// A host loop over the steps; per step one cuBLAS product through the backend's
// matmul (its handle and stream, linalg.cu) and one pointwise kernel, a thread
// per element (b, j) calling the spec's cell functions:
//   forward:  rec = h_{t−1} W_hhᵀ [B, 4H];  cells(gates_x[t] + rec, c_{t−1}) → gates, c_t, h_t
//   backward: cells' backward(grad_h[t] + dh_rec, dc) → dG_t, dc;  dh_rec = dG_t W_hh [B, H]
// and after the sweep dW_hh = (dG_2 … dG_L)ᵀ (h_1 … h_{L−1}), one product.
// Every output element is written by one thread and cuBLAS sums in a fixed
// order, so a run gives the same bits every time.
#include <type_traits>

#include "cuda/block.cuh"
#include "cuda/cuda_backend.h"
#include "engine/kernels/lstm.h"

namespace loom::cuda {

namespace {

// One step's cells: gx, rec, gates [B, 4H] (rec undefined at t = 1: h_0 = 0;
// gates undefined when no backward follows), c_prev (undefined: c_0 = 0), c, h [B, H].
template <class T>
__global__ void lstm_step_kernel(const T* gx, const T* rec, const T* c_prev, T* c, T* h, T* gates, int64_t B,
                                 int64_t H) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < B * H;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = e / H, j = e - b * H, row = b * 4 * H;
    T a[4];
    for (int64_t q = 0; q < 4; ++q) {
      const int64_t col = row + lstm_cell::column(q, j, H);
      a[q] = gx[col] + (rec ? rec[col] : T(0));
    }
    const lstm_cell::Step<T> s = lstm_cell::forward(a[0], a[1], a[2], a[3], c_prev ? c_prev[e] : T(0));
    c[e] = s.c;
    h[e] = s.h;
    if (gates) {
      gates[row + lstm_cell::column(0, j, H)] = s.z.i;
      gates[row + lstm_cell::column(1, j, H)] = s.z.f;
      gates[row + lstm_cell::column(2, j, H)] = s.z.g;
      gates[row + lstm_cell::column(3, j, H)] = s.z.o;
    }
  }
}

// One step's cells backward: grad_h, c, dc (in: from step t+1, out: to step t−1)
// [B, H]; dh_rec [B, H] (undefined at the last step); c_prev (undefined: c_0 = 0);
// gates, dG [B, 4H].
template <class T>
__global__ void lstm_step_backward_kernel(const T* grad_h, const T* dh_rec, const T* gates, const T* c_prev,
                                          const T* c, T* dc, T* dG, int64_t B, int64_t H) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < B * H;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = e / H, j = e - b * H, row = b * 4 * H;
    const lstm_cell::Gates<T> z{gates[row + lstm_cell::column(0, j, H)], gates[row + lstm_cell::column(1, j, H)],
                           gates[row + lstm_cell::column(2, j, H)], gates[row + lstm_cell::column(3, j, H)]};
    const lstm_cell::CellGrads<T> r =
        lstm_cell::backward(z, c_prev ? c_prev[e] : T(0), c[e], grad_h[e] + (dh_rec ? dh_rec[e] : T(0)), dc[e]);
    dG[row + lstm_cell::column(0, j, H)] = r.da.i;
    dG[row + lstm_cell::column(1, j, H)] = r.da.f;
    dG[row + lstm_cell::column(2, j, H)] = r.da.g;
    dG[row + lstm_cell::column(3, j, H)] = r.da.o;
    dc[e] = r.dc_prev;
  }
}

// Step t of a contiguous [L, B, n] tensor as a [B, n] view.
Tensor step(const Tensor& t, int64_t index) {
  const int64_t B = t.size(1), n = t.size(2);
  return t.as_strided({B, n}, {n, 1}, t.offset() + index * B * n);
}

// A step's data pointer, or nullptr for an undefined tensor or a step outside [0, L).
template <class T>
T* step_data(const Tensor& t, int64_t index) {
  if (!t.defined() || index < 0 || index >= t.size(0)) return nullptr;
  return t.data<std::remove_const_t<T>>() + index * t.size(1) * t.size(2);
}

}  // namespace

void CudaBackend::lstm(const LstmArgs& args) {
  const lstm_cell::Dims d = lstm_cell::dims_of(args.gates_x);
  if (d.L * d.B * d.H == 0) return;
  const Tensor& w = args.weight_hh;
  const Tensor w_t = w.as_strided({d.H, 4 * d.H}, {1, d.H}, w.offset());  // W_hhᵀ, read in place
  const Tensor rec = Tensor::empty({d.B, 4 * d.H}, w.dtype(), w.device());
  dispatch_float(w.dtype(), "lstm", [&](auto zero) {
    using T = decltype(zero);
    for (int64_t t = 0; t < d.L; ++t) {
      if (t > 0) matmul(step(args.h, t - 1), w_t, rec);
      lstm_step_kernel<T><<<grid_for(d.B * d.H), kBlockThreads, 0, stream()>>>(
          step_data<const T>(args.gates_x, t), t > 0 ? rec.data<T>() : nullptr, step_data<T>(args.cell, t - 1),
          step_data<T>(args.cell, t), step_data<T>(args.h, t), step_data<T>(args.gates, t), d.B, d.H);
      LOOM_CUDA_CHECK_LAUNCH("lstm");
    }
  });
}

void CudaBackend::lstm_backward(const LstmBackwardArgs& args) {
  const lstm_cell::Dims d = lstm_cell::dims_of(args.gates);
  const Tensor& w = args.weight_hh;
  if (d.L * d.B * d.H > 0) {
    const Tensor dh_rec = Tensor::empty({d.B, d.H}, w.dtype(), w.device());
    const Tensor dc = Tensor::empty({d.B, d.H}, w.dtype(), w.device());
    fill(dc, 0.0);
    dispatch_float(w.dtype(), "lstm_backward", [&](auto zero) {
      using T = decltype(zero);
      for (int64_t t = d.L - 1; t >= 0; --t) {
        lstm_step_backward_kernel<T><<<grid_for(d.B * d.H), kBlockThreads, 0, stream()>>>(
            step_data<const T>(args.grad_h, t), t + 1 < d.L ? dh_rec.data<T>() : nullptr,
            step_data<const T>(args.gates, t), step_data<const T>(args.cell, t - 1), step_data<const T>(args.cell, t),
            dc.data<T>(), step_data<T>(args.grad_gates_x, t), d.B, d.H);
        LOOM_CUDA_CHECK_LAUNCH("lstm_backward");
        if (t > 0) matmul(step(args.grad_gates_x, t), w, dh_rec);
      }
    });
  }
  if (!args.grad_weight_hh.defined()) return;
  if (d.L < 2 || d.B == 0) {
    fill(args.grad_weight_hh, 0.0);
    return;
  }
  // (dG_2 … dG_L)ᵀ [4H, (L−1)B] as a transposed view, times (h_1 … h_{L−1}) [(L−1)B, H].
  const int64_t K = (d.L - 1) * d.B, G = 4 * d.H;
  const Tensor& dG = args.grad_gates_x;
  matmul(dG.as_strided({G, K}, {1, G}, dG.offset() + d.B * G), args.h.as_strided({K, d.H}, {d.H, 1}, args.h.offset()),
         args.grad_weight_hh);
}

}  // namespace loom::cuda
