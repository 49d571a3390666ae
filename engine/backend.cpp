#include "engine/backend.h"

#include <cstring>

#include "engine/cpu/cpu_backend.h"

namespace loom {

// The names of the elementwise codes, from the tables in elementwise_functors.h.
#define LOOM_ELEMENTWISE_NAME(name, ...) #name,

const char* unary_op_name(UnaryOp op) {
  static const char* const names[] = {LOOM_UNARY_OPS(LOOM_ELEMENTWISE_NAME) LOOM_UNARY_OPS_WITH_PARAM(
      LOOM_ELEMENTWISE_NAME) LOOM_UNARY_KERNELS(LOOM_ELEMENTWISE_NAME)};
  return names[static_cast<int>(op)];
}

const char* binary_op_name(BinaryOp op) {
  static const char* const names[] = {LOOM_BINARY_OPS(LOOM_ELEMENTWISE_NAME) LOOM_COMPARE_OPS(LOOM_ELEMENTWISE_NAME)
                                          LOOM_BINARY_KERNELS(LOOM_ELEMENTWISE_NAME)};
  return names[static_cast<int>(op)];
}

#undef LOOM_ELEMENTWISE_NAME

void Backend::copy_from_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void Backend::copy_to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }

int64_t Backend::panel_width(DType) const { return 0; }
void Backend::pack_panels(const Tensor&, const Tensor&) {
  LOOM_FAIL("pack_panels: the ", device_name(device()), " backend has no panel kernels (its panel_width is 0)");
}
void Backend::matmul_panels(const Tensor&, const Tensor&, const Tensor&, bool) {
  LOOM_FAIL("matmul_panels: the ", device_name(device()), " backend has no panel kernels (its panel_width is 0)");
}

Tensor dense(const Tensor& t) {
  if (!t.defined() || t.is_contiguous()) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  backend_for(t).copy(t, out);
  return out;
}

Backend& backend_for(Device device) {
  if (device == Device::cpu) return cpu_backend();
  Backend* cuda = cuda_backend();
  LOOM_CHECK(cuda != nullptr, "this build of loom has no CUDA backend (configure with -Dcuda=enabled)");
  return *cuda;
}

#ifndef LOOM_WITH_CUDA
Backend* cuda_backend() { return nullptr; }
bool cuda_available() { return false; }
#endif

}  // namespace loom
