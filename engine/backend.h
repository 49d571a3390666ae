// backend.h: the kernels a device must provide.
//
// Ops (engine/ops/*.cpp) check their arguments, allocate the output on the
// input's device and then call one of these kernels on backend_for(device).
//
// The kernels are declared once, in LOOM_KERNELS (engine/op_list.h, beside
// the ops): one line per kernel, its name and its parameters. That list
// becomes the pure virtual methods of Backend below and the overriding
// declarations of every backend (CpuBackend in engine/cpu/, CudaBackend in
// cuda/), so a new kernel is one line there plus its definition in each
// backend; a backend that lacks a definition does not link (undefined
// reference to `CudaBackend::name(...)`). There are no default implementations.
//
// Conventions: outputs are allocated by the caller (contiguous unless a kernel
// says otherwise); inputs may be strided views; shapes are already checked.
#pragma once

#include <cstddef>
#include <type_traits>
#include <vector>

#include "engine/allocator.h"
#include "engine/elementwise_functors.h"  // the elementwise tables
#include "engine/error.h"
#include "engine/op_list.h"  // LOOM_KERNELS
#include "engine/tensor.h"

namespace loom {

// The elementwise kernels' op codes, one per row of the tables in
// elementwise_functors.h (unary: ops, ops with a parameter, then helper
// kernels; binary: arithmetic, comparisons, then helper kernels).
#define LOOM_ELEMENTWISE_CODE(name, ...) name,
enum class UnaryOp {
  LOOM_UNARY_OPS(LOOM_ELEMENTWISE_CODE) LOOM_UNARY_OPS_WITH_PARAM(LOOM_ELEMENTWISE_CODE)
  LOOM_UNARY_KERNELS(LOOM_ELEMENTWISE_CODE)
};
enum class BinaryOp {
  LOOM_BINARY_OPS(LOOM_ELEMENTWISE_CODE) LOOM_COMPARE_OPS(LOOM_ELEMENTWISE_CODE)
  LOOM_BINARY_KERNELS(LOOM_ELEMENTWISE_CODE)
};
#undef LOOM_ELEMENTWISE_CODE
const char* unary_op_name(UnaryOp op);
const char* binary_op_name(BinaryOp op);

// Call visit(functor) with the functor of a runtime op code: backends use them
// to turn the code into a template argument once per kernel call, so every
// row of the tables is instantiated by the CPU loops and by the CUDA kernels.
// The switches are generated from the tables: no code can fall through to
// another op's functor.
#define LOOM_VISIT_CASE(Code, name, Functor, ...) \
  case Code::name: return visit(fn::Functor{});
#define LOOM_VISIT_UNARY(name, Functor, ...) LOOM_VISIT_CASE(UnaryOp, name, Functor)
#define LOOM_VISIT_BINARY(name, Functor, ...) LOOM_VISIT_CASE(BinaryOp, name, Functor)

template <class Visit>
decltype(auto) visit_unary(UnaryOp op, Visit&& visit) {
  switch (op) {
    LOOM_UNARY_OPS(LOOM_VISIT_UNARY)
    LOOM_UNARY_OPS_WITH_PARAM(LOOM_VISIT_UNARY)
    LOOM_UNARY_KERNELS(LOOM_VISIT_UNARY)
  }
  LOOM_FAIL("invalid UnaryOp code ", static_cast<int>(op));
}

template <class Visit>
decltype(auto) visit_binary(BinaryOp op, Visit&& visit) {
  switch (op) {
    LOOM_BINARY_OPS(LOOM_VISIT_BINARY)
    LOOM_COMPARE_OPS(LOOM_VISIT_BINARY)
    LOOM_BINARY_KERNELS(LOOM_VISIT_BINARY)
  }
  LOOM_FAIL("invalid BinaryOp code ", static_cast<int>(op));
}

#undef LOOM_VISIT_CASE
#undef LOOM_VISIT_UNARY
#undef LOOM_VISIT_BINARY

enum class ReduceOp { sum, max, argmax };

enum class RandomKind { uniform, normal, bernoulli };

// Scaled dot-product attention options (the attention kernels of LOOM_KERNELS).
struct AttentionArgs {
  double scale = 1.0;
  bool causal = false;  // query i sees keys j <= Lk - Lq + i
  double dropout_p = 0.0;
  uint64_t seed = 0, offset = 0;
};

class Backend {
 public:
  using AttentionArgs = loom::AttentionArgs;

  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual Allocator& allocator() = 0;
  // Memory moves between the host and this device's memory (memcpy on the CPU).
  virtual void copy_from_host(void* dst, const void* src, size_t bytes);
  virtual void copy_to_host(void* dst, const void* src, size_t bytes);
  virtual void synchronize() {}

#define LOOM_KERNEL_PURE_VIRTUAL(name, params) virtual void name params = 0;
  LOOM_KERNELS(LOOM_KERNEL_PURE_VIRTUAL)
#undef LOOM_KERNEL_PURE_VIRTUAL

  // ---- optional: products with a weight packed once for many calls ----
  // The one exception to "every kernel in every backend": a layout of the CPU's
  // register tiles (engine/cpu/panel_matmul.h) that stepped_matmul packs its weight
  // into when the backend has one. panel_width is the entries per panel row for
  // `dtype`, or 0: then stepped_matmul multiplies by the weight as it is and the
  // two kernels below are never called (the CUDA backend, where cuBLAS reads the
  // weight in place). Their defaults fail.
  virtual int64_t panel_width(DType dtype) const;
  // w [K, N] (any layout) -> panels [ceil(N / width), K, width], zeros past column N.
  virtual void pack_panels(const Tensor& w, const Tensor& panels);
  // out [M, N] (contiguous) = a [M, K] · W, or += with `accumulate`, where
  // `panels` holds W packed.
  virtual void matmul_panels(const Tensor& a, const Tensor& panels, const Tensor& out, bool accumulate);
};

// Inside a backend's class: declares its definition of every kernel above.
#define LOOM_KERNEL_OVERRIDE(name, params) void name params override;
#define LOOM_BACKEND_KERNELS LOOM_KERNELS(LOOM_KERNEL_OVERRIDE)

// ---- helpers for ops and kernels of every backend ------------------------------

// t itself when undefined or contiguous, else a contiguous copy made by the
// backend of t's device. Not recorded: for ops and kernels that need dense memory.
Tensor dense(const Tensor& t);

// t's elements, or nullptr for an undefined (optional) tensor.
template <class T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<std::remove_const_t<T>>() : nullptr;
}

// How the causal_conv1d kernels see their operands: x as [L, B, C] with the
// middle axes folded into B, weight [C or 1, K].
struct ConvDims {
  int64_t L = 0, B = 1, C = 0, K = 0;
  bool shared = false;  // weight [1, K]: one kernel for all channels
};
inline ConvDims conv_dims(const Tensor& x, const Tensor& weight) {
  ConvDims d;
  d.L = x.shape().front();
  d.C = x.shape().back();
  for (int64_t i = 1; i + 1 < x.dim(); ++i) d.B *= x.shape()[i];
  d.K = weight.shape()[1];
  d.shared = weight.shape()[0] == 1 && d.C != 1;
  return d;
}

// The backend that owns `device`'s memory and kernels.
Backend& backend_for(Device device);
inline Backend& backend_for(const Tensor& t) { return backend_for(t.device()); }

// Defined in cuda/ when the CUDA backend is built; returns nullptr otherwise.
Backend* cuda_backend();

}  // namespace loom
