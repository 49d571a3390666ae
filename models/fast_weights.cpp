// fast_weights.cpp: the Fast Weights Transformer (see fast_weights.h).
#include "models/fast_weights.h"

#include <string>

#include "engine/error.h"

namespace loom::models {

// ---- configuration -----------------------------------------------------------------

void check_fast_weights_config(const ModelConfig& c) {
  LOOM_CHECK(c.vocab > 0, "model.vocab: must be positive, got ", c.vocab);
  LOOM_CHECK(c.d_model > 0, "model.d_model: must be positive, got ", c.d_model);
  LOOM_CHECK(c.heads > 0 && c.d_model % c.heads == 0, "model.heads: ", c.heads,
             " heads do not divide d_model = ", c.d_model);
  LOOM_CHECK(c.d_ff > 0, "model.d_ff: must be positive, got ", c.d_ff);
  LOOM_CHECK(c.layers > 0, "model.layers: must be at least 1, got ", c.layers);
  LOOM_CHECK(c.dropout >= 0.0 && c.dropout < 1.0, "model.dropout: must be in [0, 1), got ", c.dropout);
  LOOM_CHECK(c.feature_map == "dpfp" || c.feature_map == "elu_plus_one", "model.feature_map: unknown feature map '",
             c.feature_map, "' (expected dpfp or elu_plus_one)");
  if (c.feature_map == "dpfp") {
    // Each shift i pairs an entry with a different one; at 2·d_k it would pair it with itself.
    const int64_t d_k = c.d_model / c.heads, max_nu = 2 * d_k - 1;
    LOOM_CHECK(c.dpfp_nu >= 1 && c.dpfp_nu <= max_nu, "model.dpfp_nu: must be in [1, 2·d_k - 1] = [1, ", max_nu,
               "] for d_k = ", d_k, ", got ", c.dpfp_nu);
  }
  LOOM_CHECK(c.update_rule == "delta" || c.update_rule == "sum", "model.update_rule: unknown update rule '",
             c.update_rule, "' (expected delta or sum)");
}

// ---- feature maps --------------------------------------------------------------------

namespace {

// φ / (Σ φ + eps) over the last axis: retrieval W φ'(q) becomes a weighted
// average of W's columns instead of growing with the number of features.
Tensor sum_normalise(const Tensor& phi, double eps) { return phi / (sum(phi, {-1}, true) + eps); }

}  // namespace

Tensor dpfp_features(const Tensor& x, int64_t nu, double eps) {
  const Tensor r = relu(concat({x, neg(x)}, -1));
  const int64_t n = r.size(-1);
  std::vector<Tensor> blocks;
  for (int64_t i = 1; i <= nu; ++i) {
    // torch.roll(r, i): rolled[j] = r[(j - i) mod n], i.e. the last i entries move to the front.
    const Tensor rolled = concat({narrow(r, -1, n - i, i), narrow(r, -1, 0, n - i)}, -1);
    blocks.push_back(r * rolled);
  }
  return sum_normalise(blocks.size() == 1 ? blocks[0] : concat(blocks, -1), eps);
}

// Katharopoulos et al. pair ELU+1 with the attention denominator z·φ(q), z the
// running sum of φ(k). Here it gets the sum normalisation instead, as in Schlag
// et al.'s experiments (models/FAMILIES.md §2.6): the denominator grows without bound over
// long contexts and hurt perplexity, and the delta rule's vbar = W φ'(k) only
// retrieves a stored value when φ'(k) sums to 1. ELU+1 > 0, so the sum is never 0.
Tensor elu_plus_one_features(const Tensor& x, double eps) { return sum_normalise(elu(x) + 1.0, eps); }

// ---- modules --------------------------------------------------------------------------

FastWeightAttention::FastWeightAttention(const ModelConfig& c, Generator& gen)
    : feature_map(c.feature_map == "dpfp" ? FeatureMap::dpfp : FeatureMap::elu_plus_one),
      nu(c.dpfp_nu),
      delta(c.update_rule == "delta"),
      heads(c.heads),
      d_k(c.d_model / c.heads),
      query(c.d_model, heads, d_k, false, gen),
      key(c.d_model, heads, d_k, false, gen),
      value(c.d_model, heads, d_k, false, gen),
      beta(delta ? std::make_unique<HeadProjection>(c.d_model, heads, 1, false, gen) : nullptr),
      output(c.d_model, c.d_model, true, gen) {
  register_module("query", query);
  register_module("key", key);
  register_module("value", value);
  // The sum rule has no beta: no interpolation_weight parameters either.
  if (beta) {
    interpolation_weight.append(*beta);
    register_module("interpolation_weight", interpolation_weight);
  }
  register_module("output", output);
}

int64_t FastWeightAttention::feature_size() const {
  return feature_map == FeatureMap::dpfp ? 2 * d_k * nu : d_k;
}

Tensor FastWeightAttention::features(const Tensor& x) const {
  return feature_map == FeatureMap::dpfp ? dpfp_features(x, nu) : elu_plus_one_features(x);
}

Tensor FastWeightAttention::forward(const Tensor& x, const Tensor& state, Tensor* final_state) const {
  const int64_t L = x.size(0), B = x.size(1);
  const Tensor q = features(query.forward(x));                       // [L, B, H, d_dot]
  const Tensor k = features(key.forward(x));                         // [L, B, H, d_dot]
  const Tensor v = value.forward(x);                                 // [L, B, H, d_k]
  const Tensor b = delta ? sigmoid(beta->forward(x)) : Tensor();     // [L, B, H, 1]
  const Tensor y = delta_rule(q, k, v, b, state, final_state);       // [L, B, H, d_k]
  return output.forward(reshape(y, {L, B, heads * d_k}));
}

FastWeightsLayer::FastWeightsLayer(const ModelConfig& c, Generator& gen)
    : attn(c, gen),
      feed_forward(c.d_model, c.d_ff, Activation::relu, c.dropout, gen),
      norm_self_attn(c.d_model),
      norm_ff(c.d_model),
      dropout(c.dropout),
      attention_layer_norm(c.attention_layer_norm) {
  register_module("attn", attn);
  register_module("feed_forward", feed_forward);
  register_module("norm_self_attn", norm_self_attn);
  register_module("norm_ff", norm_ff);
}

Tensor FastWeightsLayer::forward(const Tensor& x, const Tensor& state, Tensor* final_state,
                                 Generator& dropout_gen) const {
  // labml feeds the raw residual stream to the attention (norm_self_attn unused).
  const Tensor a = attn.forward(attention_layer_norm ? norm_self_attn.forward(x) : x, state, final_state);
  const Tensor h = x + loom::dropout(a, dropout, dropout_gen, training());
  const Tensor f = feed_forward.forward(norm_ff.forward(h), dropout_gen);
  return h + loom::dropout(f, dropout, dropout_gen, training());
}

FastWeightsStack::FastWeightsStack(const ModelConfig& c, Generator& gen) : norm(c.d_model) {
  // labml deep-copies one prototype layer (clone_module_list): here every layer
  // draws from the same generator state, so all layers start identical.
  const Generator start = gen;
  for (int64_t l = 0; l < c.layers; ++l) {
    gen = start;
    owned.push_back(std::make_unique<FastWeightsLayer>(c, gen));
    layers.append(*owned.back());
  }
  register_module("layers", layers);
  register_module("norm", norm);
}

// ---- the model ---------------------------------------------------------------------------

FastWeightsTransformer::FastWeightsTransformer(const ModelConfig& config)
    : LanguageModel(config),
      init_gen_((check_fast_weights_config(config_), config_.seed)),
      transformer_(config_, init_gen_),
      src_embed_(config_.vocab, config_.d_model, init_gen_),
      generator_(config_.d_model, config_.vocab, true, init_gen_) {
  register_module("src_embed", src_embed_);
  register_module("transformer", transformer_);
  register_module("generator", generator_);
}

Tensor FastWeightsTransformer::run(const Tensor& tokens, const std::vector<Tensor>& states,
                                   std::vector<Tensor>* final_states) {
  LOOM_CHECK(tokens.defined() && tokens.dtype() == DType::i64 && tokens.dim() == 2,
             "fast_weights: tokens must be int64 [L, B], got ", tokens.defined() ? tokens.describe() : "undefined");
  Tensor x = src_embed_.forward(tokens);  // [L, B, d]: no scaling, no positional encoding
  for (size_t l = 0; l < transformer_.owned.size(); ++l) {
    const Tensor state = states.empty() ? Tensor() : states[l];
    Tensor* final_state = final_states ? &(*final_states)[l] : nullptr;
    x = transformer_.owned[l]->forward(x, state, final_state, dropout_gen_);
  }
  return generator_.forward(transformer_.norm.forward(x));
}

Tensor FastWeightsTransformer::forward(const Tensor& tokens) { return run(tokens, {}, nullptr); }

std::unique_ptr<DecodeState> FastWeightsTransformer::start_decoding(int64_t batch) const {
  LOOM_CHECK(batch > 0, "fast_weights: start_decoding needs a positive batch size, got ", batch);
  auto state = std::make_unique<FastWeightsState>();
  state->batch = batch;
  state->weights.resize(transformer_.owned.size());  // undefined: W = 0 before the first token
  return state;
}

Tensor FastWeightsTransformer::decode(DecodeState& state, const Tensor& tokens) {
  auto* s = dynamic_cast<FastWeightsState*>(&state);
  LOOM_CHECK(s != nullptr && s->weights.size() == transformer_.owned.size(),
             "fast_weights: decode needs a state from this model's start_decoding");
  LOOM_CHECK(tokens.defined() && tokens.dim() == 2 && tokens.size(1) == s->batch, "fast_weights: decode tokens ",
             tokens.defined() ? shape_str(tokens.shape()) : "undefined", " do not match the state's batch of ",
             s->batch, " (expected [T, ", s->batch, "])");
  // Each layer continues from its W and leaves the new W in the state: the
  // prefix is summarised by W and never recomputed.
  std::vector<Tensor> next(s->weights.size());
  const Tensor logits = run(tokens, s->weights, &next);
  s->weights = std::move(next);
  return logits;
}

double FastWeightsTransformer::training_flops_per_token(int64_t /*seq_len*/) const {
  // 6 per weight used in a product (2 forward, 4 backward); the embedding is only
  // looked up. The recurrence touches every element of each head's W [d_k, d_dot]
  // 3 times per token forward (delta rule: read vbar, write, read out; sum rule: 2),
  // 2 FLOPs each, x3 with the backward. Neither depends on the sequence length.
  const FastWeightAttention& attn = transformer_.owned.front()->attn;
  const double d = static_cast<double>(config_.d_model), ff = static_cast<double>(config_.d_ff);
  const double heads = static_cast<double>(attn.heads), d_k = static_cast<double>(attn.d_k);
  const double d_dot = static_cast<double>(attn.feature_size());
  const double per_layer_weights = 4.0 * d * d + (attn.delta ? d * heads : 0.0) + 2.0 * d * ff;
  const double weights = static_cast<double>(config_.layers) * per_layer_weights + d * config_.vocab;
  const double passes = attn.delta ? 3.0 : 2.0;
  const double recurrence = static_cast<double>(config_.layers) * heads * d_k * d_dot * passes * 2.0 * 3.0;
  return 6.0 * weights + recurrence;
}

std::unique_ptr<LanguageModel> make_fast_weights(const ModelConfig& config) {
  return std::make_unique<FastWeightsTransformer>(config);
}

}  // namespace loom::models
