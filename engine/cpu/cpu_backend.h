// cpu_backend.h: the CPU implementation of every kernel in engine/backend.h.
//
// One class; its methods are defined in the stem files beside this header
// (elementwise.cpp, reduce.cpp, linalg.cpp, softmax.cpp, norm.cpp, index.cpp,
// conv.cpp, random.cpp), so a reader finds each kernel next to its siblings.
#pragma once

#include "engine/backend.h"

namespace loom {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  Allocator& allocator() override { return cpu_allocator(); }

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

  // attention (attention.cpp)
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args, const Tensor& out,
                 const Tensor& lse) override;
  void attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& lse, const AttentionArgs& args, const Tensor& grad_q, const Tensor& grad_k,
                          const Tensor& grad_v) override;

  // delta_rule (delta_rule.cpp)
  void delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& initial_state,
                  const Tensor& out, const Tensor& final_state, const Tensor& vbar) override;
  void delta_rule_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& beta, const Tensor& vbar, const Tensor& final_state, const Tensor& grad_q,
                           const Tensor& grad_k, const Tensor& grad_v, const Tensor& grad_beta) override;

  // feedback (feedback.cpp)
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

Backend& cpu_backend();

}  // namespace loom
