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

void Backend::copy_from_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void Backend::copy_to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }

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
