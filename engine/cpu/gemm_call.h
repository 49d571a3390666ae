// gemm_call.h: one matrix product on the library the CPU backend uses for its
// matmuls (engine/gemm_library.h: OpenBLAS where its kernels fit, else Eigen),
// for kernels that compute products of their own inside a parallel region (the
// LSTM's dW_hh). matmul itself goes through the same call
// (engine/cpu/linalg.cpp), so a kernel's products round as matmul's do.
#pragma once

#include <cstdint>

namespace loom::cpu {

// A matrix read in place: row-major (element (r, c) at data[r·leading + c]) or
// column-major (data[r + c·leading]).
template <class T>
struct MatrixIn {
  const T* data;
  int64_t rows, cols;
  bool row_major;
  int64_t leading;
};

// out = a·b, or out += a·b when `accumulate`, with out row-major [a.rows, b.cols]
// and leading dimension ldo: one single-threaded call (inside a parallel region
// neither library threads; outside one, Eigen may). a.cols must equal b.rows.
template <class T>
void gemm_call(const MatrixIn<T>& a, const MatrixIn<T>& b, T* out, int64_t ldo, bool accumulate);

}  // namespace loom::cpu
