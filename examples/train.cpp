// train: trains a language model from a JSON config (models/programs/config.h).
//
//   ./build/examples/train examples/configs/bigram.json
//   ./build/examples/train config.json --resume [runs/x] [--overwrite] [--steps N] [--threads N]
//                                      [--peak-gflops G]
//
// The text is read from data.path. When that file is missing, Tiny Shakespeare
// (the default) comes from the copy shipped in datasets/, checked by its SHA-256;
// any other data.url is downloaded to data.path.
// Progress goes to stderr, validations and samples to stdout, metrics to
// <out_dir>/metrics.jsonl and their chart to <out_dir>/curves.svg (models/programs/charts.h,
// redrawn at every evaluation), checkpoints to
// <out_dir>/checkpoint-<step>/ with the link <out_dir>/checkpoint naming the newest
// (models/programs/checkpoint.h). --resume continues the run in out_dir, or the checkpoint
// given; --overwrite starts over in an out_dir that holds a run; without either
// such an out_dir is refused. Ctrl-C or SIGTERM finish the step, save and exit.
// --steps N sets the total step count (a resumed run continues up to N).
// --peak-gflops sets the machine's float32 peak for MFU; without it the FMA probe
// of engine/cpu_peak.h measures it (the same probe bench_ops prints), at the
// start and again at each evaluation, and MFU is against the best reading so far.
//
// Data-parallel over MPI (models/programs/distributed.h, engine/comm/):
//   mpirun -np N ./build/examples/train config.json [--threads T] [--comm-timeout S]
// runs N ranks; the config's batch is the global batch, split across them, so the
// run sees the tokens one process would. Rank 0 alone writes out_dir and prints
// progress (tokens/s of the whole batch). A start-up error on any rank (the config,
// the data, a checkpoint) is agreed on: every rank names the failing ranks and
// exits. A collective that waits longer than --comm-timeout seconds (default 600)
// for the other ranks aborts the job; so does an error on one rank while training.
// With "device": "cuda" each rank takes the GPU of its local rank, and the
// gradients go over NCCL when the build has it (through the host otherwise).
// A build without MPI refuses to run under mpirun.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/comm/comm.h"
#include "datasets/text_dataset.h"
#include "engine/cpu_peak.h"
#include "engine/error.h"
#include "engine/gemm_library.h"
#include "examples/command_line.h"
#include "models/programs/checkpoint.h"
#include "models/programs/config.h"
#include "models/families/language_model.h"
#include "models/programs/trainer.h"

using namespace loom;

