#include "models/programs/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autodiff/grad_mode.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace loom::models {

namespace {

std::vector<double> host_values(const Tensor& t) {
  const Tensor cpu = t.device() == Device::cpu ? t : t.to(Device::cpu);
  if (cpu.dtype() == DType::f64) return cpu.to_vector<double>();
  LOOM_CHECK(cpu.dtype() == DType::f32, "sample_token: expected float logits, got ", cpu.describe());
  const std::vector<float> f = cpu.to_vector<float>();
  return std::vector<double>(f.begin(), f.end());
}

Device device_of(const Module& model) {
  const NamedTensors params = model.named_parameters();
  return params.empty() ? Device::cpu : params.front().second.device();
}

}  // namespace

int64_t sample_token(const Tensor& logits, const SamplingOptions& options, Generator& gen) {
  const std::vector<double> x = host_values(logits);
  LOOM_CHECK(!x.empty(), "sample_token: empty logits");
  const int64_t vocab = static_cast<int64_t>(x.size());
  if (options.temperature <= 0) return std::max_element(x.begin(), x.end()) - x.begin();

  // The candidates, most likely first (ties by id, so the order is deterministic).
  std::vector<int64_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  const int64_t k = options.top_k > 0 ? std::min(options.top_k, vocab) : vocab;
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                    [&](int64_t a, int64_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  ids.resize(k);

  // softmax(x / T) over the candidates, shifted by the largest for stability.
  std::vector<double> p(k);
  double total = 0;
  for (int64_t i = 0; i < k; ++i) total += p[i] = std::exp((x[ids[i]] - x[ids[0]]) / options.temperature);
  const double u = uniform({}, 0.0, 1.0, gen, DType::f64).item() * total;
  double cumulative = 0;
  for (int64_t i = 0; i < k; ++i) {
    cumulative += p[i];
    if (u < cumulative) return ids[i];
  }
  return ids[k - 1];  // u rounded up to the total
}

std::vector<int64_t> generate_tokens(LanguageModel& model, const std::vector<int64_t>& prompt, int64_t length,
                                     const SamplingOptions& options, Generator& gen,
                                     const std::function<void(int64_t)>& on_token) {
  LOOM_CHECK(!prompt.empty(), "generate: the prompt is empty (at least one token is needed to start from)");
  NoGradGuard no_grad;
  const Device device = device_of(model);
  const int64_t context = model.context_length();  // 0: unlimited
  std::vector<int64_t> text = prompt;               // everything so far: the source of a new window
  std::unique_ptr<DecodeState> state;
  int64_t held = 0;  // positions the current state holds
  // Feeds the last `count` tokens of the text to a fresh state.
  auto start_window = [&](int64_t count) {
    state = model.start_decoding(1);
    const std::vector<int64_t> window(text.end() - count, text.end());
    held = count;
    return model.decode(*state, Tensor::from_vector(window, {count, 1}).to(device));
  };
  // The whole prompt (or its last context positions) in one call, then one token per call.
  const int64_t prompt_length = static_cast<int64_t>(prompt.size());
  Tensor logits = start_window(context > 0 ? std::min(prompt_length, context) : prompt_length);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < length; ++i) {
    const int64_t steps = logits.size(0);
    const int64_t id = sample_token(logits.narrow(0, steps - 1, 1).reshape({-1}), options, gen);
    out.push_back(id);
    text.push_back(id);
    if (on_token) on_token(id);
    if (i + 1 == length) break;
    if (context > 0 && held == context) {
      logits = start_window(std::max<int64_t>(1, context / 2));
    } else {
      logits = model.decode(*state, Tensor::from_vector<int64_t>({id}, {1, 1}).to(device));
      held += 1;
    }
  }
  return out;
}

void check_prompt(const datasets::CharTokenizer& tokenizer, const std::string& prompt) {
  LOOM_CHECK(!prompt.empty(), "generate: the prompt is empty (at least one character is needed to start from)");
  for (size_t i = 0; i < prompt.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(prompt[i]);
    if (tokenizer.contains(prompt[i])) continue;
    // Printable characters are shown quoted (built from a list: GCC 12 warns, wrongly,
    // about overlapping copies in "'" + std::string(1, ch) + "' ").
    const std::string shown = c >= 0x20 && c < 0x7f ? std::string{'\'', prompt[i], '\'', ' '} : std::string();
    LOOM_FAIL("generate: the prompt's character ", shown, "(byte ", static_cast<int>(c), " at position ", i,
              ") is not in the vocabulary");
  }
}

std::string generate_text(LanguageModel& model, const datasets::CharTokenizer& tokenizer, const std::string& prompt,
                          int64_t length, const SamplingOptions& options, Generator& gen,
                          const std::function<void(const std::string&)>& on_text) {
  check_prompt(tokenizer, prompt);
  std::function<void(int64_t)> on_token;
  if (on_text) on_token = [&](int64_t id) { on_text(tokenizer.decode(std::vector<int64_t>{id})); };
  return tokenizer.decode(generate_tokens(model, tokenizer.encode(prompt), length, options, gen, on_token));
}

}  // namespace loom::models
