// transformer.cpp: the vanilla transformer and Primer EZ (see transformer.h).
//
// Read top to bottom: the configuration checks, the convolution, the Q/K/V
// projections, attention with its KV cache, the layer, embeddings, encoder and
// generator, then the model: full forward, incremental decoding, FLOPs.
#include "models/families/transformer.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/error.h"
#include "engine/ops.h"

namespace loom::models {

// ---- configuration --------------------------------------------------------------------

namespace {

ConvKernels conv_kernels_of(const ModelConfig& c) {
  if (c.family == "transformer") return ConvKernels::none;
  LOOM_CHECK(c.family == "primer_ez", "model.family: '", c.family, "' is not a transformer family ",
             "(expected transformer or primer_ez)");
  if (c.conv_kernels == "per_channel") return ConvKernels::per_channel;
  if (c.conv_kernels == "shared") return ConvKernels::shared;
  if (c.conv_kernels == "per_head") return ConvKernels::per_head;
  LOOM_FAIL("model.conv_kernels: unknown value '", c.conv_kernels, "' (expected per_channel, shared or per_head)");
}

// Every value the families use, checked before anything is built.
const ModelConfig& checked(const ModelConfig& c) {
  LOOM_CHECK(c.vocab > 0, "model.vocab: must be positive, got ", c.vocab);
  LOOM_CHECK(c.d_model > 0, "model.d_model: must be positive, got ", c.d_model);
  check_heads(c.d_model, c.heads);
  LOOM_CHECK(c.d_ff > 0, "model.d_ff: must be positive, got ", c.d_ff);
  LOOM_CHECK(c.layers > 0, "model.layers: must be positive, got ", c.layers);
  LOOM_CHECK(c.dropout >= 0 && c.dropout < 1, "model.dropout: must be in [0, 1), got ", c.dropout);
  if (conv_kernels_of(c) != ConvKernels::none)
    LOOM_CHECK(c.conv_width > 0, "model.conv_width: must be positive, got ", c.conv_width);
  return c;
}

}  // namespace

// ---- Primer's depth-wise convolution ----------------------------------------------------

DepthWiseConv::DepthWiseConv(int64_t channels, int64_t width, Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(width));  // PyTorch's Conv1d default, fan-in = K
  weight = register_parameter("weight", uniform({channels, 1, width}, -bound, bound, gen));
  bias = register_parameter("bias", uniform({channels}, -bound, bound, gen));
}

Tensor DepthWiseConv::forward(const Tensor& x) const {
  // The engine's kernel takes [C, K]; the [C, 1, K] parameter is viewed as that.
  return causal_conv1d(x, reshape(weight, {weight.size(0), weight.size(2)}), bias);
}

// ---- Q/K/V projections ----------------------------------------------------------------------

QkvProjection::QkvProjection(int64_t d_model, int64_t heads_, int64_t d_k_, ConvKernels conv_, int64_t conv_width,
                               Generator& gen)
    : linear(d_model, heads_ * d_k_, true, gen), heads(heads_), d_k(d_k_), conv_kernels(conv_) {
  if (conv_ == ConvKernels::none) {
    register_module("linear", linear);
    return;
  }
  const int64_t channels = conv_ == ConvKernels::per_channel ? d_k : conv_ == ConvKernels::shared ? 1 : heads * d_k;
  conv = std::make_unique<DepthWiseConv>(channels, conv_width, gen);
  register_module("0.linear", linear);
  register_module("1.conv", *conv);
}

Tensor QkvProjection::convolve(const Tensor& projected) const {
  const Shape heads_shape = {projected.size(0), projected.size(1), heads, d_k};
  switch (conv_kernels) {
    case ConvKernels::none: return reshape(projected, heads_shape);
    // Channels are head-major (h·d_k + c), as labml's per-head Conv1d sees them.
    case ConvKernels::per_head: return reshape(conv->forward(projected), heads_shape);
    // One kernel per head channel (or one for all): the heads are one more batch axis.
    case ConvKernels::per_channel:
    case ConvKernels::shared: return conv->forward(reshape(projected, heads_shape));
  }
  return Tensor();
}

