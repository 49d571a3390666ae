#include "models/blocks/layers.h"

#include <cmath>

namespace loom::models {

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = register_parameter("weight", uniform({out, in}, -bound, bound, gen));
  if (has_bias) bias = register_parameter("bias", uniform({out}, -bound, bound, gen));
}

Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }

Embedding::Embedding(int64_t vocab, int64_t d, Generator& gen) {
  weight = register_parameter("weight", normal({vocab, d}, 0.0, 1.0, gen));
}

Tensor Embedding::forward(const Tensor& ids) const { return embedding(weight, ids); }

LayerNorm::LayerNorm(int64_t d, double eps_) : eps(eps_) {
  weight = register_parameter("weight", Tensor::ones({d}));
  bias = register_parameter("bias", Tensor::zeros({d}));
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

FeedForward::FeedForward(int64_t d_model, int64_t d_ff, Activation act, double p, Generator& gen)
    : layer1(d_model, d_ff, true, gen), layer2(d_ff, d_model, true, gen), activation(act), dropout(p) {
  register_module("layer1", layer1);
  register_module("layer2", layer2);
}

Tensor FeedForward::forward(const Tensor& x, Generator& dropout_gen) const {
  Tensor h = layer1.forward(x);
  switch (activation) {
    case Activation::relu:  // one pass each way for both, the same bits
      return layer2.forward(relu_dropout(h, dropout, dropout_gen, training()));
    case Activation::squared_relu: h = squared_relu(h); break;
    case Activation::gelu: h = gelu(h); break;
    case Activation::silu: h = silu(h); break;
  }
  return layer2.forward(loom::dropout(h, dropout, dropout_gen, training()));
}

void ModuleList::append(Module& child) { register_module(std::to_string(count_++), child); }

HeadProjection::HeadProjection(int64_t d_model, int64_t heads_, int64_t d_k_, bool bias, Generator& gen)
    : linear(d_model, heads_ * d_k_, bias, gen), heads(heads_), d_k(d_k_) {
  register_module("linear", linear);
}

Tensor HeadProjection::forward(const Tensor& x) const {
  Shape shape = x.shape();
  shape.back() = heads;
  shape.push_back(d_k);
  return reshape(linear.forward(x), shape);
}

Tensor sinusoidal_positional_encoding(int64_t max_len, int64_t d) {
  std::vector<float> pe(max_len * d);
  for (int64_t p = 0; p < max_len; ++p)
    for (int64_t i = 0; 2 * i < d; ++i) {
      const double angle = p * std::exp(-(2.0 * i) * std::log(10000.0) / d);
      pe[p * d + 2 * i] = static_cast<float>(std::sin(angle));
      if (2 * i + 1 < d) pe[p * d + 2 * i + 1] = static_cast<float>(std::cos(angle));
    }
  return Tensor::from_vector(pe, {max_len, 1, d});
}

}  // namespace loom::models
