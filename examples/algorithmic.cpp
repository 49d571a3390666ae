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
#include "examples/command_line.h"
#include "models/algorithmic.h"

using namespace loom;

namespace {

const char* const kCsvHeader =
    "task,layer,d_model,layers,heads,parameters,steps,batch_size,lr,best_valid_accuracy,best_step,test_accuracy,"
    "test_loss,seconds,threads";

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
               "usage: algorithmic <config.json> [--layer NAME] [--steps N] [--threads N] [--out DIR] [--csv FILE]\n"
               "       algorithmic --check <config.json>...\n");
  return 2;
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
    int64_t steps = 0, threads = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      const auto value = [&]() -> std::string {
        LOOM_CHECK(i + 1 < argc, "algorithmic: ", a, " needs a value");
        return argv[++i];
      };
      if (a == "--layer") layer = value();
      else if (a == "--steps") steps = positive_integer(a, value());
      else if (a == "--threads") threads = positive_integer(a, value());
      else if (a == "--out") out_override = value();
      else if (a == "--csv") csv_override = value();
      else if (!a.empty() && a[0] == '-') return usage();
      else if (config_path.empty()) config_path = a;
      else return usage();
    }
    if (config_path.empty()) return usage();
    models::AlgorithmicConfig config = models::load_algorithmic_config(config_path);
    if (!layer.empty()) {
      config.model.layer = layer;
      try {
        models::check_sequence_classifier_config(config.model);
      } catch (const Error& e) {
        throw Error(std::string("--layer: ") + e.what());
      }
    }
    if (steps > 0) config.training.steps = steps;
    if (threads > 0) config.training.threads = threads;
    if (config.training.threads > 0) set_num_threads(static_cast<int>(config.training.threads));
    const std::unique_ptr<datasets::SequenceTask> task = models::make_algorithmic_task(config);
    const std::string out_dir = out_override.empty() ? config.out_dir : out_override;
    std::filesystem::create_directories(out_dir);
    const io::DirectoryLock out_dir_lock(out_dir, "out_dir");  // one run writes out_dir at a time
    const std::string csv = csv_override.empty() ? out_dir + "/results.csv" : csv_override;

    models::SequenceClassifier model(config.model);
    int64_t parameter_count = 0;
    for (const Tensor& p : model.parameters()) parameter_count += p.numel();
    const models::AlgorithmicTraining& tr = config.training;
    std::printf("%s, layer %s (d_model %lld, %lld layers): %lld parameters; %lld train / %lld valid / %lld test "
                "examples; %lld steps of %lld, %d threads\n",
                task->name().c_str(), config.model.layer.c_str(), (long long)config.model.d_model,
                (long long)config.model.layers, (long long)parameter_count,
                (long long)task->split_size(datasets::Split::train), (long long)task->split_size(datasets::Split::valid),
                (long long)task->split_size(datasets::Split::test), (long long)tr.steps, (long long)tr.batch_size,
                num_threads());
    std::fflush(stdout);

    const uint64_t shuffle_seed = config.task_kind == "code_execution" ? config.code.seed : config.listops.seed;
    const models::AlgorithmicRun run = models::train_algorithmic(model, *task, tr, shuffle_seed, [](const std::string& line) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    });
    std::printf("test accuracy %.2f%% (loss %.4f) with the parameters of step %lld (valid %.2f%%); %.1f s\n",
                100.0 * run.test.accuracy, run.test.loss, (long long)run.best_step, 100.0 * run.best_valid_accuracy,
                run.seconds);

    char row[1024];
    std::snprintf(row, sizeof row, "%s,%s,%lld,%lld,%lld,%lld,%lld,%lld,%g,%.4f,%lld,%.4f,%.4f,%.1f,%d",
                  csv_safe(task->name()).c_str(), config.model.layer.c_str(), (long long)config.model.d_model,
                  (long long)config.model.layers, (long long)config.model.heads, (long long)parameter_count,
                  (long long)tr.steps, (long long)tr.batch_size, tr.lr, run.best_valid_accuracy,
                  (long long)run.best_step, run.test.accuracy, run.test.loss, run.seconds, num_threads());
    append_row(csv, row);
    std::printf("results: %s\n", csv.c_str());

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
