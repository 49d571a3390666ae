// linalg.cpp: matmul with numpy semantics, the linear layer's product with its
// bias, and the stepped matmul of a weight shared by the steps of a recurrence
// (engine/ops.h).
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

// A bias of `op` must be [out_features] and share `like`'s dtype and device.
void check_bias(const char* op, const Tensor& like, const Tensor& bias, int64_t out_features, const Tensor& weight) {
  detail::check_same(op, like, bias);
  LOOM_CHECK(bias.dim() == 1 && bias.size(0) == out_features, op, ": bias must be [", out_features,
             "] for a weight of shape ", shape_str(weight.shape()), ", got ", bias.describe());
}

// out = a·b + bias on every row (out [M, N] contiguous): out starts as the bias rows
// and GEMM adds the product onto them, so the bias costs no pass of its own.
void biased_product(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
  Backend& backend = backend_for(a);
  backend.copy(detail::broadcast_view(bias, out.shape()), out);
  backend.matmul_add(a, b, out);
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

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  constexpr const char* op = "linear";
  detail::check_defined(op, x, "x");
  detail::check_defined(op, weight, "weight");
  detail::check_same(op, x, weight);
  detail::check_float(op, x);
  LOOM_CHECK(weight.dim() == 2, op, ": weight must be [out, in], got ", weight.describe());
  const int64_t in = weight.size(1), out_features = weight.size(0);
  LOOM_CHECK(x.dim() >= 1 && x.size(-1) == in, op, ": x of shape ", shape_str(x.shape()), " does not end in the ",
             in, " input features of a weight of shape ", shape_str(weight.shape()));
  Shape out_shape = x.shape();
  out_shape.back() = out_features;
  const int64_t n = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  const Tensor rows = x.dim() == 2 ? x : reshape(x, {n, in});
  Tensor out;
  if (!bias.defined()) {
    out = matmul(rows, transpose(weight, 0, 1));
  } else {
    check_bias(op, x, bias, out_features, weight);
    out = Tensor::empty({n, out_features}, x.dtype(), x.device());
    biased_product(rows, transpose(weight, 0, 1), bias, out);
    if (needs_grad({&rows, &weight, &bias})) record({OpId::linear, {rows, weight, bias}}, out);
  }
  return x.dim() == 2 ? out : reshape(out, out_shape);
}

namespace {

// m [K, N] packed into the backend's panels (Backend::panel_width), or undefined
// where the backend has none. Not recorded: the steps' products read it in place
// of m, whose gradient step_weight's node makes.
Tensor packed_panels(const Tensor& m) {
  Backend& backend = backend_for(m);
  const int64_t width = backend.panel_width(m.dtype());
  if (width == 0) return Tensor();
  const int64_t K = m.size(0), N = m.size(1);
  Tensor panels = Tensor::empty({(N + width - 1) / width, K, width}, m.dtype(), m.device());
  backend.pack_panels(m, panels);
  return panels;
}

}  // namespace

StepWeight step_weight(const Tensor& weight, int64_t capacity, const Tensor& bias) {
  constexpr const char* op = "step_weight";
  detail::check_defined(op, weight, "weight");
  detail::check_float(op, weight);
  LOOM_CHECK(weight.dim() == 2, op, ": weight must be [in, out], got ", weight.describe());
  LOOM_CHECK(capacity >= 0, op, ": capacity must be >= 0, got ", capacity);
  if (bias.defined()) check_bias(op, weight, bias, weight.size(1), weight);
  StepWeight w;
  w.weight = weight;
  w.bias = bias;
  w.token = Tensor::zeros({1}, weight.dtype(), weight.device());
  if (needs_grad({&weight, &bias})) {
    // Zeros: a step whose backward never runs adds nothing to Xᵀ·G or to G's column sums.
    w.inputs = Tensor::zeros({capacity, weight.size(0)}, weight.dtype(), weight.device());
    w.grads = Tensor::zeros({capacity, weight.size(1)}, weight.dtype(), weight.device());
    record({OpId::step_weight, {weight, bias}, {w.inputs, w.grads}}, w.token);
    w.panels = packed_panels(weight);
    w.panels_t = packed_panels(transpose(weight, 0, 1));
  }
  return w;
}

