// fast_weights.cpp: the Fast Weights Transformer (see fast_weights.h).
#include "models/families/fast_weights.h"

#include <cmath>
#include <cstdio>
#include <iterator>
#include <string>

#include "engine/error.h"

namespace loom::models {

// ---- configuration -----------------------------------------------------------------

std::string fast_layer_names() {
  std::string out;
  for (const char* k : kFastLayers) out += (out.empty() ? "" : ", ") + std::string(k);
  return out;
}

namespace {

// Every fast layer, one row each: its name (model.fast_layer, one of
// kFastLayers), how to build it, and for estimate_parameters the slow
// projection's outputs per head and the fast part's other parameters.
struct FastLayerKind {
  const char* name;
  std::unique_ptr<FastLayer> (*make)(const ModelConfig& c, Generator& gen);
  double (*slow_outputs_per_head)(const ModelConfig& c, double dk);
  double (*other_parameters)(const ModelConfig& c, double dk);
};

template <class Layer>
std::unique_ptr<FastLayer> make(const ModelConfig& c, Generator& gen) {
  return std::make_unique<Layer>(c, gen);
}

double none(const ModelConfig&, double) { return 0; }
double hidden_of(const ModelConfig& c) { return static_cast<double>(c.d_ff) / static_cast<double>(c.heads); }

const FastLayerKind kFastLayerKinds[] = {
    {"delta_net", make<FastWeightAttention>,
     [](const ModelConfig& c, double dk) { return 3 * dk + (c.update_rule == "delta" ? 1 : 0); }, none},
    {"linear", make<FastWeightAttention>, [](const ModelConfig&, double dk) { return 3 * dk; }, none},
    {"delta_delta", make<DeltaDeltaLayer>, [](const ModelConfig&, double dk) { return 5 * dk + 2; }, none},
    {"delta_mlp", make<DeltaMlpLayer>,
     [](const ModelConfig& c, double dk) {
       return dk + static_cast<double>(c.fast_net_depth) * 2 * (dk + hidden_of(c) + 1);
     },
     // the layer norms before each fast matrix
     [](const ModelConfig& c, double dk) { return static_cast<double>(c.fast_net_depth) * 2 * (dk + hidden_of(c)); }},
    {"delta_rnn", make<DeltaRnnLayer>, [](const ModelConfig&, double dk) { return 5 * dk + 2; }, none},
    {"delta_lstm", make<DeltaLstmLayer>, [](const ModelConfig&, double dk) { return 3 * (5 * dk + 2); }, none},
    {"rdn", make<RecurrentDeltaLayer>, [](const ModelConfig&, double dk) { return 3 * dk + 1; },
     // R_q, R_k, R_v, r_beta
     [](const ModelConfig& c, double dk) { return static_cast<double>(c.heads) * (3 * dk * dk + dk); }},
};
static_assert(std::size(kFastLayerKinds) == std::size(kFastLayers), "one row per name of kFastLayers");

const FastLayerKind& fast_layer_kind(const std::string& name) {
  for (const FastLayerKind& kind : kFastLayerKinds)
    if (name == kind.name) return kind;
  LOOM_FAIL("model.fast_layer: unknown fast layer '", name, "' (expected one of ", fast_layer_names(), ")");
}

}  // namespace

void check_fast_weights_config(const ModelConfig& c) {
  LOOM_CHECK(c.vocab > 0, "model.vocab: must be positive, got ", c.vocab);
  LOOM_CHECK(c.d_model > 0, "model.d_model: must be positive, got ", c.d_model);
  check_heads(c.d_model, c.heads);
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
  const std::string& kind = c.fast_layer;
  fast_layer_kind(kind);  // throws for an unknown name
  // Keys a layer does not read are refused unless they keep their default.
  LOOM_CHECK(c.update_rule == "delta" || kind == "delta_net", "model.update_rule: '", c.update_rule,
             "' is read only by fast_layer delta_net (fast_layer ", kind,
             " has its own rule; fast_layer linear is the sum rule)");
  LOOM_CHECK(kind != "rdn" || (c.feature_map == "dpfp" && c.dpfp_nu == 1), "model.feature_map / model.dpfp_nu: ",
             "fast_layer rdn normalises its q and k with a softmax inside its op and reads no feature map; ",
             "leave them at their defaults");
  LOOM_CHECK(c.fast_net_depth >= 1, "model.fast_net_depth: must be at least 1, got ", c.fast_net_depth);
  LOOM_CHECK(c.fast_net_depth == 1 || kind == "delta_mlp", "model.fast_net_depth: read only by fast_layer delta_mlp, ",
             "not ", kind);
  if (kind == "delta_mlp") {
    LOOM_CHECK(c.d_ff % c.heads == 0, "model.d_ff: fast_layer delta_mlp splits d_ff = ", c.d_ff, " over ", c.heads,
               " heads (its fast hidden layer has d_ff / heads units per head); it is not divisible");
    const int64_t hidden = c.d_ff / c.heads;
    LOOM_CHECK(c.feature_map != "dpfp" || c.dpfp_nu <= 2 * hidden - 1, "model.dpfp_nu: must be at most 2·(d_ff / heads) - 1 = ",
               2 * hidden - 1, " for the delta_mlp fast hidden layer of ", hidden, " units, got ", c.dpfp_nu);
  }
}


double fast_weights_layer_parameters(const ModelConfig& c) {
  const double d = static_cast<double>(c.d_model), H = static_cast<double>(c.heads);
  const double dk = d / H, ff = static_cast<double>(c.d_ff);
  // Feed-forward block, its norm and the (possibly unused) attention norm, the output projection.
  const double common = 2 * d * ff + ff + d + 4 * d + d * d + d;
  const FastLayerKind& kind = fast_layer_kind(c.fast_layer);
  return common + d * H * kind.slow_outputs_per_head(c, dk) + kind.other_parameters(c, dk);
}

// ---- feature maps --------------------------------------------------------------------

// Both maps end in the sum normalisation φ / (Σ φ + eps) over the last axis
// (engine/ops/sum_normalise.cpp): retrieval W φ'(q) becomes a weighted average of
// W's columns instead of growing with the number of features.

// The map itself is one fused op (engine/ops/dpfp.cpp): r = relu([x, -x]) times
// torch.roll(r, i) for i = 1..nu, the blocks side by side.
Tensor dpfp_features(const Tensor& x, int64_t nu, double eps) { return sum_normalise(dpfp(x, nu), eps); }

// Katharopoulos et al. pair ELU+1 with the attention denominator z·φ(q), z the
// running sum of φ(k). Here it gets the sum normalisation instead, as in Schlag
// et al.'s experiments (models/FAMILIES.md §2.6): the denominator grows without bound over
// long contexts and hurt perplexity, and the delta rule's vbar = W φ'(k) only
// retrieves a stored value when φ'(k) sums to 1. ELU+1 > 0, so the sum is never 0.
Tensor elu_plus_one_features(const Tensor& x, double eps) { return elu_plus_one_normalised(x, eps); }

Features::Features(const ModelConfig& c)
    : map(c.feature_map == "dpfp" ? FeatureMap::dpfp : FeatureMap::elu_plus_one), nu(c.dpfp_nu) {}

Tensor Features::operator()(const Tensor& x) const {
  return map == FeatureMap::dpfp ? dpfp_features(x, nu) : elu_plus_one_features(x);
}

int64_t Features::size(int64_t n) const { return map == FeatureMap::dpfp ? 2 * n * nu : n; }

// ---- delta_net and linear ---------------------------------------------------------------

FastWeightAttention::FastWeightAttention(const ModelConfig& c, Generator& gen)
    : phi(c),
      delta(c.fast_layer == "delta_net" && c.update_rule == "delta"),
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

Tensor FastWeightAttention::forward(const Tensor& x, const Tensor& state, Tensor* final_state) const {
  const int64_t L = x.size(0), B = x.size(1);
  const Tensor q = features(query.forward(x));                       // [L, B, H, d_dot]
  const Tensor k = features(key.forward(x));                         // [L, B, H, d_dot]
  const Tensor v = value.forward(x);                                 // [L, B, H, d_k]
  const Tensor b = delta ? sigmoid(beta->forward(x)) : Tensor();     // [L, B, H, 1]
  const Tensor y = delta_rule(q, k, v, b, state, final_state);       // [L, B, H, d_k]
  return output.forward(reshape(y, {L, B, heads * d_k}));
}

namespace {

// Named slices of the last axis of a slow projection, cut one after another, so
// that a layer reads its inputs by name instead of by offset.
struct Slice {
  int64_t offset = 0, size = 0;
  Tensor of(const Tensor& p) const { return narrow(p, -1, offset, size); }
};

struct Columns {
  int64_t width = 0;  // of everything taken so far
  Slice take(int64_t size) {
    const Slice s{width, size};
    width += size;
    return s;
  }
};

// What the delta rule reads: query and key [d_key], value [d_value], beta [1].
struct DeltaRuleColumns {
  Slice q, k, v, beta;
};

DeltaRuleColumns delta_rule_columns(Columns& c, int64_t d_key, int64_t d_value) {
  const Slice q = c.take(d_key), k = c.take(d_key), v = c.take(d_value), beta = c.take(1);
  return {q, k, v, beta};
}

// What a recurrent fast weight (delta_rnn, a gate of delta_lstm) reads: its key
// and value [d], its learning rate gamma [1].
struct RecurrentColumns {
  Slice rk, rv, gamma;
};

RecurrentColumns recurrent_columns(Columns& c, int64_t d) {
  const Slice rk = c.take(d), rv = c.take(d), gamma = c.take(1);
  return {rk, rv, gamma};
}

// Entry i of a state (empty: zeros) and the slot for entry i of a final state.
Tensor entry(const LayerState& state, size_t i) { return i < state.size() ? state[i] : Tensor(); }
Tensor* slot(LayerState* final_state, size_t i) { return final_state ? &(*final_state)[i] : nullptr; }

// Forward FLOPs per token of one delta_rule over W [rows, cols] per head: vbar, the
// write and the read-out each pass over W once (the sum rule skips vbar), 2 FLOPs each.
double delta_rule_flops(double heads, double rows, double cols, bool delta = true) {
  return heads * rows * cols * (delta ? 3.0 : 2.0) * 2.0;
}

}  // namespace

Tensor FastWeightAttention::forward(const Tensor& x, const LayerState& state, LayerState* final_state) const {
  return forward(x, entry(state, 0), slot(final_state, 0));
}

double FastWeightAttention::recurrence_flops_per_token() const {
  return delta_rule_flops(static_cast<double>(heads), static_cast<double>(d_k),
                          static_cast<double>(feature_size()), delta);
}

// ---- delta_delta -------------------------------------------------------------------------
//
// Why delta_rule twice and no fused op of its own: W1's update reads only k and v, which
// come from the slow projection of x, never from W2; so the whole sequence of W1's
// outputs o_t = W1_t φ(q_t) is known before W2 starts, and W2's own update reads only
// (parts of) o_t. Two sequential calls compute exactly the interleaved per-step
// recurrence, and each keeps the delta rule's memory-lean backward.

DeltaDeltaLayer::DeltaDeltaLayer(const ModelConfig& c, Generator& gen)
    : phi(c),
      heads(c.heads),
      d_k(c.d_model / c.heads),
      slow(c.d_model, heads, 5 * d_k + 2, false, gen),
      output(c.d_model, c.d_model, true, gen) {
  register_module("slow", slow);
  register_module("output", output);
}

Tensor DeltaDeltaLayer::forward(const Tensor& x, const LayerState& state, LayerState* final_state) const {
  const int64_t L = x.size(0), B = x.size(1), d = d_k;
  const Tensor p = slow.forward(x);  // [L, B, H, 5d + 2]
  Columns p_columns, o_columns;
  const DeltaRuleColumns first = delta_rule_columns(p_columns, d, 3 * d + 1);
  const Tensor o = delta_rule(phi(first.q.of(p)), phi(first.k.of(p)), first.v.of(p), sigmoid(first.beta.of(p)),
                              entry(state, 0), slot(final_state, 0));
  // o [L, B, H, 3d + 1] = (q', k', v', beta') programs and reads the second fast weight.
  const DeltaRuleColumns second = delta_rule_columns(o_columns, d, d);
  const Tensor y = delta_rule(phi(second.q.of(o)), phi(second.k.of(o)), second.v.of(o), sigmoid(second.beta.of(o)),
                              entry(state, 1), slot(final_state, 1));
  return output.forward(reshape(y, {L, B, heads * d_k}));
}

double DeltaDeltaLayer::recurrence_flops_per_token() const {
  const double H = static_cast<double>(heads), d = static_cast<double>(d_k);
  const double d_dot = static_cast<double>(phi.size(d_k));
  return delta_rule_flops(H, 3 * d + 1, d_dot) + delta_rule_flops(H, d, d_dot);
}

// ---- delta_mlp ---------------------------------------------------------------------------
//
// Why delta_rule per fast matrix and no fused op: every fast matrix is programmed from
// its own slow keys, values and betas (functions of x_t alone), so its sequence of
// states does not depend on the activations flowing through the fast net. Only the
// read-outs chain (the query of matrix j+1 at step t is built from matrix j's output at
// step t, read after matrix j's write of step t), and delta_rule takes all L queries at
// once: one call per matrix, in order, is the per-step recurrence.

DeltaMlpLayer::DeltaMlpLayer(const ModelConfig& c, Generator& gen)
    : phi(c),
      heads(c.heads),
      d_k(c.d_model / c.heads),
      hidden(c.d_ff / c.heads),
      slow(c.d_model, heads, d_k + c.fast_net_depth * 2 * (d_k + hidden + 1), false, gen),
      output(c.d_model, c.d_model, true, gen) {
  int64_t offset = d_k;  // after the query
  for (int64_t block = 0; block < c.fast_net_depth; ++block)
    for (const auto& [in, out] : {std::pair{d_k, hidden}, std::pair{hidden, d_k}}) {
      matrices.push_back({in, out, offset});
      offset += in + out + 1;
      owned_norms.push_back(std::make_unique<LayerNorm>(in));
      norms.append(*owned_norms.back());
    }
  register_module("slow", slow);
  register_module("norms", norms);
  register_module("output", output);
}

Tensor DeltaMlpLayer::forward(const Tensor& x, const LayerState& state, LayerState* final_state) const {
  const int64_t L = x.size(0), B = x.size(1);
  const Tensor p = slow.forward(x);  // [L, B, H, width]
  Tensor h = narrow(p, -1, 0, d_k);  // the slow query starts the fast net
  Tensor a;                          // the block's hidden activation
  for (size_t j = 0; j < matrices.size(); ++j) {
    const FastMatrix& m = matrices[j];
    const Tensor input = phi(owned_norms[j]->forward(j % 2 == 0 ? h : a));
    const Tensor y = delta_rule(input, phi(narrow(p, -1, m.offset, m.in)), narrow(p, -1, m.offset + m.in, m.out),
                                sigmoid(narrow(p, -1, m.offset + m.in + m.out, 1)), entry(state, j), slot(final_state, j));
    if (j % 2 == 0) a = y;
    else h = h + y;  // the residual around each fast block
  }
  return output.forward(reshape(h, {L, B, heads * d_k}));
}

double DeltaMlpLayer::recurrence_flops_per_token() const {
  double flops = 0;
  for (const FastMatrix& m : matrices)
    flops += delta_rule_flops(static_cast<double>(heads), static_cast<double>(m.out), static_cast<double>(phi.size(m.in)));
  return flops;
}

// ---- delta_rnn, delta_lstm, rdn: the recurrent fast layers --------------------------------
//
// Their states feed back through the read-out (y_{t-1} or h_{t-1} enters step t), so the
// time loop cannot be split into independent delta_rule calls: each has its fused op
// (engine/ops.h). The layer applies the feature maps, softmax and σ the op expects of
// its inputs; RDN's softmax and σ depend on y_{t-1} and happen inside its op.

DeltaRnnLayer::DeltaRnnLayer(const ModelConfig& c, Generator& gen)
    : phi(c),
      heads(c.heads),
      d_k(c.d_model / c.heads),
      slow(c.d_model, heads, 5 * d_k + 2, false, gen),
      output(c.d_model, c.d_model, true, gen) {
  register_module("slow", slow);
  register_module("output", output);
}

Tensor DeltaRnnLayer::forward(const Tensor& x, const LayerState& state, LayerState* final_state) const {
  const int64_t L = x.size(0), B = x.size(1), d = d_k;
  const Tensor p = slow.forward(x);  // [L, B, H, 5d + 2]
  Columns columns;
  const DeltaRuleColumns fast = delta_rule_columns(columns, d, d);
  const RecurrentColumns rec = recurrent_columns(columns, d);
  const Tensor z = delta_rule(phi(fast.q.of(p)), phi(fast.k.of(p)), fast.v.of(p), sigmoid(fast.beta.of(p)),
                              entry(state, 0), slot(final_state, 0));
  const Tensor y = delta_rnn(z, softmax(rec.rk.of(p)), rec.rv.of(p), sigmoid(rec.gamma.of(p)), entry(state, 1),
                             entry(state, 2), slot(final_state, 1), slot(final_state, 2));
  return output.forward(reshape(y, {L, B, heads * d_k}));
}

double DeltaRnnLayer::recurrence_flops_per_token() const {
  const double H = static_cast<double>(heads), d = static_cast<double>(d_k);
  // R [d, d]: vbar, the write and the read-out R s, as in the delta rule.
  return delta_rule_flops(H, d, static_cast<double>(phi.size(d_k))) + delta_rule_flops(H, d, d);
}

DeltaLstmLayer::DeltaLstmLayer(const ModelConfig& c, Generator& gen)
    : phi(c),
      heads(c.heads),
      d_k(c.d_model / c.heads),
      slow(c.d_model, heads, 3 * (5 * d_k + 2), false, gen),
      output(c.d_model, c.d_model, true, gen) {
  register_module("slow", slow);
  register_module("output", output);
}

Tensor DeltaLstmLayer::forward(const Tensor& x, const LayerState& state, LayerState* final_state) const {
  const int64_t L = x.size(0), B = x.size(1), H = heads, d = d_k;
  const Tensor p = reshape(slow.forward(x), {L, B, H, 3, 5 * d + 2});  // per gate as in delta_rnn
  // The three gates' delta_net parts are one delta_rule over 3H heads (head-major, then gate).
  auto gates_as_heads = [&](const Tensor& t) { return reshape(t, {L, B, 3 * H, t.size(-1)}); };
  Columns columns;
  const DeltaRuleColumns fast = delta_rule_columns(columns, d, d);
  const RecurrentColumns rec = recurrent_columns(columns, d);
  const Tensor z = delta_rule(gates_as_heads(phi(fast.q.of(p))), gates_as_heads(phi(fast.k.of(p))),
                              gates_as_heads(fast.v.of(p)), gates_as_heads(sigmoid(fast.beta.of(p))), entry(state, 0),
                              slot(final_state, 0));
  const Tensor h = delta_lstm(reshape(z, {L, B, H, 3, d}), softmax(rec.rk.of(p)), rec.rv.of(p),
                              sigmoid(rec.gamma.of(p)), entry(state, 1), entry(state, 2), entry(state, 3),
                              slot(final_state, 1), slot(final_state, 2), slot(final_state, 3));
  return output.forward(reshape(h, {L, B, heads * d_k}));
}

double DeltaLstmLayer::recurrence_flops_per_token() const {
  const double H = static_cast<double>(heads), d = static_cast<double>(d_k);
  return 3 * (delta_rule_flops(H, d, static_cast<double>(phi.size(d_k))) + delta_rule_flops(H, d, d));
}

RecurrentDeltaLayer::RecurrentDeltaLayer(const ModelConfig& c, Generator& gen)
    : heads(c.heads),
      d_k(c.d_model / c.heads),
      slow(c.d_model, heads, 3 * d_k + 1, false, gen),
      output(c.d_model, c.d_model, true, gen) {
  // The authors' initialisation of the recurrent slow weights: N(0, 1/√d_k).
  const double std = 1.0 / std::sqrt(static_cast<double>(d_k));
  recurrent_query = register_parameter("recurrent_query", normal({heads, d_k, d_k}, 0.0, std, gen));
  recurrent_key = register_parameter("recurrent_key", normal({heads, d_k, d_k}, 0.0, std, gen));
  recurrent_value = register_parameter("recurrent_value", normal({heads, d_k, d_k}, 0.0, std, gen));
  recurrent_beta = register_parameter("recurrent_beta", normal({heads, d_k}, 0.0, std, gen));
  register_module("slow", slow);
  register_module("output", output);
}

Tensor RecurrentDeltaLayer::forward(const Tensor& x, const LayerState& state, LayerState* final_state) const {
  const int64_t L = x.size(0), B = x.size(1), d = d_k;
  const Tensor p = slow.forward(x);  // [L, B, H, 3d + 1]: W_q x, W_k x, W_v x [d], w_beta x [1]
  Columns columns;
  const DeltaRuleColumns slow_part = delta_rule_columns(columns, d, d);
  const Tensor y = recurrent_delta_net(slow_part.q.of(p), slow_part.k.of(p), slow_part.v.of(p),
                                       slow_part.beta.of(p), recurrent_query, recurrent_key, recurrent_value,
                                       recurrent_beta, entry(state, 0), entry(state, 1), slot(final_state, 0),
                                       slot(final_state, 1));
  return output.forward(reshape(y, {L, B, heads * d_k}));
}

double RecurrentDeltaLayer::recurrence_flops_per_token() const {
  // The fast weight W [d, d], and the slow net's R_q a, R_k a, R_v a and r_beta·a, which
  // the same kernel computes at every step: 2 FLOPs per recurrent weight.
  return delta_rule_flops(static_cast<double>(heads), static_cast<double>(d_k), static_cast<double>(d_k)) +
         2.0 * recurrence_weights();
}

double RecurrentDeltaLayer::recurrence_weights() const {
  return static_cast<double>(recurrent_query.numel() + recurrent_key.numel() + recurrent_value.numel() +
                             recurrent_beta.numel());
}

// ---- the layer ---------------------------------------------------------------------------

std::unique_ptr<FastLayer> make_fast_layer(const ModelConfig& c, Generator& gen) {
  return fast_layer_kind(c.fast_layer).make(c, gen);
}

FastWeightsLayer::FastWeightsLayer(const ModelConfig& c, Generator& gen)
    : fast(make_fast_layer(c, gen)),
      feed_forward(c.d_model, c.d_ff, Activation::relu, c.dropout, gen),
      norm_self_attn(c.d_model),
      norm_ff(c.d_model),
      dropout(c.dropout),
      attention_layer_norm(c.attention_layer_norm) {
  register_module("attn", *fast);
  register_module("feed_forward", feed_forward);
  register_module("norm_self_attn", norm_self_attn);
  register_module("norm_ff", norm_ff);
}

Tensor FastWeightsLayer::forward(const Tensor& x, const LayerState& state, LayerState* final_state,
                                 Generator& dropout_gen) const {
  // labml feeds the raw residual stream to the attention (norm_self_attn unused).
  const Tensor a = fast->forward(attention_layer_norm ? norm_self_attn.forward(x) : x, state, final_state);
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

Tensor FastWeightsTransformer::run(const Tensor& tokens, const std::vector<LayerState>& states,
                                   std::vector<LayerState>* final_states) {
  LOOM_CHECK(tokens.defined() && tokens.dtype() == DType::i64 && tokens.dim() == 2,
             "fast_weights: tokens must be int64 [L, B], got ", tokens.defined() ? tokens.describe() : "undefined");
  Tensor x = src_embed_.forward(tokens);  // [L, B, d]: no scaling, no positional encoding
  for (size_t l = 0; l < transformer_.owned.size(); ++l) {
    const LayerState none;
    const LayerState& state = states.empty() ? none : states[l];
    LayerState* final_state = nullptr;
    if (final_states) {
      final_state = &(*final_states)[l];
      final_state->assign(transformer_.owned[l]->fast->state_size(), Tensor());
    }
    x = transformer_.owned[l]->forward(x, state, final_state, dropout_gen_);
  }
  return generator_.forward(transformer_.norm.forward(x));
}

Tensor FastWeightsTransformer::forward(const Tensor& tokens) { return run(tokens, {}, nullptr); }

std::unique_ptr<DecodeState> FastWeightsTransformer::start_decoding(int64_t batch) const {
  LOOM_CHECK(batch > 0, "fast_weights: start_decoding needs a positive batch size, got ", batch);
  auto state = std::make_unique<FastWeightsState>();
  state->batch = batch;
  state->layers.resize(transformer_.owned.size());  // empty: every state is zero before the first token
  return state;
}

Tensor FastWeightsTransformer::decode(DecodeState& state, const Tensor& tokens) {
  auto* s = dynamic_cast<FastWeightsState*>(&state);
  LOOM_CHECK(s != nullptr && s->layers.size() == transformer_.owned.size(),
             "fast_weights: decode needs a state from this model's start_decoding");
  LOOM_CHECK(tokens.defined() && tokens.dim() == 2 && tokens.size(1) == s->batch, "fast_weights: decode tokens ",
             tokens.defined() ? shape_str(tokens.shape()) : "undefined", " do not match the state's batch of ",
             s->batch, " (expected [T, ", s->batch, "])");
  // Each layer continues from its state and leaves the new one in it: the prefix is
  // summarised by the fast weights and recurrent outputs, never recomputed. The
  // states are detached, so a training step that continues a carried state
  // (data.carry_over) backpropagates through its own batch only.
  std::vector<LayerState> next(s->layers.size());
  const Tensor logits = run(tokens, s->layers, &next);
  for (LayerState& layer : next)
    for (Tensor& t : layer)
      if (t.defined()) t = t.detach();
  s->layers = std::move(next);
  return logits;
}

NamedTensors FastWeightsState::tensors() const {
  NamedTensors out;
  for (size_t l = 0; l < layers.size(); ++l)
    for (size_t i = 0; i < layers[l].size(); ++i)
      if (layers[l][i].defined()) out.push_back({"layers." + std::to_string(l) + "." + std::to_string(i), layers[l][i]});
  return out;
}

void FastWeightsState::load_tensors(const NamedTensors& tensors) {
  for (LayerState& layer : layers) layer.clear();
  for (const auto& [name, t] : tensors) {
    size_t l = 0, i = 0;
    int used = 0;
    const bool ok = std::sscanf(name.c_str(), "layers.%zu.%zu%n", &l, &i, &used) == 2 &&
                    used == static_cast<int>(name.size()) && l < layers.size() && i < 64;
    LOOM_CHECK(ok, "fast_weights: carried state tensor '", name, "' names no layer of this model (", layers.size(),
               " layers)");
    LOOM_CHECK(t.dim() >= 1 && t.size(0) == batch, "fast_weights: carried state tensor '", name, "' ",
               shape_str(t.shape()), " is not for a batch of ", batch);
    if (layers[l].size() <= i) layers[l].resize(i + 1);
    layers[l][i] = t;
  }
}

double FastWeightsTransformer::training_flops_per_token(int64_t /*seq_len*/) const {
  // 6 per weight used in a product (2 forward, 4 backward): every parameter of two or
  // more axes is a matrix (or, for rdn, a stack of per-head matrices) applied to each
  // token, except the embedding table, which is only looked up. The fast recurrence
  // costs what each layer reports forward, x3 with the backward; it includes the
  // weights its kernel multiplies by (rdn's R), which are taken out of the matrix
  // weights so that nothing counts twice. Neither depends on the sequence length.
  double weights = 0;
  for (const auto& [name, t] : named_parameters())
    if (t.dim() >= 2 && name != "src_embed.weight") weights += static_cast<double>(t.numel());
  for (const auto& layer : transformer_.owned) weights -= layer->fast->recurrence_weights();
  return 6.0 * weights + recurrence_training_flops_per_token();
}

double FastWeightsTransformer::recurrence_training_flops_per_token() const {
  double recurrence = 0;
  for (const auto& layer : transformer_.owned) recurrence += layer->fast->recurrence_flops_per_token();
  return 3.0 * recurrence;
}

std::unique_ptr<LanguageModel> make_fast_weights(const ModelConfig& config) {
  return std::make_unique<FastWeightsTransformer>(config);
}

}  // namespace loom::models
