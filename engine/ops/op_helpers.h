// op_helpers.h: argument checks and small utilities shared by the op files.
#pragma once

#include "engine/backend.h"
#include "engine/ops.h"
#include "engine/record.h"

namespace loom::detail {

inline void check_defined(const char* op, const Tensor& t, const char* what = "input") {
  LOOM_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
}

inline void check_float(const char* op, const Tensor& t) {
  check_defined(op, t);
  LOOM_CHECK(is_floating(t.dtype()), op, ": expected a floating-point tensor, got ", t.describe());
}

inline void check_index(const char* op, const Tensor& t) {
  check_defined(op, t, "index tensor");
  LOOM_CHECK(t.dtype() == DType::i64, op, ": expected an int64 index tensor, got ", t.describe());
}

// Same dtype and device, or an error naming both tensors.
inline void check_same(const char* op, const Tensor& a, const Tensor& b) {
  check_defined(op, a);
  check_defined(op, b);
  LOOM_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", a.describe(), " and ", b.describe());
  LOOM_CHECK(a.device() == b.device(), op, ": device mismatch: ", a.describe(), " and ", b.describe());
}

// A stride-0 view of t broadcast to `shape` (not recorded; for kernels).
inline Tensor broadcast_view(const Tensor& t, const Shape& shape) {
  const size_t n = shape.size(), k = t.shape().size();
  Strides strides(n, 0);
  for (size_t i = 0; i < k; ++i) {
    const size_t j = n - k + i;
    strides[j] = t.shape()[i] == 1 && shape[j] != 1 ? 0 : t.strides()[i];
  }
  return t.as_strided(shape, strides, t.offset());
}

// An operand of a fused op read beside a reference operand `ref` (named `ref_name`):
// defined, of ref's dtype and device, with `dims` axes (`layout` names them in the error).
inline void check_operand_like(const char* op, const Tensor& t, const char* what, const Tensor& ref,
                               const char* ref_name, int64_t dims, const char* layout) {
  check_defined(op, t, what);
  LOOM_CHECK(t.dtype() == ref.dtype(), op, ": ", what, " ", t.describe(), " does not match the dtype of ", ref_name,
             " ", ref.describe());
  LOOM_CHECK(t.device() == ref.device(), op, ": ", what, " ", t.describe(), " is not on the device of ", ref_name,
             " ", ref.describe());
  LOOM_CHECK(t.dim() == dims, op, ": ", what, " must be ", layout, ", got shape ", shape_str(t.shape()));
}

inline Tensor scalar_like(double v, const Tensor& like) { return Tensor::scalar(v, like.dtype(), like.device()); }

// t itself when each row of its last axis is contiguous (unit stride there, or
// one entry), else a contiguous copy: for kernels that read a tensor through its
// other strides (engine/kernels/sequence_rows.h), such as windows of a projection.
inline Tensor unit_last_stride(const Tensor& t) {
  if (t.numel() == 0 || t.size(-1) <= 1 || t.strides().back() == 1) return t;
  return dense(t);
}

}  // namespace loom::detail