namespace {

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

struct Arguments {
  std::string config_path, resume;
  bool resuming = false, overwrite = false;
  int64_t steps = 0, threads = 0;
  double peak_gflops = 0;
  double comm_timeout = 600;
};

// The command line: parsing and --help from one table (examples/command_line.h).
examples::CommandLine command_line(Arguments& a) {
  examples::CommandLine cli(
      "train",
      "trains a language model from a JSON config (models/programs/config.h: model, data, optimizer, training, sample). "
      "The text is read from data.path; when that file is missing, Tiny Shakespeare comes from the copy shipped "
      "in datasets/ (checked by its SHA-256), any other data.url is downloaded to data.path.",
      "./build/examples/train examples/configs/primer_ez_small.json --steps 1000");
  cli.argument("<config.json>", "the run's config, e.g. examples/configs/primer_ez_small.json.");
  cli.usage_variant("mpirun -np N train <config.json> [options]   (data-parallel, one rank per process)");
  cli.option_with_optional_value(
      "--resume", "PATH", "start a new run",
      "continue the run in training.out_dir from its newest checkpoint, or from the run directory or checkpoint "
      "PATH; the metrics log and the chart go on where it stopped.",
      [&](const auto& path) { a.resuming = true, a.resume = path.text; });
  cli.flag("--overwrite", "start over in a training.out_dir that holds a run, removing its checkpoints, log and chart "
                          "(without --resume or --overwrite such an out_dir is refused).",
           [&](const auto&) { a.overwrite = true; });
  cli.option("--steps", "N", "the config's training.steps (or its epochs)",
             "train up to step N in all; a resumed run continues up to N.",
             [&](const auto& v) { a.steps = v.positive_integer(); });
  cli.option("--threads", "N", "the config's training.threads, else every core (OMP_NUM_THREADS)",
             "CPU threads per process.", [&](const auto& v) { a.threads = v.positive_integer(); });
  cli.option("--peak-gflops", "G", "measured by the FMA probe of engine/cpu_peak.h",
             "the machine's float32 peak in GFLOP/s, against which the progress line and metrics.jsonl give the MFU.",
             [&](const auto& v) {
               a.peak_gflops = v.number();
               LOOM_CHECK(a.peak_gflops > 0, "train: --peak-gflops expects a positive number, got '", v.text, "'");
             });
  cli.option("--comm-timeout", "S", "600",
             "under mpirun: a collective that waits longer than S seconds for the other ranks aborts the job.",
             [&](const auto& v) { a.comm_timeout = static_cast<double>(v.positive_integer()); });
  cli.note("Writes into training.out_dir: metrics.jsonl (one JSON object per log step and per evaluation), "
           "curves.svg (training and validation loss, validation accuracy and tokens/s against the step, redrawn "
           "at every evaluation; any browser shows it), checkpoint-<step>/ directories every "
           "training.checkpoint_interval steps and at the end, with the link checkpoint naming the newest "
           "(models/programs/checkpoint.h). Progress goes to stderr, evaluations and samples to stdout.");
  cli.note("Ctrl-C or SIGTERM finish the step, save a checkpoint and exit (130 or 143); --resume continues.");
  cli.note("Under mpirun the config's batch is the global batch, split across the ranks; rank 0 alone writes "
           "out_dir. With \"device\": \"cuda\" each rank takes the GPU of its local rank.");
  return cli;
}

Arguments parse_arguments(int argc, char** argv, bool& exit) {
  Arguments a;
  const examples::CommandLine cli = command_line(a);
  const examples::CommandLine::Parsed parsed = cli.parse(argc, argv);
  exit = parsed.exit;
  if (exit) return a;
  a.config_path = parsed.arguments.at(0);
  LOOM_CHECK(!(a.resuming && a.overwrite), "--resume and --overwrite contradict each other: give one");
  return a;
}

// An exception as the user reads it: for a file system error the path and the
// reason, not the library's "filesystem error: ..." text.
std::string error_text(const std::exception& e) {
  if (const auto* fs_error = dynamic_cast<const std::filesystem::filesystem_error*>(&e))
    return detail::concat("'", fs_error->path1().string(), "': ", fs_error->code().message());
  return e.what();
}

// What every rank must share: the resolved config and the token stream (FNV-1a
// over the ids). Compared with rank 0's before the first step.
std::string run_fingerprint(const models::TrainConfig& config, const datasets::TextDataset& data) {
  uint64_t hash = 1469598103934665603ull;
  for (const std::vector<int64_t>* ids : {&data.train_ids, &data.valid_ids})
    for (int64_t id : *ids) hash = (hash ^ static_cast<uint64_t>(id)) * 1099511628211ull;
  return models::to_json(config) + "\ntext: " + std::to_string(data.train_ids.size()) + " + " +
         std::to_string(data.valid_ids.size()) + " tokens, hash " + std::to_string(hash);
}

// Data parallelism only: every rank passes its start-up error ("" for none); when
// any rank has one, every rank throws the same comm::AgreedError naming them all.
void agree(comm::Communicator* world, const std::string& error) {
  if (world != nullptr) comm::agree_or_throw(*world, error);
  else if (!error.empty()) throw Error(error);
}

// The training run of one process, or of one rank when `world` is given. Start-up
// errors are agreed on (every rank throws comm::AgreedError); any later error is
// this rank's alone.
int train(const Arguments& args, comm::Communicator* world) {
  const bool writer = world == nullptr || world->rank() == 0;
  std::string error;  // this rank's start-up error
  models::TrainConfig config;
  std::unique_ptr<datasets::TextDataset> data;
  try {
    config = models::load_train_config(args.config_path);
    if (args.steps > 0) config.training.steps = args.steps, config.training.epochs = 0;
    if (args.threads > 0) config.training.threads = args.threads;
    if (config.training.threads > 0) set_num_threads(static_cast<int>(config.training.threads));
    if (config.training.device == "cpu") (void)cpu_gemm();  // a bad LOOM_GEMM fails here, before the run's files
    data = std::make_unique<datasets::TextDataset>(datasets::TextDataset::load(config.data.path, config.data.url));
    models::resolve_vocab(config, data->tokenizer);
  } catch (const std::exception& e) {
    error = error_text(e);
  }
  agree(world, error);
  if (world != nullptr) {
    // Every rank must run the same config on the same tokens.
    const std::vector<std::string> fingerprints = world->all_gather_text(run_fingerprint(config, *data));
    std::string differences;
    for (size_t r = 1; r < fingerprints.size(); ++r)
      if (fingerprints[r] != fingerprints[0])
        differences += detail::concat(differences.empty() ? "" : "\n", "rank ", r,
                                      " has another config or text than rank 0 (every rank must run the same"
                                      " config on the same data)");
    if (!differences.empty()) throw comm::AgreedError(differences);
  }

  // The communicator of the gradients: NCCL between GPUs when built, else MPI.
  std::unique_ptr<comm::Communicator> nccl;
  comm::Communicator* gradients = world;
  if (world != nullptr && config.training.device == "cuda" && comm::nccl_built()) {
    nccl = comm::make_nccl_communicator(*world);
    gradients = nccl.get();
  }

  std::unique_ptr<models::LanguageModel> model;
  std::unique_ptr<models::Trainer> trainer;
  try {
    // Parameters, gradients and two Adam moments at 4 bytes each, plus activations.
    models::check_memory(config.model, 16, activation_bytes(config), "to train");
    model = models::make_model(config.model);
    if (writer)
      std::fprintf(stderr, "%s: %lld parameters; text %s: %zu train / %zu valid tokens, vocabulary %lld; %d threads%s\n",
                   config.model.family.c_str(), (long long)model->parameter_count(), data->source.c_str(),
                   data->train_ids.size(), data->valid_ids.size(), (long long)data->tokenizer.vocab_size(),
                   num_threads(), world ? detail::concat(" per rank, ", world->size(), " ranks").c_str() : "");
    trainer = std::make_unique<models::Trainer>(config, *model, std::move(*data));
    if (gradients != nullptr) trainer->distribute(*gradients);
    trainer->lock_out_dir();  // before anything in out_dir is read
  } catch (const std::exception& e) {
    error = error_text(e);
  }
  agree(world, error);  // no rank reads a checkpoint before rank 0 holds out_dir
  try {
    if (args.resuming) {
      std::string resume = args.resume;
      if (resume.empty()) {
        resume = config.training.out_dir;
        LOOM_CHECK(models::latest_checkpoint_step(resume) >= 0, "--resume: training.out_dir '", resume,
                   "' holds no checkpoint to resume (start without --resume, or give the checkpoint's path)");
      }
      trainer->resume(resume);
      if (writer)
        std::fprintf(stderr, "resumed from %s at step %lld\n", models::find_checkpoint(resume).c_str(),
                     (long long)trainer->step());
    }
    trainer->prepare(args.overwrite);  // every check that can precede the first step
  } catch (const std::exception& e) {
    error = error_text(e);
  }
  agree(world, error);
  if (world != nullptr) {
    // Resumed ranks must stand at the same step (they read the same checkpoint).
    const std::vector<std::string> steps = world->all_gather_text(std::to_string(trainer->step()));
    for (size_t r = 1; r < steps.size(); ++r)
      if (steps[r] != steps[0])
        throw comm::AgreedError(detail::concat("rank ", r, " resumed at step ", steps[r], ", rank 0 at step ", steps[0],
                                               " (every rank must see the same checkpoint)"));
  }

  models::RunOptions options;
  options.stop = &stop_requested;
  options.progress = writer;
  install_stop_handlers();
  options.peak_gflops = args.peak_gflops;
  const int ranks = world ? world->size() : 1;
  if (writer && args.peak_gflops == 0 && config.training.device == "cpu") {  // no GPU estimate: MFU is left out there
    // Rank 0's probe stands for every rank: the peak of the whole job is N times it.
    const PeakMeasurement peak = measure_fp32_peak(num_threads());
    options.peak_gflops = peak.gflops * ranks;
    options.probe_peak_gflops = [ranks] { return measure_fp32_peak(num_threads()).gflops * ranks; };
    std::fprintf(stderr,
                 "%s%s; MFU is against the best of it and a probe at each evaluation (--peak-gflops overrides)\n",
                 describe_peak(peak).c_str(), ranks > 1 ? detail::concat(", times ", ranks, " ranks").c_str() : "");
  } else if (writer && args.peak_gflops > 0) {
    std::fprintf(stderr, "MFU against --peak-gflops %.1f GFLOP/s\n", args.peak_gflops);
  }
  if (writer && config.training.device == "cpu") std::fprintf(stderr, "GEMM: %s\n", cpu_gemm().description.c_str());
  if (writer) {
    std::fprintf(stderr, "training to step %lld (%lld batches of %lld x %lld tokens per epoch)\n",
                 (long long)trainer->total_steps(), (long long)trainer->batches_per_epoch(),
                 (long long)config.data.seq_len, (long long)config.data.batch_size);
    if (const models::DataParallel* p = trainer->parallel())
      std::fprintf(stderr, "data parallel over %s: %d ranks, %lld columns of each batch on rank 0, "
                   "%lld bytes all-reduced per step in %lld buckets\n",
                   p->communicator().name().c_str(), p->size(),
                   (long long)(models::batch_slice(config.data.batch_size, 0, p->size()).second),
                   (long long)p->bytes_per_step(), (long long)p->bucket_count());
  }
  const bool finished = trainer->run(options);
  if (const models::DataParallel* p = trainer->parallel(); p && writer && p->steps_reduced() > 0)
    std::fprintf(stderr,
                 "rank 0: gradient all-reduce %.2f ms per step on average over %lld steps (%.2f ms of it in the "
                 "collectives, waiting for the other ranks included)\n",
                 1e3 * p->seconds_reducing() / p->steps_reduced(), (long long)p->steps_reduced(),
                 1e3 * p->seconds_in_collectives() / p->steps_reduced());
  if (const std::string chart = trainer->chart_path(); writer && !chart.empty() && std::filesystem::exists(chart))
    std::fprintf(stderr, "curves: %s (open it in a browser)\n", chart.c_str());
  if (!finished) {
    if (writer) std::fprintf(stderr, "%s\n", stop_signal == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)");
    return 128 + stop_signal;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun this process is one rank of a data-parallel job.
  const comm::Launch launch = comm::launch_from_environment();
  const std::string who = launch.launched ? detail::concat("rank ", launch.rank, ": ") : "";
  Arguments args;
  std::unique_ptr<comm::Communicator> world;
  try {
    bool exit = false;
    args = parse_arguments(argc, argv, exit);
    if (exit) return 0;
    if (launch.launched) {
      LOOM_CHECK(comm::mpi_built(), "started by mpirun as rank ", launch.rank, " of ", launch.size,
                 ", but MPI support is not built into this train (apt-get install libopenmpi-dev openmpi-bin, "
                 "then meson setup --reconfigure build)");
      // One GPU per rank on a machine with several ranks, picked by the local rank
      // (from the launcher's list when it names several).
      const std::string device = comm::visible_device_for_rank(launch, std::getenv("CUDA_VISIBLE_DEVICES"));
      if (!device.empty()) ::setenv("CUDA_VISIBLE_DEVICES", device.c_str(), 1);
      world = comm::make_mpi_communicator();
      world->set_timeout_seconds(args.comm_timeout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\n%serror: %s\n", who.c_str(), e.what());
    return 1;
  }
  try {
    return train(args, world.get());
  } catch (const comm::AgreedError& e) {
    // Every rank raised it together: each says so and ends normally.
    std::fprintf(stderr, "\n%serror: %s\n", who.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\n%serror: %s\n", who.c_str(), error_text(e).c_str());
    // This rank's alone: the others may wait in a collective, so the job ends here.
    if (world) {
      std::fprintf(stderr, "%sstopping every rank\n", who.c_str());
      world->abort(1);
    }
    return 1;
  }
}
