// bench_train: how close a training step of each family comes to the CPU's peak,
// and where the rest of the step goes.
//
// Per config (the four <family>.json at labml's sizes by default) it runs a few
// warm-up steps, then times training steps exactly as `train` runs them
// (models/trainer.h: forward, backward, clipping, Adam) and prints
//   - tokens/s of the median step and the MFU against the FMA probe's peak
//     (engine/cpu_peak.h, the one train uses; the best of a probe before the first
//     config and one after each), with the model's own FLOP count;
//   - the share of the step spent in GEMM, attention and the recurrence kernels,
//     from the kernel clock (engine/kernel_clock.h), and the rest;
// and, for each recurrent fast layer at the fast-weights config's sizes (and the
// fused LSTM op at the same width), the recurrence kernels' GFLOP/s, forward and
// backward together, beside the single-thread FMA peak times the threads.
//
// Nothing is written to disk. A timing is as good as the machine is quiet: on a
// shared machine compare two builds side by side in one run, not across runs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "autodiff/grad_mode.h"
#include "datasets/text_dataset.h"
#include "engine/cpu_peak.h"
#include "engine/device.h"
#include "engine/gemm_library.h"
#include "engine/kernel_clock.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/timing.h"
#include "examples/command_line.h"
#include "models/families/language_model.h"
#include "models/programs/config.h"
#include "models/programs/trainer.h"

