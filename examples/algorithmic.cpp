// algorithmic: trains a sequence classifier (models/sequence_classifier.h) on one
// of the algorithmic tasks of "Going Beyond Linear Transformers with Recurrent
// Fast Weight Programmers" — code execution (datasets/code_execution.h) or
// sequential ListOps (datasets/listops.h) — from a config, prints progress
// lines, keeps the parameters of the best validation accuracy, reports their test
// accuracy and appends one row to a CSV.
//
//   algorithmic --check <config.json>...      (only validates the configs)
//   algorithmic <config.json> [--layer NAME] [--steps N] [--threads N] [--out DIR] [--csv FILE]
//
// --layer replaces model.layer (lstm, delta_net, ...), --steps training.steps.
// The CSV (default <out_dir>/results.csv) gains one row per run; it is rewritten
// through a temporary file, so a reader never sees half of it. With "expect":
// {"test_accuracy_above": x} in the config, the exit status is 1 when the test
// accuracy is not above x (which makes a quick config a test). The config and
// the training protocol are models/algorithmic.h's.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/file_io.h"
#include "datasets/task_readings.h"
#include "examples/command_line.h"
#include "models/algorithmic.h"

using namespace loom;

namespace {

const char* const kCsvHeader =
    "task,layer,d_model,layers,heads,parameters,seed,steps,epochs,batch_size,lr,best_valid_accuracy,"
    "best_valid_output_accuracy,best_step,test_accuracy,test_output_accuracy,test_loss,seconds,threads,"
    "strongest_baseline,strongest_baseline_accuracy";

// Appends `row` to the CSV at `path` (creating it with its header), rewriting the
// file through a temporary so that a reader never sees half of it.
void append_row(const std::string& path, const std::string& row) {
  std::string text;
  {
    std::ifstream in(path);
    if (in) {
      std::string header;
      std::getline(in, header);
      LOOM_CHECK(header == kCsvHeader, path, ": not a results file of this program (header '", header, "')");
      std::stringstream rest;
      rest << in.rdbuf();
      text = header + "\n" + rest.str();
    } else {
      text = std::string(kCsvHeader) + "\n";
    }
  }
  text += row + "\n";
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    LOOM_CHECK(out, "algorithmic: cannot write ", tmp);
    out << text;
    out.flush();
    LOOM_CHECK(out, "algorithmic: writing ", tmp, " failed");
  }
  std::filesystem::rename(tmp, path);
}

// The task's name without commas (the CSV has no quoting).
std::string csv_safe(std::string s) {
  std::replace(s.begin(), s.end(), ',', ' ');
  return s;
}

int64_t positive_integer(const std::string& flag, const std::string& text) {
  return examples::positive_integer("algorithmic", flag, text);
}

int usage() {
  std::fprintf(stderr,
               "usage: algorithmic <config.json> [--layer NAME] [--steps N | --epochs N] [--seed N] [--threads N]\n"
               "                   [--out DIR] [--csv FILE] [--resume | --overwrite]\n"
               "       algorithmic --check <config.json>...\n");
  return 2;
}

// "12.3%", or "-" for a figure that does not apply.
std::string percent(double fraction) {
  if (std::isnan(fraction)) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.2f%%", 100.0 * fraction);
  return text;
}

