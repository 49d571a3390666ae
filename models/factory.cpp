// factory.cpp: from a ModelConfig to a model of its family.
#include "engine/error.h"
#include "models/bigram.h"
#include "models/language_model.h"

namespace loom::models {

// Each family's file defines its maker.
std::unique_ptr<LanguageModel> make_transformer(const ModelConfig& config);   // transformer.cpp (also primer_ez)
std::unique_ptr<LanguageModel> make_fast_weights(const ModelConfig& config);  // fast_weights.cpp
std::unique_ptr<LanguageModel> make_feedback(const ModelConfig& config);      // feedback.cpp

std::unique_ptr<LanguageModel> make_model(const ModelConfig& config) {
  if (config.family == "transformer" || config.family == "primer_ez") return make_transformer(config);
  if (config.family == "fast_weights") return make_fast_weights(config);
  if (config.family == "feedback") return make_feedback(config);
  if (config.family == "bigram") return std::make_unique<BigramLM>(config);  // the smoke-test model
  LOOM_FAIL("model.family: unknown family '", config.family,
            "' (expected transformer, primer_ez, fast_weights, feedback or bigram)");
}

}  // namespace loom::models