namespace {

using namespace loom;
using timing::Clock;
using timing::median;
using timing::seconds_since;

struct Options {
  std::vector<std::string> configs;
  std::vector<std::string> fast_layers = {"delta_net", "delta_rnn", "delta_lstm", "rdn"};
  std::string fast_layers_config = "examples/configs/fast_weights.json";
  int64_t steps = 8;   // timed steps per config
  int64_t warmup = 2;  // untimed steps before them
  int threads = 0;     // 0: every core
};

// What timing `steps` training steps of one config found.
struct StepTiming {
  std::string family;
  int64_t tokens_per_step = 0;
  double median_step_s = 0;
  double flops_per_token = 0, recurrence_flops_per_token = 0;
  double total_s = 0;                    // all timed steps
  double kernel_s[kKernelKinds] = {};    // of which in each kind of kernel
};

StepTiming time_training(models::TrainConfig config, const Options& o) {
  auto data = datasets::TextDataset::load(config.data.path, config.data.url);
  models::resolve_vocab(config, data.tokenizer);
  auto model = models::make_model(config.model);
  models::Trainer trainer(config, *model, std::move(data));
  for (int64_t i = 0; i < o.warmup; ++i) trainer.train_step();

  StepTiming t;
  t.family = config.model.family;
  t.tokens_per_step = config.data.seq_len * config.data.batch_size;
  t.flops_per_token = model->training_flops_per_token(config.data.seq_len);
  t.recurrence_flops_per_token = model->recurrence_training_flops_per_token();
  std::vector<double> steps;
  set_kernel_clock(true);
  for (int64_t i = 0; i < o.steps; ++i) {
    const auto start = Clock::now();
    trainer.train_step();
    steps.push_back(seconds_since(start));
  }
  for (int k = 0; k < kKernelKinds; ++k) t.kernel_s[k] = kernel_clock_seconds(static_cast<KernelKind>(k));
  set_kernel_clock(false);
  t.median_step_s = median(steps);
  for (double s : steps) t.total_s += s;
  return t;
}

double share(double part, double whole) { return whole > 0 ? 100.0 * part / whole : 0; }

// The FMA probe, taken before the first config and again after each. On a shared
// machine one probe can catch the other processes and read low, which would make
// every MFU look higher than it is; other processes only ever lower a probe, so
// the tables use the best reading of all.
struct Peaks {
  double all_threads = 0, one_thread = 0;  // the best readings
  double lowest = 0;                       // the lowest all-threads reading
  int probes = 0;
  // Returns the all-threads measurement (the first one heads the output).
  PeakMeasurement probe() {
    const PeakMeasurement measured = measure_fp32_peak(num_threads());
    const double all = measured.gflops, one = measure_fp32_peak(1).gflops;
    lowest = probes == 0 ? all : std::min(lowest, all);
    all_threads = std::max(all_threads, all);
    one_thread = std::max(one_thread, one);
    ++probes;
    return measured;
  }
  void print() const {
    std::printf("\nPeak: the best of %d probes, one before the first config and one after each: %.0f GFLOP/s on %d "
                "threads (the probes read %.0f-%.0f), %.0f on one thread\n",
                probes, all_threads, num_threads(), lowest, all_threads, one_thread);
  }
};

void print_family_table(const std::vector<std::string>& configs, const Options& o, Peaks& peaks) {
  std::vector<StepTiming> timings;
  for (const std::string& path : configs) {
    timings.push_back(time_training(models::load_train_config(path), o));
    peaks.probe();
  }
  std::printf("\n| config | family | tokens/step | step (median) | tokens/s | MFU | GEMM | attention | recurrence | rest |\n");
  std::printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (size_t i = 0; i < configs.size(); ++i) {
    const StepTiming& t = timings[i];
    const double tokens_per_s = static_cast<double>(t.tokens_per_step) / t.median_step_s;
    double in_kernels = 0;
    for (double s : t.kernel_s) in_kernels += s;
    std::printf("| %s | %s | %lld | %.0f ms | %.0f | %s | %.1f%% | %.1f%% | %.1f%% | %.1f%% |\n", configs[i].c_str(),
                t.family.c_str(), (long long)t.tokens_per_step, t.median_step_s * 1e3, tokens_per_s,
                share_of_peak(t.flops_per_token * tokens_per_s * 1e-9, peaks.all_threads).c_str(),
                share(t.kernel_s[0], t.total_s), share(t.kernel_s[1], t.total_s), share(t.kernel_s[2], t.total_s),
                share(t.total_s - in_kernels, t.total_s));
  }
  std::fflush(stdout);
}

void print_recurrence_table(const Options& o, Peaks& peaks) {
  const int threads = num_threads();
  struct Row {
    std::string name;
    double ms_per_step, gflops;
  };
  std::vector<Row> rows;
  for (const std::string& layer : o.fast_layers) {
    models::TrainConfig config = models::load_train_config(o.fast_layers_config);
    config.model.fast_layer = layer;
    const StepTiming t = time_training(config, o);
    const double seconds = t.kernel_s[static_cast<int>(KernelKind::recurrence)];
    rows.push_back({layer, seconds / static_cast<double>(o.steps) * 1e3,
                    t.recurrence_flops_per_token * static_cast<double>(t.tokens_per_step * o.steps) / seconds * 1e-9});
    peaks.probe();
  }

  // The fused LSTM at the same width: the input half of the gates precomputed,
  // as the LSTM layer feeds it; FLOPs are the recurrent products, 3x forward.
  models::TrainConfig config = models::load_train_config(o.fast_layers_config);
  const int64_t L = config.data.seq_len, B = config.data.batch_size, H = config.model.d_model;
  Generator gen(1);
  const Tensor gates_x = uniform({L, B, 4 * H}, -1.5, 1.5, gen);
  const Tensor weight_hh = uniform({4 * H, H}, -1.0 / 32, 1.0 / 32, gen), grad_h = uniform({L, B, H}, -1, 1, gen);
  std::vector<double> runs;
  for (int64_t i = 0; i < o.warmup + o.steps; ++i) {
    const Tensor gx = gates_x.detach().requires_grad_(), w = weight_hh.detach().requires_grad_();
    set_kernel_clock(true);
    sum(lstm(gx, w) * grad_h).backward();
    if (i >= o.warmup) runs.push_back(kernel_clock_seconds(KernelKind::recurrence));
    set_kernel_clock(false);
  }
  peaks.probe();
  const double flops = 3 * 8.0 * static_cast<double>(L * B) * static_cast<double>(H * H);
  rows.push_back({"lstm op (L " + std::to_string(L) + ", B " + std::to_string(B) + ", H " + std::to_string(H) + ")",
                  median(runs) * 1e3, flops / median(runs) * 1e-9});

  std::printf("\nThe recurrence kernels, forward and backward, in training steps of %s with each fast layer\n"
              "(GFLOP/s: the layers' recurrence FLOPs over the time the kernel clock saw in them; the peak:\n"
              "%d x the FMA probe's best one-thread reading, %.0f GFLOP/s):\n\n",
              o.fast_layers_config.c_str(), threads, peaks.one_thread);
  std::printf("| fast layer | in the recurrence per step | GFLOP/s | of the peak |\n| --- | ---: | ---: | ---: |\n");
  for (const Row& r : rows)
    std::printf("| %s | %.1f ms | %.1f | %s |\n", r.name.c_str(), r.ms_per_step, r.gflops,
                share_of_peak(r.gflops, peaks.one_thread * threads).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  examples::CommandLine cli(
      "bench_train",
      "times training steps of each config as train runs them and prints one Markdown table: tokens/s, MFU against "
      "the FMA probe's peak, and the share of the step in GEMM, attention, the recurrence kernels and the rest; then "
      "a second table of the recurrence kernels' GFLOP/s per fast layer (and the fused LSTM op) beside the "
      "single-thread FMA peak times the threads. Nothing is written to disk.",
      "./build/examples/bench_train --threads 2");
  cli.argument("<config.json>",
               "train configs to time; default examples/configs/{primer_ez,transformer,fast_weights,feedback}.json",
               true, true);
  cli.option("--steps", "N", "8", "timed steps per config.", [&](const auto& v) { o.steps = v.positive_integer(); });
  cli.option("--warmup", "N", "2", "untimed steps before them.",
             [&](const auto& v) { o.warmup = v.integer_at_least(0); });
  cli.option("--threads", "N", "every core", "CPU threads.",
             [&](const auto& v) { o.threads = static_cast<int>(v.positive_integer()); });
  cli.option("--fast-layers", "A,B,...", "delta_net,delta_rnn,delta_lstm,rdn",
             "the fast layers of the recurrence table; 'none' leaves the table out.",
             [&](const auto& v) { o.fast_layers = v.text == "none" ? std::vector<std::string>{} : v.list(); });
  cli.option("--fast-layers-config", "PATH", o.fast_layers_config, "the config the fast layers are timed in.",
             [&](const auto& v) { o.fast_layers_config = v.text; });
  try {
    const auto parsed = cli.parse(argc, argv);
    if (parsed.exit) return 0;
    o.configs = parsed.arguments;
    if (o.configs.empty())
      for (const char* family : {"primer_ez", "transformer", "fast_weights", "feedback"})
        o.configs.push_back(std::string("examples/configs/") + family + ".json");
    if (o.threads > 0) set_num_threads(o.threads);
    Peaks peaks;
    const PeakMeasurement peak = peaks.probe();
    std::printf("%s\nGEMM: %s\n%d threads, %lld timed steps after %lld warm-up steps per config\n",
                describe_peak(peak).c_str(), cpu_gemm().description.c_str(),
                num_threads(), (long long)o.steps, (long long)o.warmup);
    print_family_table(o.configs, o, peaks);
    if (!o.fast_layers.empty()) print_recurrence_table(o, peaks);
    peaks.print();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