std::string csv_number(double value) {
  if (std::isnan(value)) return "";
  char text[32];
  std::snprintf(text, sizeof text, "%.4f", value);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  try {
    if (std::string(argv[1]) == "--check") {
      for (int i = 2; i < argc; ++i) models::load_algorithmic_config(argv[i]);
      std::printf("%d config(s) valid\n", argc - 2);
      return argc > 2 ? 0 : usage();
    }
    std::string config_path, layer, out_override, csv_override;
    int64_t steps = 0, epochs = 0, threads = 0, seed = 0;
    bool resume = false, overwrite = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      const auto value = [&]() -> std::string {
        LOOM_CHECK(i + 1 < argc, "algorithmic: ", a, " needs a value");
        return argv[++i];
      };
      if (a == "--layer") layer = value();
      else if (a == "--steps") steps = positive_integer(a, value());
      else if (a == "--epochs") epochs = positive_integer(a, value());
      else if (a == "--seed") seed = positive_integer(a, value());
      else if (a == "--threads") threads = positive_integer(a, value());
      else if (a == "--out") out_override = value();
      else if (a == "--csv") csv_override = value();
      else if (a == "--resume") resume = true;
      else if (a == "--overwrite") overwrite = true;
      else if (!a.empty() && a[0] == '-') return usage();
      else if (config_path.empty()) config_path = a;
      else return usage();
    }
    if (config_path.empty()) return usage();
    LOOM_CHECK(!(resume && overwrite), "algorithmic: --resume and --overwrite exclude each other");
    LOOM_CHECK(!(steps > 0 && epochs > 0), "algorithmic: --steps and --epochs exclude each other");
    models::AlgorithmicConfig config = models::load_algorithmic_config(config_path);
    if (!layer.empty()) {
      config.model.layer = layer;
      try {
        models::check_sequence_classifier_config(config.model);
      } catch (const Error& e) {
        throw Error(std::string("--layer: ") + e.what());
      }
    }
    if (seed > 0) config.model.seed = static_cast<uint64_t>(seed);
    if (steps > 0) config.training.steps = steps, config.training.epochs = 0;
    if (epochs > 0) config.training.epochs = epochs;
    if (threads > 0) config.training.threads = threads;
    if (config.training.threads > 0) set_num_threads(static_cast<int>(config.training.threads));
    const std::unique_ptr<datasets::SequenceTask> task = models::make_algorithmic_task(config);
    const std::string out_dir = out_override.empty() ? config.out_dir : out_override;
    std::filesystem::create_directories(out_dir);
    const std::string csv = csv_override.empty() ? out_dir + "/results.csv" : csv_override;
    const std::string state_path = out_dir + "/run_state.safetensors";
    const std::string metrics_path = out_dir + "/metrics.jsonl";
    const bool saved = std::filesystem::exists(state_path);
    LOOM_CHECK(!resume || saved, "algorithmic: --resume: ", state_path, " does not exist (nothing to continue)");
    LOOM_CHECK(!saved || resume || overwrite, "algorithmic: ", out_dir,
               " holds a run already (", state_path, "): --resume continues it, --overwrite starts it over");
    if (overwrite && saved) std::filesystem::remove(state_path);

    models::SequenceClassifier model(config.model);
    int64_t parameter_count = 0;
    for (const Tensor& p : model.parameters()) parameter_count += p.numel();
    const models::AlgorithmicTraining& tr = config.training;
    const int64_t train_size = task->split_size(datasets::Split::train);
    const int64_t planned = models::total_steps(tr, train_size);
    std::printf("%s, layer %s (d_model %lld, %lld layers): %lld parameters; %lld train / %lld valid / %lld test "
                "examples; %lld steps of %lld (%.1f epochs), %d threads\n",
                task->name().c_str(), config.model.layer.c_str(), (long long)config.model.d_model,
                (long long)config.model.layers, (long long)parameter_count, (long long)train_size,
                (long long)task->split_size(datasets::Split::valid), (long long)task->split_size(datasets::Split::test),
                (long long)planned, (long long)tr.batch_size,
                static_cast<double>(planned) / models::steps_per_epoch(train_size, tr.batch_size), num_threads());
    std::fflush(stdout);

    models::RunPersistence persist;
    persist.state_path = state_path;
    persist.identity = models::algorithmic_run_identity(config, *task);
    persist.resume = resume;
    persist.save_interval = std::max<int64_t>(1, tr.eval_interval / 4);
    persist.on_eval = [&](const std::vector<models::EvalPoint>& history) {
      io::write_file_atomically(metrics_path, models::history_jsonl(history));
    };
    const models::AlgorithmicRun run = models::train_algorithmic(
        model, *task, tr, models::algorithmic_task_seed(config),
        [](const std::string& line) {
          std::printf("%s\n", line.c_str());
          std::fflush(stdout);
        },
        persist);
    const bool labels_every_token = task->labels_every_token();
    std::printf("test accuracy %s%s%s (loss %.4f) with the parameters of step %lld (valid %s); %lld steps, %.1f s%s\n",
                percent(run.test.accuracy).c_str(), labels_every_token ? ", per output " : "",
                labels_every_token ? percent(run.test.output_accuracy).c_str() : "", run.test.loss,
                (long long)run.best_step, percent(run.best_valid_accuracy).c_str(), (long long)run.steps, run.seconds,
                run.stopped_early ? " (stopped early: patience)" : "");

    // The shallow readings of the same test split: a trained model must beat them.
    const std::vector<datasets::ReadingScore> readings = datasets::score_readings(*task, datasets::Split::test);
    const datasets::ReadingScore* strongest = &readings.front();
    std::printf("baselines on the same test split (accuracy%s):\n", labels_every_token ? ", per output" : "");
    for (const datasets::ReadingScore& r : readings) {
      std::printf("  %-40s %8s%s%s\n", r.name.c_str(), percent(r.accuracy).c_str(), labels_every_token ? "  " : "",
                  labels_every_token ? percent(r.output_accuracy).c_str() : "");
      if (r.accuracy > strongest->accuracy) strongest = &r;
    }
    const bool below = run.test.accuracy <= strongest->accuracy;
    std::printf("the model is %s the strongest baseline (%s, %s)\n", below ? "NOT above" : "above",
                strongest->name.c_str(), percent(strongest->accuracy).c_str());

    char row[2048];
    std::snprintf(row, sizeof row, "%s,%s,%lld,%lld,%lld,%lld,%lld,%lld,%.2f,%lld,%g,%s,%s,%lld,%s,%s,%.4f,%.1f,%d,%s,%s",
                  csv_safe(task->name()).c_str(), config.model.layer.c_str(), (long long)config.model.d_model,
                  (long long)config.model.layers, (long long)config.model.heads, (long long)parameter_count,
                  (long long)config.model.seed, (long long)run.steps,
                  static_cast<double>(run.steps) / models::steps_per_epoch(train_size, tr.batch_size),
                  (long long)tr.batch_size, tr.lr, csv_number(run.best_valid_accuracy).c_str(),
                  csv_number(run.best_valid_output_accuracy).c_str(), (long long)run.best_step,
                  csv_number(run.test.accuracy).c_str(), csv_number(run.test.output_accuracy).c_str(), run.test.loss,
                  run.seconds, num_threads(), csv_safe(strongest->name).c_str(),
                  csv_number(strongest->accuracy).c_str());
    append_row(csv, row);
    std::printf("results: %s\nhistory: %s\n", csv.c_str(), metrics_path.c_str());
    if (!std::isnan(config.expect_test_accuracy_above)) {
      const bool ok = run.test.accuracy > config.expect_test_accuracy_above;
      std::printf("expect: test accuracy %.4f > %g: %s\n", run.test.accuracy, config.expect_test_accuracy_above,
                  ok ? "ok" : "FAILED");
      return ok ? 0 : 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