namespace {

// Rows [row0, row0 + rows.size(0)) of the matrix `m` [capacity, n], written
// with the raw kernel: a copy_ would bump the storage version, and the
// step_weight node, which saved m, would then report it modified.
void file_rows(const Tensor& m, int64_t row0, const Tensor& rows) {
  const Tensor slot = m.as_strided(rows.shape(), contiguous_strides(rows.shape()), m.offset() + row0 * m.size(1));
  backend_for(m).copy(rows, slot);
}

}  // namespace

Tensor stepped_matmul(const Tensor& x, StepWeight& w) {
  constexpr const char* op = "stepped_matmul";
  detail::check_defined(op, x, "x");
  detail::check_defined(op, w.weight, "the step weight (make it with step_weight)");
  detail::check_same(op, x, w.weight);
  LOOM_CHECK(x.dim() == 2 && x.size(1) == w.weight.size(0), op, ": x must be [rows, ", w.weight.size(0),
             "] for a weight of shape ", shape_str(w.weight.shape()), ", got ", x.describe());
  if (!w.inputs.defined() || !is_grad_enabled())
    return w.bias.defined() ? linear(x, transpose(w.weight, 0, 1), w.bias) : matmul(x, w.weight);
  const int64_t row0 = w.rows, rows = x.size(0);
  LOOM_CHECK(row0 + rows <= w.inputs.size(0), op, ": the step weight's buffers are full (", row0,
             " rows filed, capacity ", w.inputs.size(0), ", this step brings ", rows, ")");
  Tensor out = Tensor::empty({rows, w.weight.size(1)}, x.dtype(), x.device());
  Backend& backend = backend_for(x);
  if (w.panels.defined()) {  // with a bias, out starts as its rows and the product adds onto them
    if (w.bias.defined()) backend.copy(detail::broadcast_view(w.bias, out.shape()), out);
    backend.matmul_panels(x, w.panels, out, w.bias.defined());
  } else if (w.bias.defined()) {
    biased_product(x, w.weight, w.bias, out);
  } else {
    backend.matmul(x, w.weight, out);
  }
  file_rows(w.inputs, row0, x);
  w.rows += rows;
  record({OpId::stepped_matmul, {x, w.token}, {w.weight, w.grads, w.panels_t}, {row0}}, out);
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

// linear: inputs {x [n, in], W [out, in], b [out]}. dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy.
std::vector<Tensor> linear_rule(const RecordedOp& n, const Tensor& g) {
  return {n.needs_input_grad(0) ? matmul(g, n.input(1)) : Tensor(),
          n.needs_input_grad(1) ? matmul(transpose(g, 0, 1), n.input(0)) : Tensor(),
          n.needs_input_grad(2) ? sum(g, {0}) : Tensor()};
}

// stepped_matmul: inputs {x, token}, saved {W, G, Wᵀ's panels or undefined}, ints
// {row0}. dx = dy·Wᵀ; dy is filed in G for the step_weight node; the token's
// gradient is a zero.
std::vector<Tensor> stepped_matmul_rule(const RecordedOp& n, const Tensor& g) {
  file_rows(n.saved.at(1), n.ints.at(0), g);  // any layout: file_rows copies through the backend
  Tensor dx;
  if (n.needs_input_grad(0)) {
    const Tensor& weight = n.saved.at(0);
    const Tensor& panels_t = n.saved.at(2);
    if (panels_t.defined()) {
      dx = Tensor::empty({g.size(0), weight.size(0)}, g.dtype(), g.device());
      backend_for(g).matmul_panels(g, panels_t, dx, false);
    } else {
      dx = matmul(g, transpose(weight, 0, 1));
    }
  }
  return {dx, Tensor::zeros({1}, g.dtype(), g.device())};
}

// step_weight: inputs {W, b}, saved {X, G}: dW = Xᵀ·G, every step's x_tᵀ·dy_t at
// once; db = the column sums of G, every step's dy_t at once.
std::vector<Tensor> step_weight_rule(const RecordedOp& n, const Tensor&) {
  return {n.needs_input_grad(0) ? matmul(transpose(n.saved.at(0), 0, 1), n.saved.at(1)) : Tensor(),
          n.needs_input_grad(1) ? sum(n.saved.at(1), {0}) : Tensor()};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration linalg_rules[] = {
    {OpId::matmul, {matmul_rule, true, false}},
    {OpId::linear, {linear_rule, true, false}},
    {OpId::stepped_matmul, {stepped_matmul_rule, false, false}},
    {OpId::step_weight, {step_weight_rule, false, false}},
};
}  // namespace

}  // namespace loom
