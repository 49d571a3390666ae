// random.cpp: random tensors and dropout.
#include "engine/ops/op_helpers.h"

namespace loom {

namespace {
Tensor random_fill(RandomKind kind, const Shape& shape, double a, double b, Generator& gen, DType dtype,
                   Device device, const char* op) {
  LOOM_CHECK(is_floating(dtype), op, ": expected a floating-point dtype, got ", dtype_name(dtype));
  Tensor out = Tensor::empty(shape, dtype, device);
  const uint64_t blocks = (static_cast<uint64_t>(out.numel()) + 3) / 4;
  backend_for(device).random(kind, out, a, b, gen.seed(), gen.advance(blocks));
  return out;
}
}  // namespace

Tensor uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype, Device device) {
  LOOM_CHECK(low <= high, "uniform: low ", low, " is greater than high ", high);
  Tensor out = random_fill(RandomKind::uniform, shape, low, high, gen, dtype, device, "uniform");
  ran(OpId::uniform, out);  // never recorded: tell a watching test
  return out;
}

Tensor normal(const Shape& shape, double mean, double stddev, Generator& gen, DType dtype, Device device) {
  LOOM_CHECK(stddev >= 0, "normal: standard deviation ", stddev, " is negative");
  Tensor out = random_fill(RandomKind::normal, shape, mean, stddev, gen, dtype, device, "normal");
  ran(OpId::normal, out);
  return out;
}

Tensor bernoulli(const Shape& shape, double p, Generator& gen, DType dtype, Device device) {
  LOOM_CHECK(p >= 0 && p <= 1, "bernoulli: probability ", p, " is outside [0, 1]");
  Tensor out = random_fill(RandomKind::bernoulli, shape, p, 0.0, gen, dtype, device, "bernoulli");
  ran(OpId::bernoulli, out);
  return out;
}

namespace {
// dropout, after a ReLU when relu_first: the mask is bernoulli(1 - p) of the
// generator's next blocks, drawn inside the kernel. When a gradient will flow,
// the kernel also writes the mask as bits (1/32 of a float tensor) for the
// backward, which then draws nothing; ReLU's rule needs x as well.
// The callers have checked x and p.
Tensor dropout_of(const Tensor& x, double p, Generator& gen, bool relu_first) {
  const uint64_t seed = gen.seed(), offset = gen.advance((static_cast<uint64_t>(x.numel()) + 3) / 4);
  const Tensor x_read = dense(x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const bool keep_mask = needs_grad({&x});
  const Tensor keep_bits =
      keep_mask ? Tensor::empty({(x.numel() + 63) / 64}, DType::i64, x.device()) : Tensor();
  backend_for(x).dropout(x_read, out, p, seed, offset, keep_bits, relu_first);
  if (keep_mask) {
    std::vector<Tensor> saved{keep_bits};
    if (relu_first) saved.push_back(x_read);
    record({OpId::dropout, {x}, std::move(saved), {}, {p}}, out);
  }
  return out;
}
}  // namespace

Tensor dropout(const Tensor& x, double p, Generator& gen, bool training) {
  detail::check_float("dropout", x);
  LOOM_CHECK(p >= 0 && p < 1, "dropout: probability ", p, " is outside [0, 1)");
  if (!training || p == 0.0) return x;
  return dropout_of(x, p, gen, false);
}

Tensor relu_dropout(const Tensor& x, double p, Generator& gen, bool training) {
  detail::check_float("relu_dropout", x);
  LOOM_CHECK(p >= 0 && p < 1, "relu_dropout: probability ", p, " is outside [0, 1)");
  if (!training || p == 0.0) return relu(x);
  return dropout_of(x, p, gen, true);
}

// ---- backward rules ----------------------------------------------------------------
//
// The backward rule of dropout: the forward's mask, read from its bits, applied
// to the gradient, then ReLU's rule where the forward had one.

namespace {
// saved {keep_bits} (and x after a ReLU), reals {p}.
std::vector<Tensor> dropout_rule(const RecordedOp& n, const Tensor& g) {
  Tensor grad = Tensor::empty(g.shape(), g.dtype(), g.device());
  const Tensor relu_input = n.saved.size() > 1 ? n.saved[1] : Tensor();
  backend_for(g).dropout_backward(dense(g), n.saved[0], n.reals[0], relu_input, grad);
  return {grad};
}
// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration random_rules[] = {
    {OpId::dropout, {dropout_rule, false, false}},
};
}  // namespace

}  // namespace loom
