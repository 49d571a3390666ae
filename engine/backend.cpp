#include "engine/backend.h"

#include <cstring>

#include "engine/cpu/cpu_backend.h"

namespace loom {

const char* unary_op_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg: return "neg";
    case UnaryOp::exp: return "exp";
    case UnaryOp::log: return "log";
    case UnaryOp::sqrt: return "sqrt";
    case UnaryOp::rsqrt: return "rsqrt";
    case UnaryOp::tanh: return "tanh";
    case UnaryOp::sigmoid: return "sigmoid";
    case UnaryOp::relu: return "relu";
    case UnaryOp::squared_relu: return "squared_relu";
    case UnaryOp::elu: return "elu";
    case UnaryOp::gelu: return "gelu";
    case UnaryOp::pow_scalar: return "pow";
    case UnaryOp::gelu_grad: return "gelu_grad";
    case UnaryOp::abs: return "abs";
  }
  return "?";
}

const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
    case BinaryOp::maximum: return "maximum";
    case BinaryOp::minimum: return "minimum";
    case BinaryOp::eq: return "eq";
    case BinaryOp::gt: return "gt";
    case BinaryOp::ge: return "ge";
    case BinaryOp::lt: return "lt";
    case BinaryOp::le: return "le";
  }
  return "?";
}

void Backend::missing(const char* kernel) const {
  LOOM_FAIL("kernel '", kernel, "' has no ", device_name(device()), " implementation");
}

void Backend::copy_from_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void Backend::copy_to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }

void Backend::fill(const Tensor&, double) { missing("fill"); }
void Backend::copy(const Tensor&, const Tensor&) { missing("copy"); }
void Backend::unary(UnaryOp, const Tensor&, const Tensor&, double) { missing("unary"); }
void Backend::binary(BinaryOp, const Tensor&, const Tensor&, const Tensor&) { missing("binary"); }
void Backend::where(const Tensor&, const Tensor&, const Tensor&, const Tensor&) { missing("where"); }
void Backend::reduce(ReduceOp, const Tensor&, const std::vector<int>&, const Tensor&) { missing("reduce"); }
void Backend::matmul(const Tensor&, const Tensor&, const Tensor&) { missing("matmul"); }
void Backend::softmax(const Tensor&, const Tensor&, bool) { missing("softmax"); }
void Backend::softmax_backward(const Tensor&, const Tensor&, const Tensor&, bool) { missing("softmax_backward"); }
void Backend::cross_entropy(const Tensor&, const Tensor&, const Tensor&) { missing("cross_entropy"); }
void Backend::cross_entropy_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  missing("cross_entropy_backward");
}
void Backend::layer_norm(const Tensor&, const Tensor&, const Tensor&, double, const Tensor&, const Tensor&,
                         const Tensor&) {
  missing("layer_norm");
}
void Backend::layer_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&, const Tensor&, const Tensor&) {
  missing("layer_norm_backward");
}
void Backend::index_select(const Tensor&, int, const Tensor&, const Tensor&) { missing("index_select"); }
void Backend::index_add(const Tensor&, int, const Tensor&, const Tensor&) { missing("index_add"); }
void Backend::gather(const Tensor&, int, const Tensor&, const Tensor&) { missing("gather"); }
void Backend::scatter_add(const Tensor&, int, const Tensor&, const Tensor&) { missing("scatter_add"); }
void Backend::causal_conv1d(const Tensor&, const Tensor&, const Tensor&, const Tensor&) { missing("causal_conv1d"); }
void Backend::causal_conv1d_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&) {
  missing("causal_conv1d_backward");
}
void Backend::attention(const Tensor&, const Tensor&, const Tensor&, const AttentionArgs&, const Tensor&,
                        const Tensor&) {
  missing("attention");
}
void Backend::attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const AttentionArgs&, const Tensor&, const Tensor&, const Tensor&) {
  missing("attention_backward");
}
void Backend::feedback_attention(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, double, const Tensor&, const Tensor&) {
  missing("feedback_attention");
}
void Backend::feedback_attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                          const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                          const Tensor&, double, const Tensor&, const Tensor&, const Tensor&,
                                          const Tensor&, const Tensor&, const Tensor&) {
  missing("feedback_attention_backward");
}
void Backend::delta_rule(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                         const Tensor&, const Tensor&) {
  missing("delta_rule");
}
void Backend::delta_rule_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&) {
  missing("delta_rule_backward");
}
void Backend::random(RandomKind, const Tensor&, double, double, uint64_t, uint64_t) { missing("random"); }

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