Tensor QkvProjection::forward(const Tensor& x) const { return convolve(linear.forward(x)); }

Tensor QkvProjection::forward_after(const Tensor& x, Tensor& history) const {
  const Tensor projected = linear.forward(x);
  if (!conv) return convolve(projected);
  // The convolution of the new positions reads the K-1 before them: run it over
  // history + new and keep the new rows (the history rows only prime the taps).
  const int64_t T = projected.size(0), before = history.size(0);
  const Tensor extended = concat({history, projected}, 0);
  history = contiguous(narrow(extended, 0, T, before));
  return narrow(convolve(extended), 0, before, T);
}

// ---- attention ------------------------------------------------------------------------------

namespace {

// Appends k, v [T, B, H, d_k] to the cache, growing its buffers geometrically so
// that decoding n tokens one at a time copies O(n) rows in all.
void append(AttentionCache& cache, const Tensor& k, const Tensor& v) {
  const int64_t T = k.size(0), length = cache.length + T;
  if (length > cache.keys.size(0)) {
    const int64_t capacity = std::max(length, 2 * cache.keys.size(0));
    for (Tensor* t : {&cache.keys, &cache.values}) {
      Shape shape = t->shape();
      shape[0] = capacity;
      Tensor bigger = Tensor::empty(shape, t->dtype(), t->device());
      if (cache.length > 0) copy_(narrow(bigger, 0, 0, cache.length), narrow(*t, 0, 0, cache.length));
      *t = bigger;
    }
  }
  copy_(narrow(cache.keys, 0, cache.length, T), k);
  copy_(narrow(cache.values, 0, cache.length, T), v);
  cache.length = length;
}

}  // namespace

MultiHeadAttention::MultiHeadAttention(const ModelConfig& c, ConvKernels conv, Generator& gen)
    : query(c.d_model, c.heads, c.d_model / c.heads, conv, c.conv_width, gen),
      key(c.d_model, c.heads, c.d_model / c.heads, conv, c.conv_width, gen),
      value(c.d_model, c.heads, c.d_model / c.heads, conv, c.conv_width, gen),
      output(c.d_model, c.d_model, true, gen),
      heads(c.heads),
      d_k(c.d_model / c.heads),
      dropout(c.dropout) {
  register_module("query", query);
  register_module("key", key);
  register_module("value", value);
  register_module("output", output);
}

AttentionCache MultiHeadAttention::start_cache(int64_t batch, DType dtype, Device device) const {
  AttentionCache cache;
  cache.keys = Tensor::empty({0, batch, heads, d_k}, dtype, device);
  cache.values = Tensor::empty({0, batch, heads, d_k}, dtype, device);
  if (query.conv) {
    // Positions before the first are zeros, as the convolution pads them.
    const Shape history = {query.conv->weight.size(2) - 1, batch, heads * d_k};
    cache.query_history = Tensor::zeros(history, dtype, device);
    cache.key_history = Tensor::zeros(history, dtype, device);
    cache.value_history = Tensor::zeros(history, dtype, device);
  }
  return cache;
}

Tensor MultiHeadAttention::forward(const Tensor& x, Generator& dropout_gen, AttentionCache* cache) const {
  const double scale = 1.0 / std::sqrt(static_cast<double>(d_k));
  const double p = training() ? dropout : 0.0;
  Tensor out;
  if (cache == nullptr) {
    out = attention(query.forward(x), key.forward(x), value.forward(x), scale, true, p, &dropout_gen);
  } else {
    const Tensor q = query.forward_after(x, cache->query_history);
    append(*cache, key.forward_after(x, cache->key_history), value.forward_after(x, cache->value_history));
    // The new queries are the last positions of the cache: the causal mask lines them up.
    out = attention(q, narrow(cache->keys, 0, 0, cache->length), narrow(cache->values, 0, 0, cache->length), scale,
                    true, p, &dropout_gen);
  }
  return output.forward(reshape(out, {x.size(0), x.size(1), heads * d_k}));
}

