// layers.h: the building blocks shared by the families.
//
// Activations are sequence-first, [L, B, d] (labml's convention). Initialisation
// is PyTorch's default for each layer (models/FAMILIES.md §1.3), drawn from a Generator
// so that a seed fixes a model.
#pragma once

#include "engine/ops.h"
#include "models/blocks/module.h"

namespace loom::models {

// y = x·Wᵀ + b, weight [out, in] (PyTorch's layout), bias optional.
// Init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) const;  // [..., in] -> [..., out]
  Tensor weight, bias;
};

// Rows of a [vocab, d] table. Init N(0, 1).
class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t d, Generator& gen);
  Tensor forward(const Tensor& ids) const;  // int64 [...] -> [..., d]
  Tensor weight;
};

// Layer norm over the last axis with elementwise affine (weight 1, bias 0), eps 1e-5.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t d, double eps = 1e-5);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
  double eps;
};

enum class Activation { relu, squared_relu, gelu, silu };

// FFN(x) = layer2(Dropout(act(layer1(x)))) (labml's FeedForward, dropout on the hidden layer only).
class FeedForward : public Module {
 public:
  FeedForward(int64_t d_model, int64_t d_ff, Activation activation, double dropout, Generator& gen);
  Tensor forward(const Tensor& x, Generator& dropout_gen) const;
  Linear layer1, layer2;
  Activation activation;
  double dropout;
};

// Children named "0", "1", ...: labml's nn.ModuleList and nn.Sequential.
class ModuleList : public Module {
 public:
  void append(Module& child);
  int64_t size() const { return count_; }

 private:
  int64_t count_ = 0;
};

// Linear d_model -> heads·d_k (child "linear"), reshaped to [..., heads, d_k]
// (labml's PrepareForMultiHeadAttention).
class HeadProjection : public Module {
 public:
  HeadProjection(int64_t d_model, int64_t heads, int64_t d_k, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) const;  // [..., d_model] -> [..., heads, d_k]
  Linear linear;
  int64_t heads, d_k;
};

// Interleaved sinusoids, PE[p, 2i] = sin(p·10000^(-2i/d)), PE[p, 2i+1] = cos(...):
// a [max_len, 1, d] float32 tensor (labml's buffer layout).
Tensor sinusoidal_positional_encoding(int64_t max_len, int64_t d);

}  // namespace loom::models
