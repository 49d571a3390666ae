#include "models/families/bigram.h"

namespace loom::models {

BigramLM::BigramLM(const ModelConfig& config)
    : LanguageModel(config),
      init_gen_(config.seed),
      embed(config.vocab, config.d_model, init_gen_),
      head(config.d_model, config.vocab, true, init_gen_) {
  register_module("embed", embed);
  register_module("head", head);
}

Tensor BigramLM::forward(const Tensor& tokens) { return head.forward(embed.forward(tokens)); }

std::unique_ptr<DecodeState> BigramLM::start_decoding(int64_t) const { return std::make_unique<DecodeState>(); }

Tensor BigramLM::decode(DecodeState&, const Tensor& tokens) { return forward(tokens); }

double BigramLM::training_flops_per_token(int64_t) const {
  // The head's GEMM: 2·d·V forward, twice that backward (the embedding is a lookup).
  return 6.0 * static_cast<double>(config_.d_model) * static_cast<double>(config_.vocab);
}

}  // namespace loom::models
