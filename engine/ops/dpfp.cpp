// dpfp.cpp: the DPFP feature map (Deterministic Parameter-Free Projection,
// Schlag, Irie & Schmidhuber 2021) as one op.
//
// Over the last axis of x [..., n]:
//   r          = relu([x, -x])                          (2n entries)
//   block_i[j] = r[j] · r[(j - i) mod 2n],  i = 1..nu    (r times torch.roll(r, i))
//   out        = [block_1, ..., block_nu]                (2n·nu entries)
// Composed of concat / narrow / relu / mul this is about a dozen full passes
// forward and backward; fused it is one pass each way. The products are the
// composition's, operand for operand, so the output has the same bits.
//
// The backward keeps x only: r is recomputed from it (2n entries per row, cheaper
// than keeping the 2n·nu outputs), and the gradient needs r only.
#include "engine/ops/op_helpers.h"

namespace loom {

Tensor dpfp(const Tensor& x, int64_t nu) {
  const char* op = "dpfp";
  detail::check_float(op, x);
  LOOM_CHECK(x.dim() >= 1, op, ": x must have at least 1 dim [..., n], got ", x.describe());
  const int64_t n = x.shape().back();
  LOOM_CHECK(n >= 1, op, ": x ", shape_str(x.shape()), " has an empty last axis (n = 0)");
  LOOM_CHECK(nu >= 1 && nu <= 2 * n - 1, op, ": nu = ", nu, " is outside [1, 2n - 1] = [1, ", 2 * n - 1,
             "] for x ", shape_str(x.shape()), " (n = ", n, ")");
  Shape out_shape = x.shape();
  out_shape.back() = 2 * n * nu;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  const Tensor x_dense = dense(x);
  backend_for(x).dpfp(x_dense, nu, out);
  if (needs_grad({&x})) record({OpId::dpfp, {x}, {x_dense}, {nu}}, out);
  return out;
}

// ---- backward rules ----------------------------------------------------------------
//
// One kernel, one pass over the rows (formulas in engine/cpu/dpfp.cpp):
//   dr[j] = Σ_i g_i[j] · r[(j - i) mod 2n] + g_i[(j + i) mod 2n] · r[(j + i) mod 2n]
//   dx[c] = dr[c]·[x_c > 0] - dr[n + c]·[x_c < 0]
// The rule calls the kernel directly, as the other fused ops do: no double backward.

namespace {

// inputs = {x} (not kept), saved = {x (dense)}, ints = {nu}.
Grads dpfp_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor& x = n.saved[0];
  Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x).dpfp_backward(contiguous(g), x, n.ints[0], gx);
  return {gx};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration dpfp_rules[] = {
    {OpId::dpfp, {dpfp_rule, false, false}},
};
}  // namespace

}  // namespace loom
