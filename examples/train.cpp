// train: trains a language model from a JSON config (models/config.h).
//
//   ./build/examples/train examples/configs/bigram.json
//   ./build/examples/train config.json --resume runs/x/model.safetensors [--steps N] [--threads N]
//                                      [--peak-gflops G]
//
// The text is read from data.path. When that file is missing, Tiny Shakespeare
// (the default) comes from the copy shipped in datasets/, checked by its SHA-256;
// any other data.url is downloaded to data.path.
// Progress goes to stderr, validations and samples to stdout, metrics to
// <out_dir>/metrics.jsonl (examples/plot_metrics.py draws them), checkpoints to
// <out_dir>/model.safetensors (+ .optim.safetensors, .vocab.json).
// --steps N sets the total step count (a resumed run continues up to N).
// --peak-gflops sets the machine's float32 peak for MFU; without it the FMA probe
// of engine/cpu_peak.h measures it (the same probe bench_ops prints).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "datasets/text_dataset.h"
#include "engine/cpu_peak.h"
#include "engine/error.h"
#include "models/config.h"
#include "models/language_model.h"
#include "models/trainer.h"

using namespace loom;

namespace {

const char* kUsage =
    "usage: train <config.json> [--resume <checkpoint.safetensors>] [--steps N] [--threads N] [--peak-gflops G]";

int64_t positive_integer(const std::string& flag, const char* text) {
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used == std::strlen(text) && v > 0) return v;
  } catch (const std::exception&) {
  }
  LOOM_FAIL(flag, ": expected a positive integer, got \"", text, "\"");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string config_path, resume;
    int64_t steps = 0, threads = 0;
    double peak_gflops = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      const bool has_value = i + 1 < argc;
      if (arg == "--resume" && has_value) resume = argv[++i];
      else if (arg == "--steps" && has_value) steps = positive_integer(arg, argv[++i]);
      else if (arg == "--threads" && has_value) threads = positive_integer(arg, argv[++i]);
      else if (arg == "--peak-gflops" && has_value) {
        const std::string flag = arg, value = argv[++i];
        try {
          peak_gflops = std::stod(value);
        } catch (const std::exception&) {
        }
        LOOM_CHECK(peak_gflops > 0, flag, ": expected a positive number, got \"", value, "\"");
      } else if (arg == "-h" || arg == "--help") {
        std::printf("%s\n", kUsage);
        return 0;
      } else if (arg.rfind("--", 0) != 0 && config_path.empty()) {
        config_path = arg;
      } else {
        throw Error("unknown or incomplete argument '" + arg + "'\n" + kUsage);
      }
    }
    LOOM_CHECK(!config_path.empty(), "no config file given\n", kUsage);

    models::TrainConfig config = models::load_train_config(config_path);
    if (steps > 0) config.training.steps = steps, config.training.epochs = 0;
    if (threads > 0) config.training.threads = threads;
    if (config.training.threads > 0) set_num_threads(static_cast<int>(config.training.threads));

    datasets::TextDataset data = datasets::TextDataset::load(config.data.path, config.data.url);
    models::resolve_vocab(config, data.tokenizer);
    std::unique_ptr<models::LanguageModel> model = models::make_model(config.model);
    std::fprintf(stderr, "%s: %lld parameters; text %s: %zu train / %zu valid tokens, vocabulary %lld; %d threads\n",
                 config.model.family.c_str(), (long long)model->parameter_count(), data.source.c_str(),
                 data.train_ids.size(), data.valid_ids.size(), (long long)data.tokenizer.vocab_size(), num_threads());

    models::Trainer trainer(config, *model, std::move(data));
    if (!resume.empty()) {
      trainer.resume(resume);
      std::fprintf(stderr, "resumed from %s at step %lld\n", resume.c_str(), (long long)trainer.step());
    }
    models::RunOptions options;
    options.peak_gflops = peak_gflops;
    if (peak_gflops == 0 && config.training.device == "cpu") {  // no GPU estimate: MFU is left out there
      const PeakMeasurement peak = measure_fp32_peak(num_threads());
      options.peak_gflops = peak.gflops;
      std::fprintf(stderr, "%s; MFU is against it (--peak-gflops overrides)\n", describe_peak(peak).c_str());
    } else if (peak_gflops > 0) {
      std::fprintf(stderr, "MFU against --peak-gflops %.1f GFLOP/s\n", peak_gflops);
    }
    std::fprintf(stderr, "training to step %lld (%lld batches of %lld x %lld tokens per epoch)\n",
                 (long long)trainer.total_steps(), (long long)trainer.batches_per_epoch(),
                 (long long)config.data.seq_len, (long long)config.data.batch_size);
    trainer.run(options);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what());
    return 1;
  }
}
