// fast_weights.h: the Fast Weights Transformer (Schlag, Irie, Schmidhuber 2021),
// as labml_nn builds it (models/FAMILIES.md §2).
//
// Each layer replaces softmax attention by a fast weight W [d_k, d_dot] per head,
// programmed token by token with the delta rule and read out with the query:
//
//   x ──┬─ FastWeightAttention ─ Drop ─(+)─┬─ LN_ff ─ FFN ─ Drop ─(+)─→
//       └──────────────────────────────────┘└────────────────────────┘
//
//   FastWeightAttention(x), per head:
//     q, k, v = Wq x, Wk x, Wv x  (no bias);  beta = sigmoid(Wβ x)  (no bias)
//     φ'(·)   = DPFP_ν then sum normalisation (or ELU+1, see feature_map)
//     vbar_t  = W_{t-1} φ'(k_t);  W_t = W_{t-1} + beta_t (v_t - vbar_t) φ'(k_t)ᵀ
//     y_t     = W_t φ'(q_t)       (read after write; no 1/√d, no denominator)
//     out     = Wo concat_heads(y) + bo
//
// Tokens are embedded without scaling or positional encoding (the recurrence
// knows the order); a final LayerNorm and a Linear give the logits.
//
// model.fast_layer swaps FastWeightAttention for another fast part with the same
// place in the layer (below: linear, delta_delta, delta_mlp, delta_rnn, delta_lstm,
// rdn; models/FAMILIES.md §2.7); "delta_net", the default, is the layer drawn above.
//
// Defaults are labml's: the attention reads the un-normalised x, and the layer's
// norm_self_attn exists (so checkpoints load) but is unused. ModelConfig options:
//   feature_map: "dpfp" (default, ν = dpfp_nu) | "elu_plus_one"
//   update_rule: "delta" (default) | "sum" (the linear transformer; no beta)
//   attention_layer_norm: true applies norm_self_attn to the attention input (the paper's form)
//
// Parameter names are labml's state_dict names (models/FAMILIES.md §2.4): src_embed,
// transformer.layers.N.{attn.{query,key,value}.linear, attn.interpolation_weight.0.linear,
// attn.output, feed_forward.layer1/2, norm_self_attn, norm_ff}, transformer.norm, generator.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/families/language_model.h"
#include "models/blocks/layers.h"

namespace loom::models {

// ---- feature maps (last axis) -------------------------------------------------------

// DPFP_ν with sum normalisation, in labml's index order (models/FAMILIES.md §2.3):
//   r = ReLU([x; -x]) (2d entries);  block_i[j] = r[j] · r[(j - i) mod 2d] for i = 1..ν;
//   φ = concat(block_1..block_ν) (2dν entries), the fused op dpfp(x, ν);  φ' = φ / (Σ φ + eps).
Tensor dpfp_features(const Tensor& x, int64_t nu, double eps = 1e-6);

// φ(x) = ELU(x) + 1 (Katharopoulos et al.), then the same sum normalisation as DPFP.
Tensor elu_plus_one_features(const Tensor& x, double eps = 1e-6);

// ---- the fast layers (model.fast_layer) ----------------------------------------------------
//
// A FastWeightsLayer's first block is one of these: it reads the residual stream x
// [L, B, d_model] and returns [L, B, d_model] after its output projection. Each
// carries its state (fast weights, recurrent outputs) as a list of tensors, so that
// decoding and carry-over across batches treat every kind alike:
//
//   kind         state (per batch item)                                   op
//   delta_net    {W [H, d_k, d_dot]}                                      delta_rule
//   linear       {W [H, d_k, d_dot]} (sum rule)                           delta_rule, beta undefined
//   delta_delta  {W1 [H, 3d_k+1, d_dot], W2 [H, d_k, d_dot]}              delta_rule twice
//   delta_mlp    {W per fast matrix, 2 per fast_net_depth}                delta_rule per matrix
//   delta_rnn    {W [H, d_k, d_dot], R [H, d_k, d_k], y [H, d_k]}          delta_rule + delta_rnn
//   delta_lstm   {W [3H, d_k, d_dot], R [H, 3, d_k, d_k], h, c [H, d_k]}   delta_rule + delta_lstm
//   rdn          {W [H, d_k, d_k], y [H, d_k]}                             recurrent_delta_net
//
// (d_dot: the feature size of the configured feature map.) Undefined entries are
// zeros, the state before the first token. models/FAMILIES.md §2.7 has the equations.

using LayerState = std::vector<Tensor>;

class FastLayer : public Module {
 public:
  // x [L, B, d_model] -> [L, B, d_model], starting from `state` (empty, or state_size()
  // entries, undefined ones meaning zeros). `final_state`, when given, receives the
  // state_size() tensors after the last token; they are not part of the autodiff graph.
  virtual Tensor forward(const Tensor& x, const LayerState& state, LayerState* final_state) const = 0;
  virtual size_t state_size() const = 0;
  // Forward FLOPs per token of the fast (recurrent) part: each pass over a fast matrix
  // element costs 2. The slow projections are counted from the parameters.
  virtual double recurrence_flops_per_token() const = 0;
  // How many parameter entries the recurrence's own kernel multiplies by (counted in
  // recurrence_flops_per_token, so not again among the model's matrix weights).
  virtual double recurrence_weights() const { return 0; }
};

enum class FeatureMap { dpfp, elu_plus_one };

// The feature map of q and k (dpfp_ν or ELU+1, each sum-normalised) as the config sets it.
struct Features {
  explicit Features(const ModelConfig& config);
  Tensor operator()(const Tensor& x) const;  // [..., n] -> [..., size(n)]
  int64_t size(int64_t n) const;             // 2·n·ν (DPFP) or n (ELU+1)
  FeatureMap map;
  int64_t nu;
};

// delta_net and linear: labml's FastWeightsAttention (the names above).
class FastWeightAttention : public FastLayer {
 public:
  FastWeightAttention(const ModelConfig& config, Generator& gen);
  // x [L, B, d_model] -> [L, B, d_model]. `state` [B, H, d_k, d_dot] is W before the
  // first token (undefined: zeros); when `final_state` is given it receives W after
  // the last token.
  Tensor forward(const Tensor& x, const Tensor& state, Tensor* final_state) const;
  Tensor forward(const Tensor& x, const LayerState& state, LayerState* final_state) const override;
  size_t state_size() const override { return 1; }
  double recurrence_flops_per_token() const override;
  // φ' of q or k [..., d_k] -> [..., d_dot].
  Tensor features(const Tensor& x) const { return phi(x); }
  // d_dot, the features per head: 2·d_k·ν (DPFP) or d_k (ELU+1).
  int64_t feature_size() const { return phi.size(d_k); }

