// softmax.cpp: softmax, log_softmax and cross_entropy.
//
// The kernels work on rows along the last axis of contiguous data. Softmax over
// another axis moves that axis last with a permuted view and one contiguous copy;
// the kernel's output is handed back as the inverse permuted view, so no second
// copy is made (the result is then not contiguous: its axis is innermost in
// memory). Softmax records ints = {axis}, normalised.
#include "engine/ops/op_helpers.h"

namespace loom {

namespace {

Tensor softmax_op(OpId id, const Tensor& x, int64_t axis, bool log) {
  const char* name = op_name(id);
  detail::check_float(name, x);
  LOOM_CHECK(axis >= -x.dim() && axis < x.dim(), name, ": axis ", axis, " is out of range for x of shape ",
             shape_str(x.shape()));
  const int a = normalize_axis(axis, x.dim(), name);
  const bool last = a == x.dim() - 1;
  Tensor out;
  {
    GradModeGuard no_grad(false);  // the views and the copy around the kernel are not part of the graph
    const Tensor rows = contiguous(last ? x : permute(x, axis_last_permutation(x.dim(), a)));
    Tensor y = Tensor::empty(rows.shape(), x.dtype(), x.device());
    backend_for(x).softmax(rows, y, log);
    out = last ? y : permute(y, inverse_permutation(axis_last_permutation(x.dim(), a)));
  }
  if (needs_grad({&x})) record({id, {x}, {}, {a}}, out);
  return out;
}

// Every target must index a class: the kernels use targets as offsets unchecked.
// They are read on the host; off the CPU that costs one copy of N integers.
void check_targets(const Tensor& targets, const Tensor& logits) {
  const int64_t C = logits.size(1);
  const Tensor host = targets.device() == Device::cpu ? targets : targets.to(Device::cpu);
  const int64_t* t = host.data<int64_t>();
  const int64_t stride = host.strides()[0];
  for (int64_t i = 0; i < host.numel(); ++i) {
    const int64_t v = t[i * stride];
    LOOM_CHECK(v >= 0 && v < C, "cross_entropy: target ", v, " at position ", i, " is out of range [0, ", C,
               ") for logits of shape ", shape_str(logits.shape()), " (targets ", shape_str(targets.shape()), ")");
  }
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis) { return softmax_op(OpId::softmax, x, axis, false); }
Tensor log_softmax(const Tensor& x, int64_t axis) { return softmax_op(OpId::log_softmax, x, axis, true); }

Tensor cross_entropy(const Tensor& logits, const Tensor& targets) {
  detail::check_float("cross_entropy", logits);
  detail::check_defined("cross_entropy", targets, "targets");
  LOOM_CHECK(logits.dim() == 2, "cross_entropy: logits must be 2-D [N, C], got shape ", shape_str(logits.shape()));
  LOOM_CHECK(targets.dtype() == DType::i64, "cross_entropy: targets must be int64 class indices, got ",
             targets.describe());
  const int64_t N = logits.size(0);
  LOOM_CHECK(targets.dim() == 1 && targets.size(0) == N, "cross_entropy: targets must have shape [", N,
             "] for logits of shape ", shape_str(logits.shape()), ", got ", shape_str(targets.shape()));
  LOOM_CHECK(targets.device() == logits.device(), "cross_entropy: targets ", targets.describe(),
             " are not on the device of logits ", logits.describe());
  LOOM_CHECK(N > 0, "cross_entropy: logits of shape ", shape_str(logits.shape()),
             " have no rows: the mean loss is undefined");
  check_targets(targets, logits);

  // Kernels get contiguous operands (a copy of N targets at most); the backward
  // reuses the same targets.
  const Tensor t = dense(targets);
  Tensor out;
  {
    GradModeGuard no_grad(false);
    const Tensor x = contiguous(logits);
    Tensor losses = Tensor::empty({N}, logits.dtype(), logits.device());
    backend_for(x).cross_entropy(x, t, losses);
    out = mean(losses);  // sums in double
  }
  if (needs_grad({&logits})) record({OpId::cross_entropy, {logits, t}}, out);
  return out;
}

// ---- backward rules ----------------------------------------------------------------
//
// Backward rules of softmax, log_softmax and cross_entropy.
//
// Each rule calls the backend's fused backward kernel, which works along the
// last axis of contiguous data, as the forward did:
//   softmax:       dx = y * (g - sum(g * y))
//   log_softmax:   dx = g - softmax(x) * sum(g),  softmax(x) = exp(y)
//   cross_entropy: dlogits = (softmax(logits) - onehot(targets)) * g / N

namespace {

// ints = {axis}. The output was written with the axis innermost, so moving it
// last again makes y contiguous without a copy; only g may need one.
Grads softmax_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor& y = n.output;
  const int64_t axis = n.ints[0];
  const bool last = axis == y.dim() - 1;
  auto axis_last = [&](const Tensor& t) {
    return contiguous(last ? t : permute(t, axis_last_permutation(t.dim(), axis)));
  };
  const Tensor y_rows = axis_last(y), g_rows = axis_last(g);
  Tensor gx = Tensor::empty(y_rows.shape(), y.dtype(), y.device());
  backend_for(y).softmax_backward(y_rows, g_rows, gx, n.op == OpId::log_softmax);
  return {last ? gx : permute(gx, inverse_permutation(axis_last_permutation(y.dim(), axis)))};
}

// g is the gradient of the mean loss: each row's loss gets g / N.
Grads cross_entropy_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor logits = contiguous(n.input(0));
  const Tensor& targets = n.input(1);
  const int64_t N = logits.size(0);
  const Tensor grad_losses = expand(reshape(g, {1}), {N}) / static_cast<double>(N);
  Tensor gx = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  backend_for(logits).cross_entropy_backward(logits, targets, grad_losses, gx);
  return {gx, Tensor()};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration softmax_rules[] = {
    {OpId::softmax, {softmax_rule, false, true}},
    {OpId::log_softmax, {softmax_rule, false, true}},
    {OpId::cross_entropy, {cross_entropy_rule, true, false}},
};
}  // namespace

}  // namespace loom
