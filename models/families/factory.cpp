// factory.cpp: from a ModelConfig to a model of its family, after a size check.
#include <unistd.h>

#include <cstdio>

#include "engine/error.h"
#include "models/families/bigram.h"
#include "models/families/fast_weights.h"
#include "models/families/language_model.h"

namespace loom::models {

// Each family's file defines its maker.
std::unique_ptr<LanguageModel> make_transformer(const ModelConfig& config);   // transformer.cpp (also primer_ez)
std::unique_ptr<LanguageModel> make_fast_weights(const ModelConfig& config);  // fast_weights.cpp
std::unique_ptr<LanguageModel> make_feedback(const ModelConfig& config);      // feedback.cpp

double estimate_parameters(const ModelConfig& c) {
  const double vocab = static_cast<double>(c.vocab), d = static_cast<double>(c.d_model);
  const double d_ff = static_cast<double>(c.d_ff), layers = static_cast<double>(c.layers);
  const double embeddings = 2 * vocab * d;  // input table and output projection
  if (c.family == "bigram") return embeddings;
  double per_layer = 4 * d * d + 2 * d * d_ff;  // Q, K, V, output; the two feed-forward matrices
  double positions = 0;
  if (c.family == "transformer" || c.family == "primer_ez") positions = 5000 * d;  // the positional table
  if (c.family == "feedback") positions = static_cast<double>(c.max_seq_len) * d;
  if (c.family == "fast_weights") per_layer = fast_weights_layer_parameters(c);  // each fast layer its own
  return embeddings + layers * per_layer + positions;
}

void DecodeState::load_tensors(const NamedTensors& tensors) {
  LOOM_CHECK(tensors.empty(), "this model's decoding state carries no tensors, but ", tensors.size(),
             " were given (a carried state from another family?)");
}

namespace {

double physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page_size = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page_size > 0 ? static_cast<double>(pages) * static_cast<double>(page_size) : 0;
}

std::string bytes_text(double bytes) {
  const char* units[] = {"bytes", "KB", "MB", "GB", "TB", "PB", "EB"};
  int u = 0;
  while (bytes >= 1000 && u < 6) bytes /= 1000, ++u;
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, bytes < 1e4 ? "%.3g %s" : "%.3g %s", bytes, units[u]);
  return buffer;
}

}  // namespace

void check_memory(const ModelConfig& config, double bytes_per_parameter, double extra_bytes, const char* purpose) {
  const double parameters = estimate_parameters(config);
  const double needed = parameters * bytes_per_parameter + extra_bytes;
  const double available = physical_memory_bytes();
  if (available <= 0 || needed <= available) return;
  char count[32];
  std::snprintf(count, sizeof count, "%.3g", parameters);
  LOOM_FAIL("model (family ", config.family, ", d_model ", config.d_model, ", d_ff ", config.d_ff, ", layers ",
            config.layers, ", vocab ", config.vocab, "): about ", count, " parameters; ", purpose, " it needs about ",
            bytes_text(needed), " but this machine has ", bytes_text(available), " of memory");
}

std::unique_ptr<LanguageModel> make_model(const ModelConfig& config) {
  check_memory(config, 4, 0, "to hold them");
  if (config.family == "transformer" || config.family == "primer_ez") return make_transformer(config);
  if (config.family == "fast_weights") return make_fast_weights(config);
  if (config.family == "feedback") return make_feedback(config);
  if (config.family == "bigram") return std::make_unique<BigramLM>(config);  // the smoke-test model
  LOOM_FAIL("model.family: unknown family '", config.family,
            "' (expected transformer, primer_ez, fast_weights, feedback or bigram)");
}

}  // namespace loom::models