  Features phi;
  bool delta;  // the delta rule; false: the sum rule
  int64_t heads, d_k;

  HeadProjection query, key, value;
  ModuleList interpolation_weight;       // "0": the beta projection (delta rule only)
  std::unique_ptr<HeadProjection> beta;  // registered in interpolation_weight
  Linear output;
};

// delta_delta: a first delta net programs the q, k, v, beta of a second one. The slow
// projection `slow` gives per head q, k [d_k], v [3d_k+1], beta [1]; W1 [3d_k+1, d_dot]
// reads o = W1 φ(q) = (q', k', v', beta'); W2 [d_k, d_dot] is programmed with φ(k'),
// v', σ(beta') and read with φ(q'). State {W1, W2}.
class DeltaDeltaLayer : public FastLayer {
 public:
  DeltaDeltaLayer(const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x, const LayerState& state, LayerState* final_state) const override;
  size_t state_size() const override { return 2; }
  double recurrence_flops_per_token() const override;

  Features phi;
  int64_t heads, d_k;
  HeadProjection slow;
  Linear output;
};

// delta_mlp: a deep fast net. h = q (the slow query, [d_k] per head); per fast block
// (model.fast_net_depth of them) h ← h + W_b φ(LN_b(W_a φ(LN_a(h)))) with W_a
// [hidden, feat(d_k)], W_b [d_k, feat(hidden)], hidden = d_ff / heads; each fast matrix
// is programmed by the delta rule from its own slow keys, values and beta. State: the
// 2·depth fast matrices in order.
class DeltaMlpLayer : public FastLayer {
 public:
  DeltaMlpLayer(const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x, const LayerState& state, LayerState* final_state) const override;
  size_t state_size() const override { return matrices.size(); }
  double recurrence_flops_per_token() const override;

  struct FastMatrix {
    int64_t in, out;  // y = W φ(LN(x)): x [in] -> y [out]
    int64_t offset;   // where its key [in], value [out] and beta [1] start in the slow projection
  };
  Features phi;
  int64_t heads, d_k, hidden;
  std::vector<FastMatrix> matrices;
  HeadProjection slow;  // per head: q [d_k], then each matrix's key, value, beta
  std::vector<std::unique_ptr<LayerNorm>> owned_norms;
  ModuleList norms;  // one per fast matrix, over its input
  Linear output;
};

// delta_rnn (the paper's eq. 12, the authors' v2): a delta_net part z (q, k, v, beta)
// plus a recurrent fast weight R [d_k, d_k] programmed by the delta rule with keys
// softmax(rk), values rv and rate σ(gamma), read with the softmax of the previous output:
// y_t = z_t + R_t softmax(y_{t-1}). The slow projection gives per head q, k, v [d_k],
// beta [1], rk, rv [d_k], gamma [1]. State {W, R, y}.
class DeltaRnnLayer : public FastLayer {
 public:
  DeltaRnnLayer(const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x, const LayerState& state, LayerState* final_state) const override;
  size_t state_size() const override { return 3; }
  double recurrence_flops_per_token() const override;

