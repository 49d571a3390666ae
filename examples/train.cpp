// train: trains a language model from a JSON config (models/config.h).
//
//   ./build/examples/train examples/configs/bigram.json
//   ./build/examples/train config.json --resume [runs/x] [--overwrite] [--steps N] [--threads N]
//                                      [--peak-gflops G]
//
// The text is read from data.path. When that file is missing, Tiny Shakespeare
// (the default) comes from the copy shipped in datasets/, checked by its SHA-256;
// any other data.url is downloaded to data.path.
// Progress goes to stderr, validations and samples to stdout, metrics to
// <out_dir>/metrics.jsonl (examples/plot_metrics.py draws them), checkpoints to
// <out_dir>/checkpoint-<step>/ with the link <out_dir>/checkpoint naming the newest
// (models/checkpoint.h). --resume continues the run in out_dir, or the checkpoint
// given; --overwrite starts over in an out_dir that holds a run; without either
// such an out_dir is refused. Ctrl-C or SIGTERM finish the step, save and exit.
// --steps N sets the total step count (a resumed run continues up to N).
// --peak-gflops sets the machine's float32 peak for MFU; without it the FMA probe
// of engine/cpu_peak.h measures it (the same probe bench_ops prints).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <string>

#include "datasets/text_dataset.h"
#include "engine/cpu_peak.h"
#include "engine/error.h"
#include "models/checkpoint.h"
#include "models/config.h"
#include "models/language_model.h"
#include "models/trainer.h"

using namespace loom;

namespace {

const char* kUsage =
    "usage: train <config.json> [--resume [run directory | checkpoint]] [--overwrite] [--steps N] [--threads N]"
    " [--peak-gflops G]";

// Set by SIGINT/SIGTERM; the trainer finishes its step, saves and returns.
std::atomic<bool> stop_requested{false};
std::atomic<int> stop_signal{0};
void request_stop(int signal) {
  stop_signal = signal;
  stop_requested = true;
}

void install_stop_handlers() {
  struct sigaction action = {};
  action.sa_handler = request_stop;
  action.sa_flags = SA_RESTART | SA_RESETHAND;  // a second signal ends the process at once
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

// Bytes of activations one training step keeps for the backward pass, roughly:
// per position and layer a few d_model and d_ff vectors and the attention rows.
double activation_bytes(const models::TrainConfig& c) {
  const double positions = static_cast<double>(c.data.seq_len) * static_cast<double>(c.data.batch_size);
  const double per_layer = 16 * static_cast<double>(c.model.d_model) + 4 * static_cast<double>(c.model.d_ff) +
                           3 * static_cast<double>(c.model.heads) * static_cast<double>(c.data.seq_len);
  return 4 * positions * (static_cast<double>(c.model.layers) * per_layer + 3 * static_cast<double>(c.model.vocab));
}

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
    bool resuming = false, overwrite = false;
    int64_t steps = 0, threads = 0;
    double peak_gflops = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      const bool has_value = i + 1 < argc;
      if (arg == "--resume") {
        // The path is optional: without one (or before the next flag) the run in out_dir goes on.
        resuming = true;
        if (has_value && std::string(argv[i + 1]).rfind("--", 0) != 0) resume = argv[++i];
      } else if (arg == "--overwrite") {
        overwrite = true;
      } else if (arg == "--steps" && has_value) steps = positive_integer(arg, argv[++i]);
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
    LOOM_CHECK(!(resuming && overwrite), "--resume and --overwrite contradict each other: give one");

    models::TrainConfig config = models::load_train_config(config_path);
    if (steps > 0) config.training.steps = steps, config.training.epochs = 0;
    if (threads > 0) config.training.threads = threads;
    if (config.training.threads > 0) set_num_threads(static_cast<int>(config.training.threads));

    datasets::TextDataset data = datasets::TextDataset::load(config.data.path, config.data.url);
    models::resolve_vocab(config, data.tokenizer);
    // Parameters, gradients and two Adam moments at 4 bytes each, plus activations.
    models::check_memory(config.model, 16, activation_bytes(config), "to train");
    std::unique_ptr<models::LanguageModel> model = models::make_model(config.model);
    std::fprintf(stderr, "%s: %lld parameters; text %s: %zu train / %zu valid tokens, vocabulary %lld; %d threads\n",
                 config.model.family.c_str(), (long long)model->parameter_count(), data.source.c_str(),
                 data.train_ids.size(), data.valid_ids.size(), (long long)data.tokenizer.vocab_size(), num_threads());

    models::Trainer trainer(config, *model, std::move(data));
    if (resuming) {
      if (resume.empty()) {
        resume = config.training.out_dir;
        LOOM_CHECK(models::latest_checkpoint_step(resume) >= 0, "--resume: training.out_dir '", resume,
                   "' holds no checkpoint to resume (start without --resume, or give the checkpoint's path)");
      }
      trainer.resume(resume);
      std::fprintf(stderr, "resumed from %s at step %lld\n", models::find_checkpoint(resume).c_str(),
                   (long long)trainer.step());
    }
    trainer.prepare(overwrite);  // every check that can precede the first step
    models::RunOptions options;
    options.stop = &stop_requested;
    install_stop_handlers();
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
    if (!trainer.run(options)) {
      std::fprintf(stderr, "%s\n", stop_signal == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)");
      return 128 + stop_signal;
    }
    return 0;
  } catch (const std::filesystem::filesystem_error& e) {
    // Not the library's "filesystem error: ..." text: the path and the reason.
    std::fprintf(stderr, "\nerror: '%s': %s\n", e.path1().c_str(), e.code().message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what());
    return 1;
  }
}
