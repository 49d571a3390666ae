// transformer.cpp (being written)
#include "engine/error.h"
#include "models/language_model.h"

namespace loom::models {

std::unique_ptr<LanguageModel> make_transformer(const ModelConfig& config) {
  LOOM_FAIL("model.family: '", config.family, "' is not built yet");
}

}  // namespace loom::models
