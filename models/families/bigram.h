// bigram.h: the smallest language model, a smoke test for the training programs.
//
// The logits of the next token depend on the current token only:
// logits = head(embed(token)), an Embedding [vocab, d_model] and a Linear
// d_model -> vocab. Decoding needs no state beyond the token itself.
#pragma once

#include "models/families/language_model.h"
#include "models/blocks/layers.h"

namespace loom::models {

class BigramLM : public LanguageModel {
 public:
  explicit BigramLM(const ModelConfig& config);

  Tensor forward(const Tensor& tokens) override;  // int64 [L, B] -> [L, B, vocab]
  std::unique_ptr<DecodeState> start_decoding(int64_t batch) const override;
  Tensor decode(DecodeState& state, const Tensor& tokens) override;
  double training_flops_per_token(int64_t seq_len) const override;

 private:
  Generator init_gen_;  // declared first: the layers draw their initial values from it
 public:
  Embedding embed;  // "embed.weight"
  Linear head;      // "head.weight", "head.bias"
};

}  // namespace loom::models
