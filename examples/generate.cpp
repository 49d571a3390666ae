// generate: continues a prompt with a trained checkpoint.
//
//   ./build/examples/generate runs/bigram --prompt "It is" --length 200
//                             --temperature 0.8 --top-k 20 --seed 1
//
// The checkpoint is a run directory (its newest checkpoint), a checkpoint
// directory or the model.safetensors inside one (models/checkpoint.h). The model
// is rebuilt from the config in the model file's metadata and the tokenizer read
// from vocab.json beside it. The prompt is fed once, then each new character
// alone (incremental decoding: the prefix is never recomputed); past the model's
// context the window slides. --temperature 0 is greedy decoding. Without --seed
// a seed is drawn from the clock and printed, so any output can be reproduced.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "datasets/char_tokenizer.h"
#include "engine/error.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "models/config.h"
#include "models/generate.h"
#include "models/trainer.h"

using namespace loom;

namespace {

const char* kUsage =
    "usage: generate <run directory | checkpoint> [--prompt TEXT] [--length N] [--temperature T] [--top-k K] [--seed S]"
    " [--device cpu|cuda]";

template <class T>
T parse(const std::string& flag, const std::string& text, bool (*ok)(T)) {
  try {
    size_t used = 0;
    T v;
    if constexpr (std::is_same_v<T, double>) v = std::stod(text, &used);
    else if constexpr (std::is_same_v<T, uint64_t>) v = std::stoull(text, &used);
    else v = std::stoll(text, &used);
    if (used == text.size() && ok(v)) return v;
  } catch (const std::exception&) {
  }
  LOOM_FAIL(flag, ": invalid value \"", text, "\"\n", kUsage);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string checkpoint, prompt = "It is", device = "cpu";
    int64_t length = 200;
    models::SamplingOptions sampling{0.8, 20};
    uint64_t seed = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        std::printf("%s\n", kUsage);
        return 0;
      }
      if (arg.rfind("--", 0) != 0 && checkpoint.empty()) {
        checkpoint = arg;
        continue;
      }
      LOOM_CHECK(i + 1 < argc, "unknown or incomplete argument '", arg, "'\n", kUsage);
      const std::string value = argv[++i];
      if (arg == "--prompt") prompt = value;
      else if (arg == "--length") length = parse<int64_t>(arg, value, [](int64_t v) { return v >= 0; });
      else if (arg == "--temperature") sampling.temperature = parse<double>(arg, value, [](double v) { return v >= 0; });
      else if (arg == "--top-k") sampling.top_k = parse<int64_t>(arg, value, [](int64_t v) { return v >= 0; });
      else if (arg == "--seed") seed = parse<uint64_t>(arg, value, [](uint64_t) { return true; });
      else if (arg == "--device" && (value == "cpu" || value == "cuda")) device = value;
      else LOOM_FAIL("unknown argument '", arg, " ", value, "'\n", kUsage);
    }
    LOOM_CHECK(!checkpoint.empty(), "no checkpoint given\n", kUsage);

    const models::TrainedModel trained = models::load_trained_model(checkpoint);
    const models::TrainConfig& config = trained.config;
    const datasets::CharTokenizer& tokenizer = trained.tokenizer;
    models::check_prompt(tokenizer, prompt);  // before anything is printed
    models::LanguageModel* model = trained.model.get();
    if (device == "cuda") {
      LOOM_CHECK(cuda_available(), "--device cuda: this build has no CUDA backend or no GPU is visible");
      model->to(Device::cuda);
    }
    model->eval();

    std::fprintf(stderr, "%s, step %s, seed %llu, temperature %g, top-k %lld\n", config.model.family.c_str(),
                 trained.step.c_str(), (unsigned long long)seed, sampling.temperature, (long long)sampling.top_k);
    if (model->context_length() > 0 && static_cast<int64_t>(prompt.size()) + length > model->context_length())
      std::fprintf(stderr, "the model sees %lld positions; past them it continues from a sliding window of the last "
                   "%lld to %lld characters\n", (long long)model->context_length(),
                   (long long)std::max<int64_t>(1, model->context_length() / 2), (long long)model->context_length());
    Generator gen(seed);
    std::fputs(prompt.c_str(), stdout);
    models::generate_text(*model, tokenizer, prompt, length, sampling, gen, [](const std::string& text) {
      std::fputs(text.c_str(), stdout);
      std::fflush(stdout);
    });
    std::fputs("\n", stdout);
    return 0;
  } catch (const std::filesystem::filesystem_error& e) {
    // Not the library's "filesystem error: ..." text: the path and the reason.
    std::fprintf(stderr, "\nerror: '%s': %s\n", e.path1().c_str(), e.code().message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