  Features phi;
  int64_t heads, d_k;
  HeadProjection slow;
  Linear output;
};

// delta_lstm (the authors' v4): per gate g in (input, update, output) the delta_rnn
// slow outputs (q, k, v, beta, rk, rv, gamma: 5d_k + 2 per gate and head); three
// delta_net parts z_g (one delta_rule over 3H heads) and three recurrent fast weights
// R_g read with softmax(h_{t-1}); i = σ(z_i + R_i s), u = z_u + R_u s, o = σ(z_o + R_o s),
// c_t = i u + (1 - i) c_{t-1}, h_t = o c_t. State {W, R, h, c}.
class DeltaLstmLayer : public FastLayer {
 public:
  DeltaLstmLayer(const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x, const LayerState& state, LayerState* final_state) const override;
  size_t state_size() const override { return 4; }
  double recurrence_flops_per_token() const override;

  Features phi;
  int64_t heads, d_k;
  HeadProjection slow;
  Linear output;
};

// rdn, the Recurrent Delta Net (the paper's eqs. 15-18): the slow net that programs the
// fast weight W [d_k, d_k] is itself recurrent through a = tanh(y_{t-1}):
// q = softmax(W_q x + R_q a), k = softmax(W_k x + R_k a), v = W_v x + R_v a,
// beta = σ(w_beta x + r_beta·a); y_t = W_t q_t. The slow projection gives W_q x, W_k x,
// W_v x [d_k] and w_beta x [1] per head; R_q, R_k, R_v [H, d_k, d_k] and r_beta [H, d_k]
// are parameters of the layer. State {W, y}.
class RecurrentDeltaLayer : public FastLayer {
 public:
  RecurrentDeltaLayer(const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x, const LayerState& state, LayerState* final_state) const override;
  size_t state_size() const override { return 2; }
  double recurrence_flops_per_token() const override;
  double recurrence_weights() const override;

  int64_t heads, d_k;
  HeadProjection slow;
  Tensor recurrent_query, recurrent_key, recurrent_value, recurrent_beta;
  Linear output;
};

class FastWeightsLayer : public Module {
 public:
  FastWeightsLayer(const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x, const LayerState& state, LayerState* final_state, Generator& dropout_gen) const;

  std::unique_ptr<FastLayer> fast;  // registered as "attn"
  FeedForward feed_forward;
  LayerNorm norm_self_attn;  // used only with attention_layer_norm
  LayerNorm norm_ff;
  double dropout;
  bool attention_layer_norm;
};

// Builds the fast layer model.fast_layer names.
std::unique_ptr<FastLayer> make_fast_layer(const ModelConfig& config, Generator& gen);

// labml's FastWeightsAttentionTransformer: the layers and the final norm.
class FastWeightsStack : public Module {
 public:
  FastWeightsStack(const ModelConfig& config, Generator& gen);
  std::vector<std::unique_ptr<FastWeightsLayer>> owned;
  ModuleList layers;
  LayerNorm norm;
};

// What decoding (and carry-over across training batches) carries between calls:
// each layer's state (undefined entries until the first token: zeros).
struct FastWeightsState : DecodeState {
  int64_t batch = 0;
  std::vector<LayerState> layers;
  NamedTensors tensors() const override;  // "layers.<l>.<i>", the defined entries
  void load_tensors(const NamedTensors& tensors) override;
};

class FastWeightsTransformer : public LanguageModel {
 public:
  explicit FastWeightsTransformer(const ModelConfig& config);

  Tensor forward(const Tensor& tokens) override;
  std::unique_ptr<DecodeState> start_decoding(int64_t batch) const override;
  Tensor decode(DecodeState& state, const Tensor& tokens) override;
  double training_flops_per_token(int64_t seq_len) const override;
  double recurrence_training_flops_per_token() const override;

 private:
  // Members are built in labml's order (the prototype layer, then the embedding,
  // then the generator) and registered in its state_dict order.
  Generator init_gen_;
  FastWeightsStack transformer_;
  Embedding src_embed_;
  Linear generator_;

  // Runs every layer on tokens [L, B]; states/final_states per layer may be empty.
  Tensor run(const Tensor& tokens, const std::vector<LayerState>& states, std::vector<LayerState>* final_states);
};

// Checks the fast-weights keys of `config` (errors name the key, e.g. model.feature_map).
void check_fast_weights_config(const ModelConfig& config);

// The parameters one layer of `config` holds (its fast part, feed-forward block and norms),
// for estimate_parameters.
double fast_weights_layer_parameters(const ModelConfig& config);

// The kinds model.fast_layer may name, and them as one comma-separated line.
std::string fast_layer_names();
inline constexpr const char* kFastLayers[] = {"delta_net", "linear",     "delta_delta", "delta_mlp",
                                              "delta_rnn", "delta_lstm", "rdn"};

}  // namespace loom::models
