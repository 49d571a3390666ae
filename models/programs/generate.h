// generate.h: text generation with incremental decoding.
//
// The prompt is fed once through LanguageModel::decode; after that each new
// token is fed alone, so the prefix is never recomputed (the family's
// DecodeState carries the KV cache, fast weights or feedback memory).
// Generation runs under NoGradGuard; the caller chooses train/eval mode.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "datasets/char_tokenizer.h"
#include "engine/random.h"
#include "models/families/language_model.h"

namespace loom::models {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax), as labml's samples
  int64_t top_k = 0;         // keep the k most likely tokens; 0: all
};

// Picks a token from one row of logits (any float tensor of `vocab` elements).
// Greedy ties go to the lowest id (argmax). Otherwise softmax(logits / T) over
// the top k, sampled with one uniform draw from `gen`.
int64_t sample_token(const Tensor& logits, const SamplingOptions& options, Generator& gen);

// Feeds `prompt` (at least one token), then generates `length` tokens; calls
// on_token(id) for each as it is produced. Returns the generated ids. Past the
// model's context_length() the window slides: a fresh state is fed the last half
// context of tokens and decoding goes on from there (so any length can be asked for).
std::vector<int64_t> generate_tokens(LanguageModel& model, const std::vector<int64_t>& prompt, int64_t length,
                                     const SamplingOptions& options, Generator& gen,
                                     const std::function<void(int64_t)>& on_token = {});

// Throws unless every byte of `prompt` is in the vocabulary (naming the first
// that is not) and the prompt is not empty.
void check_prompt(const datasets::CharTokenizer& tokenizer, const std::string& prompt);

// generate_tokens on text, after check_prompt. Returns the generated text
// (without the prompt); on_text gets each character as it is produced.
std::string generate_text(LanguageModel& model, const datasets::CharTokenizer& tokenizer, const std::string& prompt,
                          int64_t length, const SamplingOptions& options, Generator& gen,
                          const std::function<void(const std::string&)>& on_text = {});

}  // namespace loom::models
