// generate: continues a prompt with a trained checkpoint.
//
//   ./build/examples/generate runs/bigram --prompt "It is" --length 200
//                             --temperature 0.8 --top-k 20 --seed 1
//
// The checkpoint is a run directory (its newest checkpoint), a checkpoint
// directory or the model.safetensors inside one (models/programs/checkpoint.h). The model
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
#include "examples/command_line.h"
#include "models/programs/checkpoint.h"
#include "models/programs/config.h"
#include "models/programs/generate.h"
#include "models/programs/trainer.h"

using namespace loom;

int main(int argc, char** argv) {
  try {
    std::string prompt = "It is", device = "cpu";
    int64_t length = 200;
    models::SamplingOptions sampling{0.8, 20};
    uint64_t seed = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    examples::CommandLine cli("generate",
                              "continues a prompt with a trained checkpoint, printing the text to stdout (the "
                              "settings and the seed go to stderr, so any output can be reproduced).",
                              "./build/examples/generate runs/primer_ez_small --prompt \"It is\" --length 200");
    cli.argument("<run directory | checkpoint>",
                 "a run directory (its newest checkpoint), a checkpoint directory or the model.safetensors inside one "
                 "(models/programs/checkpoint.h); the model is rebuilt from its metadata, the tokenizer read from vocab.json.");
    cli.option("--prompt", "TEXT", "\"It is\"", "the text to continue; every character must be in the vocabulary.",
               [&](const auto& v) { prompt = v.text; });
    cli.option("--length", "N", "200", "how many characters to generate.",
               [&](const auto& v) { length = v.integer_at_least(0); });
    cli.option("--temperature", "T", "0.8", "sampling temperature; 0 is greedy decoding.", [&](const auto& v) {
      sampling.temperature = v.number();
      LOOM_CHECK(sampling.temperature >= 0, "generate: --temperature expects a number >= 0, got '", v.text, "'");
    });
    cli.option("--top-k", "K", "20", "sample among the K likeliest characters only; 0 keeps them all.",
               [&](const auto& v) { sampling.top_k = v.integer_at_least(0); });
    cli.option("--seed", "S", "drawn from the clock and printed", "the sampling seed.",
               [&](const auto& v) { seed = static_cast<uint64_t>(v.integer_at_least(0)); });
    cli.option("--device", "cpu|cuda", "cpu", "where the model runs.",
               [&](const auto& v) { device = v.one_of({"cpu", "cuda"}); });
    cli.note("The prompt is fed once, then each new character alone (incremental decoding: the prefix is never "
             "recomputed); past the model's context the window slides. Nothing is written to disk.");
    const examples::CommandLine::Parsed parsed = cli.parse(argc, argv);
    if (parsed.exit) return 0;
    const std::string& checkpoint = parsed.arguments.at(0);

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
