// linalg.cpp: matmul with numpy semantics.
#include "engine/ops/op_helpers.h"

namespace loom {

namespace {

// The ≥2-D core: a [..., M, K] · b [..., K, N], batch dims broadcast.
Tensor matmul_batched(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  LOOM_CHECK(b.size(-2) == K, "matmul: inner dimensions differ: ", shape_str(a.shape()), " · ",
             shape_str(b.shape()));
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2);
  const Shape b_batch(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(a_batch, b_batch, "matmul");
  Shape a_shape = batch, b_shape = batch, out_shape = batch;
  a_shape.insert(a_shape.end(), {M, K});
  b_shape.insert(b_shape.end(), {K, N});
  out_shape.insert(out_shape.end(), {M, N});
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  backend_for(a).matmul(detail::broadcast_view(a, a_shape), detail::broadcast_view(b, b_shape), out);
  if (needs_grad({&a, &b})) record({OpId::matmul, {a, b}}, out);
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  detail::check_same("matmul", a, b);
  detail::check_float("matmul", a);
  LOOM_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: operands must have at least one dimension, got ",
             shape_str(a.shape()), " and ", shape_str(b.shape()));
  // Vectors become matrices for the core and are squeezed back afterwards.
  const Tensor a2 = a.dim() == 1 ? unsqueeze(a, 0) : a;
  const Tensor b2 = b.dim() == 1 ? unsqueeze(b, 1) : b;
  Tensor out = matmul_batched(a2, b2);
  if (b.dim() == 1) out = squeeze(out, -1);
  if (a.dim() == 1) out = squeeze(out, a.dim() == 1 && b.dim() == 1 ? 0 : -2);
  return out;
}

// ---- backward rules ----------------------------------------------------------------
//
// The backward rule of matmul.
//
// C = A·B  =>  dA = dC·Bᵀ, dB = Aᵀ·dC. The transposes are views: GEMM reads them
// in place. Broadcast batch dims are summed away by the caller.

namespace {

std::vector<Tensor> matmul_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor& a = n.input(0);
  const Tensor& b = n.input(1);
  return {n.needs_input_grad(0) ? matmul(g, transpose(b, -1, -2)) : Tensor(),
          n.needs_input_grad(1) ? matmul(transpose(a, -1, -2), g) : Tensor()};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration linalg_rules[] = {
    {OpId::matmul, {matmul_rule, true, false}},
};
}  // namespace

}  // namespace loom