// ---- layer ----------------------------------------------------------------------------------

TransformerLayer::TransformerLayer(const ModelConfig& c, ConvKernels conv, Activation activation, Generator& gen)
    : self_attn(c, conv, gen),
      feed_forward(c.d_model, c.d_ff, activation, c.dropout, gen),
      norm_self_attn(c.d_model),
      norm_ff(c.d_model),
      dropout(c.dropout) {
  register_module("self_attn", self_attn);
  register_module("feed_forward", feed_forward);
  register_module("norm_self_attn", norm_self_attn);
  register_module("norm_ff", norm_ff);
}

Tensor TransformerLayer::forward(const Tensor& x, Generator& dropout_gen, AttentionCache* cache) const {
  const Tensor attended = self_attn.forward(norm_self_attn.forward(x), dropout_gen, cache);
  const Tensor h = x + loom::dropout(attended, dropout, dropout_gen, training());
  const Tensor fed = feed_forward.forward(norm_ff.forward(h), dropout_gen);
  return h + loom::dropout(fed, dropout, dropout_gen, training());
}

// ---- embeddings, encoder, generator -------------------------------------------------------

EmbeddingsWithPositionalEncoding::EmbeddingsWithPositionalEncoding(int64_t vocab, int64_t d, Generator& gen)
    : linear(vocab, d, gen), d_model(d) {
  positional_encodings = register_buffer("positional_encodings", sinusoidal_positional_encoding(kMaxLen, d));
  register_module("linear", linear);
}

Tensor EmbeddingsWithPositionalEncoding::forward(const Tensor& tokens, int64_t start) const {
  const int64_t L = tokens.size(0);
  LOOM_CHECK(start + L <= kMaxLen, "positional encoding: positions ", start, " to ", start + L - 1,
             " are beyond the table of ", kMaxLen, " positions");
  // [L, 1, d] broadcasts over the batch.
  return linear.forward(tokens) * std::sqrt(static_cast<double>(d_model)) +
         narrow(positional_encodings, 0, start, L);
}

Encoder::Encoder(const ModelConfig& c, ConvKernels conv, Activation activation, Generator& gen) : norm(c.d_model) {
  // labml deep-copies one initialised layer (clone_module_list), so all layers
  // start equal: each is drawn from the same generator state.
  const Generator prototype = gen;
  for (int64_t l = 0; l < c.layers; ++l) {
    gen = prototype;
    layers.push_back(std::make_unique<TransformerLayer>(c, conv, activation, gen));
    register_module("layers." + std::to_string(l), *layers.back());
  }
  register_module("norm", norm);
}

LogitGenerator::LogitGenerator(int64_t d_model, int64_t vocab, Generator& gen) : projection(d_model, vocab, true, gen) {
  register_module("projection", projection);
}

// ---- the model -------------------------------------------------------------------------------

namespace {

struct TransformerDecodeState : DecodeState {
  int64_t batch = 0;
  int64_t position = 0;  // tokens fed so far
  std::vector<AttentionCache> caches;  // one per layer
};

void check_tokens(const Tensor& tokens, const std::string& family, const char* what) {
  LOOM_CHECK(tokens.defined() && tokens.dtype() == DType::i64 && tokens.dim() == 2, family, " ", what,
             ": tokens must be int64 [L, B], got ", tokens.defined() ? tokens.describe() : "an undefined tensor");
}

// model.activation, or the family's: Primer's squared ReLU, the vanilla ReLU.
Activation activation_of(const ModelConfig& c) {
  if (c.activation == "gelu") return Activation::gelu;
  if (c.activation == "silu") return Activation::silu;
  const bool primer_default = c.activation.empty() && c.family == "primer_ez";
  if (c.activation == "squared_relu" || primer_default) return Activation::squared_relu;
  return Activation::relu;
}

}  // namespace

