// cuda_backend.h: the CUDA implementation of the kernels in engine/backend.h.
//
// backend_for(Device::cuda) returns this backend (cuda_backend() below). Its
// methods are defined in the stem files beside this header, named as in
// engine/cpu/ so the two implementations can be read side by side:
// backend.cu (memory, copies to and from the host), elementwise.cu, reduce.cu,
// linalg.cu, softmax.cu, norm.cu, index.cu, conv.cu, attention.cu,
// delta_rule.cu, feedback.cu, random.cu. A kernel not overridden here would keep
// the base class's version, which throws "kernel 'X' has no cuda
// implementation"; README.md lists such kernels in one place ("not yet on CUDA").
#pragma once

#include "engine/backend.h"

namespace loom::cuda {

class CudaBackend final : public Backend {
 public:
  Device device() const override { return Device::cuda; }
  Allocator& allocator() override;
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void synchronize() override;

  void fill(const Tensor& out, double value) override;
  void copy(const Tensor& src, const Tensor& dst) override;
  void unary(UnaryOp op, const Tensor& x, const Tensor& out, double param) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) override;

  void reduce(ReduceOp op, const Tensor& x, const std::vector<int>& axes, const Tensor& out) override;

  void matmul(const Tensor& a, const Tensor& b, const Tensor& out) override;

  void softmax(const Tensor& x, const Tensor& out, bool log) override;
  void softmax_backward(const Tensor& y, const Tensor& grad_y, const Tensor& grad_x, bool log) override;
  void cross_entropy(const Tensor& logits, const Tensor& targets, const Tensor& losses) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& grad_losses,
                              const Tensor& grad_logits) override;
  void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& out,
                  const Tensor& mean, const Tensor& rstd) override;
  void layer_norm_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& mean,
                           const Tensor& rstd, const Tensor& grad_x, const Tensor& grad_weight,
                           const Tensor& grad_bias) override;

  void index_select(const Tensor& x, int axis, const Tensor& ids, const Tensor& out) override;
  void index_add(const Tensor& target, int axis, const Tensor& ids, const Tensor& src) override;
  void gather(const Tensor& x, int axis, const Tensor& ids, const Tensor& out) override;
  void scatter_add(const Tensor& target, int axis, const Tensor& ids, const Tensor& src) override;

  void causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) override;
  void causal_conv1d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& grad_x,
                              const Tensor& grad_weight, const Tensor& grad_bias) override;

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args, const Tensor& out,
                 const Tensor& lse) override;
  void attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& lse, const AttentionArgs& args, const Tensor& grad_q, const Tensor& grad_k,
                          const Tensor& grad_v) override;

  void delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                  const Tensor& initial_state, const Tensor& out, const Tensor& final_state,
                  const Tensor& vbar) override;
  void delta_rule_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& beta, const Tensor& vbar, const Tensor& final_state, const Tensor& grad_q,
                           const Tensor& grad_k, const Tensor& grad_v, const Tensor& grad_beta) override;

  void feedback_attention(const Tensor& q, const Tensor& keys, const Tensor& values, const Tensor& P,
                          const Tensor& s, const Tensor& u, double scale, const Tensor& out,
                          const Tensor& lse) override;
  void feedback_attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& keys,
                                   const Tensor& values, const Tensor& P, const Tensor& s, const Tensor& u,
                                   const Tensor& out, const Tensor& lse, double scale, const Tensor& grad_q,
                                   const Tensor& grad_keys, const Tensor& grad_values, const Tensor& grad_P,
                                   const Tensor& grad_s, const Tensor& grad_u) override;

  void random(RandomKind kind, const Tensor& out, double a, double b, uint64_t seed, uint64_t offset) override;
};

CudaBackend& backend();

// Lets float32 matmuls use TF32 tensor cores (faster, about 1e-3 relative error).
// Off by default, so CUDA results match the CPU's to float32 rounding.
void set_matmul_tf32(bool allow);

}  // namespace loom::cuda
