// context_probe: how a trained fast-weights model does as it reads further into a
// text, its states carried from window to window (models/programs/context_probe.h).
//
//   ./build/examples/context_probe runs/fast_weights_delta_rnn --split valid --windows 50
//
// The checkpoint is a run directory, a checkpoint directory or its
// model.safetensors, as for generate. The text is the run's data.path, cut into
// train and valid as training cut it; the streams and the window length are the
// run's data.batch_size and data.seq_len unless --streams and --seq-len say
// otherwise. One line per window (every --every-th): the tokens each stream has
// read before it, its loss, the running mean, and the root mean square of each
// layer's carried states. A model trained without carry-over shows where its loss
// leaves the training length behind; one trained with carry-over, how long its
// states take to warm up.
#include <cstdio>
#include <filesystem>
#include <string>

#include "datasets/text_dataset.h"
#include "engine/device.h"
#include "engine/error.h"
#include "examples/command_line.h"
#include "models/programs/checkpoint.h"
#include "models/programs/context_probe.h"

using namespace loom;

int main(int argc, char** argv) {
  try {
    std::string split = "valid";
    int64_t windows = 1 << 30, streams = 0, seq_len = 0, every = 1;
    examples::CommandLine cli(
        "context_probe",
        "how a trained model does as it reads further into a text, its states carried from window to window "
        "(models/programs/context_probe.h). Prints one line per window to stdout: the tokens each stream has read before "
        "it, its loss, the running mean, and the root mean square of each layer's carried states.",
        "./build/examples/context_probe runs/fast_weights_delta_rnn --split valid --windows 50");
    cli.argument("<run directory | checkpoint>",
                 "a run directory, a checkpoint directory or its model.safetensors, as for generate; the text is the "
                 "run's data.path, cut into train and valid as training cut it.");
    cli.option("--split", "valid|train", "valid", "the part of the text to read.",
               [&](const auto& v) { split = v.one_of({"valid", "train"}); });
    cli.option("--windows", "N", "as many as the split holds", "stop after N windows.",
               [&](const auto& v) { windows = v.positive_integer(); });
    cli.option("--streams", "B", "the run's data.batch_size", "parallel streams the split is cut into.",
               [&](const auto& v) { streams = v.positive_integer(); });
    cli.option("--seq-len", "L", "the run's data.seq_len", "tokens per window.",
               [&](const auto& v) { seq_len = v.positive_integer(); });
    cli.option("--every", "K", "1", "print every K-th window only.",
               [&](const auto& v) { every = v.positive_integer(); });
    cli.option("--threads", "N", "every core (OMP_NUM_THREADS)", "CPU threads.",
               [&](const auto& v) { set_num_threads(static_cast<int>(v.positive_integer())); });
    cli.note("A model trained without carry-over shows where its loss leaves the training length behind; one "
             "trained with carry-over, how long its states take to warm up. Nothing is written to disk.");
    const examples::CommandLine::Parsed parsed = cli.parse(argc, argv);
    if (parsed.exit) return 0;
    const std::string& checkpoint = parsed.arguments.at(0);

    models::TrainedModel trained = models::load_trained_model(checkpoint);
    const models::TrainConfig& config = trained.config;
    if (streams == 0) streams = config.data.batch_size;
    if (seq_len == 0) seq_len = config.data.seq_len;
    const datasets::TextDataset data = datasets::TextDataset::load(config.data.path, config.data.url, trained.tokenizer);
    const std::vector<int64_t>& ids = split == "train" ? data.train_ids : data.valid_ids;

    std::printf("# %s (%s, step %s, data.carry_over %s), %s split of %s: %lld streams of %lld tokens, windows of %lld\n",
                trained.checkpoint_dir.c_str(), config.model.family.c_str(), trained.step.c_str(),
                config.data.carry_over ? "on" : "off", split.c_str(), config.data.path.c_str(), (long long)streams,
                (long long)(static_cast<int64_t>(ids.size()) - 1) / streams, (long long)seq_len);
    const std::vector<models::WindowReport> reports =
        models::probe_carried_context(*trained.model, ids, streams, seq_len, windows);
    double total = 0;
    for (const models::WindowReport& r : reports) {
      total += r.loss;
      if (r.window % every != 0 && r.window + 1 != static_cast<int64_t>(reports.size())) continue;
      if (r.window == 0) {
        std::printf("%8s %8s %9s %10s", "window", "read", "loss", "mean loss");
        for (const auto& [name, rms] : r.state_rms) std::printf(" %11s", ("rms " + name).c_str());
        std::printf("\n");
      }
      std::printf("%8lld %8lld %9.4f %10.4f", (long long)r.window, (long long)r.tokens_read, r.loss,
                  total / static_cast<double>(r.window + 1));
      for (const auto& [name, rms] : r.state_rms) std::printf(" %11.4g", rms);
      std::printf("\n");
    }
    return 0;
  } catch (const std::filesystem::filesystem_error& e) {
    std::fprintf(stderr, "error: '%s': %s\n", e.path1().c_str(), e.code().message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
