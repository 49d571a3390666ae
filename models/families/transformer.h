// transformer.h: the vanilla transformer ("transformer") and Primer EZ ("primer_ez").
//
// Both are labml's AutoregressiveTransformer (models/FAMILIES.md §1.2, §4): token
// embeddings ·√d_model plus sinusoidal positions, N pre-norm layers of
// self-attention and feed-forward, a final layer norm and a linear generator.
// Primer EZ differs in two places: squared ReLU in the feed-forward, and a causal
// depth-wise convolution after each of the Q/K/V projections (MDHA).
//
// Module names are labml's, so named_parameters() lists a labml state_dict
// (models/FAMILIES.md §4.3 for Primer EZ; the vanilla model has no convolutions and
// names its projections "query.linear" instead of "query.0.linear").
#pragma once

#include <memory>
#include <vector>

#include "models/families/language_model.h"
#include "models/blocks/layers.h"

namespace loom::models {

// Which kernels Primer's depth-wise convolutions share (ModelConfig::conv_kernels).
enum class ConvKernels {
  none,         // vanilla transformer: no convolution
  per_channel,  // one kernel per head channel, shared by the heads: weight [d_k, 1, K]
  shared,       // one kernel for all channels and heads: weight [1, 1, K]
  per_head,     // one kernel per head and channel: weight [H·d_k, 1, K]
};

// A causal depth-wise Conv1d over the sequence, stored as PyTorch stores it
// (weight [C, 1, K], bias [C]). Init U(-1/√K, 1/√K) (fan-in K).
class DepthWiseConv : public Module {
 public:
  DepthWiseConv(int64_t channels, int64_t width, Generator& gen);
  // x [L, ..., C] (or C = 1 broadcast over any last axis) -> same shape.
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
};

// One of query/key/value: Linear d_model -> H·d_k, then (Primer) the
// convolution. labml's PrepareForMultiHeadAttention names the Linear "linear";
// Primer wraps it in an nn.Sequential with the convolution, hence "0.linear"
// and "1.conv".
class QkvProjection : public Module {
 public:
  QkvProjection(int64_t d_model, int64_t heads, int64_t d_k, ConvKernels conv, int64_t conv_width, Generator& gen);
  // x [L, B, d_model] -> [L, B, H, d_k].
  Tensor forward(const Tensor& x) const;
  // The same for tokens following earlier ones: `history` holds the projections of
  // the previous conv_width - 1 positions ([K-1, B, H·d_k], zeros at the start) and
  // is advanced past x. Without a convolution history is left undefined.
  Tensor forward_after(const Tensor& x, Tensor& history) const;

  Linear linear;
  std::unique_ptr<DepthWiseConv> conv;  // null for the vanilla transformer
  int64_t heads, d_k;
  ConvKernels conv_kernels;

 private:
  Tensor convolve(const Tensor& projected) const;  // [L, B, H·d_k] -> [L, B, H, d_k]
};

// What a layer keeps between decode calls: keys and values of every position so
// far (after the convolution), and for Primer the last pre-convolution projections.
struct AttentionCache {
  Tensor keys, values;  // [capacity, B, H, d_k]; the first `length` rows are filled
  int64_t length = 0;
  Tensor query_history, key_history, value_history;  // [K-1, B, H·d_k]
};

// labml's MultiHeadAttention (vanilla) and MultiDConvHeadAttention (Primer):
// causal scaled dot-product attention, scale 1/√d_k, dropout on the probabilities.
class MultiHeadAttention : public Module {
 public:
  MultiHeadAttention(const ModelConfig& config, ConvKernels conv, Generator& gen);
  // x [L, B, d_model] -> [L, B, d_model]. With a cache, x holds the positions after
  // the cached ones, which it attends to, and the cache is extended.
  Tensor forward(const Tensor& x, Generator& dropout_gen, AttentionCache* cache = nullptr) const;
  AttentionCache start_cache(int64_t batch, DType dtype, Device device) const;

  QkvProjection query, key, value;
  Linear output;
  int64_t heads, d_k;
  double dropout;
};

// Pre-norm layer: x += Drop(SelfAttn(LN(x))); x += Drop(FFN(LN(x))).
class TransformerLayer : public Module {
 public:
  TransformerLayer(const ModelConfig& config, ConvKernels conv, Activation activation, Generator& gen);
  Tensor forward(const Tensor& x, Generator& dropout_gen, AttentionCache* cache = nullptr) const;

  MultiHeadAttention self_attn;
  FeedForward feed_forward;
  LayerNorm norm_self_attn, norm_ff;
  double dropout;
};

// Emb[token]·√d_model + PE[position]; PE is the persistent buffer "positional_encodings".
class EmbeddingsWithPositionalEncoding : public Module {
 public:
  static constexpr int64_t kMaxLen = 5000;  // labml's table size (it is in the checkpoint)
  EmbeddingsWithPositionalEncoding(int64_t vocab, int64_t d_model, Generator& gen);
  // tokens int64 [L, B] at positions start, start+1, ... -> [L, B, d_model].
  Tensor forward(const Tensor& tokens, int64_t start) const;

  Embedding linear;
  Tensor positional_encodings;  // [kMaxLen, 1, d_model]
  int64_t d_model;
};

// The layers and the final norm.
class Encoder : public Module {
 public:
  Encoder(const ModelConfig& config, ConvKernels conv, Activation activation, Generator& gen);
  std::vector<std::unique_ptr<TransformerLayer>> layers;
  LayerNorm norm;
};

// The logits: one Linear named "projection" (labml's Generator).
class LogitGenerator : public Module {
 public:
  LogitGenerator(int64_t d_model, int64_t vocab, Generator& gen);
  Linear projection;
};

class Transformer : public LanguageModel {
 public:
  explicit Transformer(const ModelConfig& config);

  Tensor forward(const Tensor& tokens) override;
  std::unique_ptr<DecodeState> start_decoding(int64_t batch) const override;
  Tensor decode(DecodeState& state, const Tensor& tokens) override;
  double training_flops_per_token(int64_t seq_len) const override;
  int64_t context_length() const override { return EmbeddingsWithPositionalEncoding::kMaxLen; }

 private:
  Generator init_gen_;  // draws the initial parameters; constructed before the modules

 public:
  EmbeddingsWithPositionalEncoding src_embed;
  Encoder encoder;
  LogitGenerator generator;

 private:
  Tensor run(const Tensor& tokens, int64_t start, std::vector<AttentionCache>* caches);
};

}  // namespace loom::models
