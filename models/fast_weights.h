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
#include <vector>

#include "models/language_model.h"
#include "models/layers.h"

namespace loom::models {

// ---- feature maps (last axis, composed of engine ops) --------------------------------

// DPFP_ν with sum normalisation, in labml's index order (models/FAMILIES.md §2.3):
//   r = ReLU([x; -x]) (2d entries);  block_i[j] = r[j] · r[(j - i) mod 2d] for i = 1..ν;
//   φ = concat(block_1..block_ν) (2dν entries);  φ' = φ / (Σ φ + eps).
Tensor dpfp_features(const Tensor& x, int64_t nu, double eps = 1e-6);

// φ(x) = ELU(x) + 1 (Katharopoulos et al.), then the same sum normalisation as DPFP.
Tensor elu_plus_one_features(const Tensor& x, double eps = 1e-6);

// ---- modules ------------------------------------------------------------------------

enum class FeatureMap { dpfp, elu_plus_one };

class FastWeightAttention : public Module {
 public:
  FastWeightAttention(const ModelConfig& config, Generator& gen);
  // x [L, B, d_model] -> [L, B, d_model]. `state` [B, H, d_k, d_dot] is W before the
  // first token (undefined: zeros); when `final_state` is given it receives W after
  // the last token.
  Tensor forward(const Tensor& x, const Tensor& state, Tensor* final_state) const;
  // φ' of q or k [..., d_k] -> [..., d_dot].
  Tensor features(const Tensor& x) const;
  // d_dot, the features per head: 2·d_k·ν (DPFP) or d_k (ELU+1).
  int64_t feature_size() const;

  FeatureMap feature_map;
  int64_t nu;
  bool delta;  // the delta rule; false: the sum rule
  int64_t heads, d_k;

  HeadProjection query, key, value;
  ModuleList interpolation_weight;       // "0": the beta projection (delta rule only)
  std::unique_ptr<HeadProjection> beta;  // registered in interpolation_weight
  Linear output;
};

class FastWeightsLayer : public Module {
 public:
  FastWeightsLayer(const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x, const Tensor& state, Tensor* final_state, Generator& dropout_gen) const;

  FastWeightAttention attn;
  FeedForward feed_forward;
  LayerNorm norm_self_attn;  // used only with attention_layer_norm
  LayerNorm norm_ff;
  double dropout;
  bool attention_layer_norm;
};

// labml's FastWeightsAttentionTransformer: the layers and the final norm.
class FastWeightsStack : public Module {
 public:
  FastWeightsStack(const ModelConfig& config, Generator& gen);
  std::vector<std::unique_ptr<FastWeightsLayer>> owned;
  ModuleList layers;
  LayerNorm norm;
};

// What decoding carries between calls: each layer's W [B, H, d_k, d_dot]
// (undefined until the first token: zeros).
struct FastWeightsState : DecodeState {
  int64_t batch = 0;
  std::vector<Tensor> weights;
};

class FastWeightsTransformer : public LanguageModel {
 public:
  explicit FastWeightsTransformer(const ModelConfig& config);

  Tensor forward(const Tensor& tokens) override;
  std::unique_ptr<DecodeState> start_decoding(int64_t batch) const override;
  Tensor decode(DecodeState& state, const Tensor& tokens) override;
  double training_flops_per_token(int64_t seq_len) const override;

 private:
  // Members are built in labml's order (the prototype layer, then the embedding,
  // then the generator) and registered in its state_dict order.
  Generator init_gen_;
  FastWeightsStack transformer_;
  Embedding src_embed_;
  Linear generator_;

  // Runs every layer on tokens [L, B]; states/final_states per layer may be empty.
  Tensor run(const Tensor& tokens, const std::vector<Tensor>& states, std::vector<Tensor>* final_states);
};

// Checks the fast-weights keys of `config` (errors name the key, e.g. model.feature_map).
void check_fast_weights_config(const ModelConfig& config);

}  // namespace loom::models
