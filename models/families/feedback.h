// feedback.h: the Feedback Transformer (Fan et al. 2020), labml's two variants
// (models/FAMILIES.md §3):
//   shared_kv = true  (default, labml's FeedbackTransformerKV): one key and one
//                     value projection of each memory vector, shared by every layer;
//   shared_kv = false (the paper's form, labml's FeedbackTransformer): every layer
//                     projects the memory with its own keys and values.
//
// The model runs token by token: step t's layers attend over the memory vectors
// m_0 … m_{t−1} of the earlier steps, where m_t = Σ_l softmax(weights)_l h_t^{(l)}
// mixes the embedding and every layer's output. feedback.cpp explains how the
// memory is kept (once-projected rows in preallocated buffers) and why its
// gradients are right.
#pragma once

#include <memory>
#include <vector>

#include "models/families/language_model.h"
#include "models/blocks/layers.h"

namespace loom::models {

// One layer's attention over the memory: its own query projection, relative-position
// tables and output projection; its own key/value projections in the original variant.
class FeedbackAttention : public Module {
 public:
  static constexpr int64_t kRelativePositions = 4096;  // labml's 2**12
  FeedbackAttention(const ModelConfig& config, bool own_key_value, Generator& gen);
  Tensor key_pos_embeddings;  // P [4096, H, d_k], row 4096 − distance
  Tensor key_pos_bias;        // s [4096, H]
  Tensor query_pos_bias;      // u [H, d_k]
  HeadProjection query;
  std::unique_ptr<HeadProjection> key, value;  // original variant only
  Linear output;
};

// Pre-norm: x += attn(LN_sa(x)) (skipped while the memory is empty); x += FFN(LN_ff(x)).
class FeedbackLayer : public Module {
 public:
  FeedbackLayer(const ModelConfig& config, bool own_key_value, Generator& gen);
  FeedbackAttention attn;
  FeedForward feed_forward;
  LayerNorm norm_self_attn, norm_ff;
};

// labml's FeedbackTransformer(KV) module, named "transformer" in the state_dict.
class FeedbackStack : public Module {
 public:
  FeedbackStack(const ModelConfig& config, Generator& gen);
  Tensor weights;  // [layers + 1]: the memory's mix of the embedding and each layer's output
  std::vector<std::unique_ptr<FeedbackLayer>> layers;
  LayerNorm norm;
  std::unique_ptr<HeadProjection> key, value;  // shared-KV variant only
};

struct FeedbackState;

class FeedbackTransformer : public LanguageModel {
 public:
  explicit FeedbackTransformer(const ModelConfig& config);

  Tensor forward(const Tensor& tokens) override;
  // Decoding never records gradients; the state keeps the memory's keys and values
  // (max_seq_len rows), so each token costs one step.
  std::unique_ptr<DecodeState> start_decoding(int64_t batch) const override;
  Tensor decode(DecodeState& state, const Tensor& tokens) override;
  double training_flops_per_token(int64_t seq_len) const override;
  int64_t context_length() const override { return config_.max_seq_len; }

 private:
  Generator init_gen_;  // seeded with config.seed; declared first: the modules draw from it

 public:
  Embedding src_embed;
  FeedbackStack transformer;
  Linear generator;

 private:
  struct Tables;
  // rows_needed: rows of the position tables the steps reach; step_rows: the rows
  // all the steps of a forward bring to each linear (L·B; 0 when decoding).
  Tables tables(int64_t rows_needed, int64_t step_rows) const;
  std::unique_ptr<FeedbackState> new_state(int64_t batch, int64_t capacity) const;
  Tensor step(const Tensor& ids, FeedbackState& state, const Tables& tables, bool remember);
  Tensor logits(const std::vector<Tensor>& outputs) const;
};

}  // namespace loom::models