Transformer::Transformer(const ModelConfig& config)
    : LanguageModel(checked(config)),
      init_gen_(config_.seed),
      src_embed(config_.vocab, config_.d_model, init_gen_),
      encoder(config_, conv_kernels_of(config_),
              activation_of(config_), init_gen_),
      generator(config_.d_model, config_.vocab, init_gen_) {
  register_module("src_embed", src_embed);
  register_module("encoder", encoder);
  register_module("generator", generator);
}

Tensor Transformer::run(const Tensor& tokens, int64_t start, std::vector<AttentionCache>* caches) {
  Tensor x = src_embed.forward(tokens, start);
  for (size_t l = 0; l < encoder.layers.size(); ++l)
    x = encoder.layers[l]->forward(x, dropout_gen_, caches ? &(*caches)[l] : nullptr);
  return generator.projection.forward(encoder.norm.forward(x));
}

Tensor Transformer::forward(const Tensor& tokens) {
  check_tokens(tokens, config_.family, "forward");
  return run(tokens, 0, nullptr);
}

std::unique_ptr<DecodeState> Transformer::start_decoding(int64_t batch) const {
  LOOM_CHECK(batch > 0, config_.family, " start_decoding: batch must be positive, got ", batch);
  auto state = std::make_unique<TransformerDecodeState>();
  state->batch = batch;
  const Tensor& like = src_embed.linear.weight;
  for (const auto& layer : encoder.layers)
    state->caches.push_back(layer->self_attn.start_cache(batch, like.dtype(), like.device()));
  return state;
}

Tensor Transformer::decode(DecodeState& state, const Tensor& tokens) {
  auto* s = dynamic_cast<TransformerDecodeState*>(&state);
  LOOM_CHECK(s != nullptr, config_.family, " decode: the state was not made by this model's start_decoding");
  check_tokens(tokens, config_.family, "decode");
  LOOM_CHECK(tokens.size(1) == s->batch, config_.family, " decode: tokens ", shape_str(tokens.shape()),
             " do not match the batch of ", s->batch, " given to start_decoding");
  GradModeGuard no_grad(false);  // decoding never trains; the cache is written in place
  const Tensor logits = run(tokens, s->position, &s->caches);
  s->position += tokens.size(0);
  return logits;
}

double Transformer::training_flops_per_token(int64_t seq_len) const {
  // Forward, per token: 2 per weight of the products (per layer Q, K, V and the
  // output projection, d x d each, and the two feed-forward matrices; then the
  // logits, d x vocab), Primer's three depth-wise convolutions (2 x width per
  // channel, whatever the kernel sharing), and attention's q·k and p·v
  // (2 x seq_len x d each; the causal mask is not discounted, as in PaLM). The
  // backward of each product is two products of its size: x3 for training.
  // Biases, norms and activations are not products and are not counted; the
  // embedding is only looked up.
  const double d = static_cast<double>(config_.d_model), d_ff = static_cast<double>(config_.d_ff);
  const double layers = static_cast<double>(config_.layers), L = static_cast<double>(seq_len);
  const double product_weights = layers * (4 * d * d + 2 * d * d_ff) + d * static_cast<double>(config_.vocab);
  const double convolutions =
      config_.family == "primer_ez" ? layers * 3 * 2 * d * static_cast<double>(config_.conv_width) : 0.0;
  const double attention = layers * 2 * (2 * L * d);
  return 3.0 * (2 * product_weights + convolutions + attention);
}

std::unique_ptr<LanguageModel> make_transformer(const ModelConfig& config) {
  return std::make_unique<Transformer>(config);
}

}  // namespace loom::models
