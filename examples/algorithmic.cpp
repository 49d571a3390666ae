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
// accuracy is not above x (which makes a quick config a test).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "autodiff/grad_mode.h"
#include "datasets/code_execution.h"
#include "datasets/listops.h"
#include "engine/device.h"
#include "engine/error.h"
#include "models/optim.h"
#include "models/sequence_classifier.h"

using namespace loom;
using Json = nlohmann::json;

namespace {

// ---- the config ---------------------------------------------------------------------

struct Training {
  int64_t steps = 1000;
  int64_t batch_size = 64;
  double lr = 3e-4;
  double clip = 1.0;            // global gradient-norm limit; 0: none
  int64_t log_interval = 50;
  int64_t eval_interval = 250;  // validations (on the whole valid split)
  int64_t eval_batch_size = 250;
  int64_t threads = 0;          // 0: OMP_NUM_THREADS or all cores
};

struct Config {
  std::string out_dir;
  std::string task_kind;  // code_execution | listops
  datasets::CodeExecutionConfig code;
  datasets::ListOpsConfig listops;
  models::SequenceClassifierConfig model;  // vocab and classes come from the task
  Training training;
  double expect_test_accuracy_above = NAN;
};

void check_keys(const Json& j, const std::string& where, std::initializer_list<const char*> allowed) {
  LOOM_CHECK(j.is_object(), where, ": expected an object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || it.key() == a;
    std::string list;
    for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    LOOM_CHECK(ok, where, ".", it.key(), ": unknown key (known: ", list, ")");
  }
}

template <class T>
T get(const Json& j, const std::string& key, const std::string& where, T fallback) {
  if (!j.contains(key)) return fallback;
  const Json& v = j.at(key);
  // nlohmann converts 2.5 to an integer and -1 to an unsigned without complaint.
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
    LOOM_CHECK(v.is_number_integer() && (std::is_signed_v<T> || v.get<int64_t>() >= 0), where, ".", key,
               ": expected ", std::is_signed_v<T> ? "an integer" : "a non-negative integer", ", got ", v.dump());
  try {
    return v.get<T>();
  } catch (const std::exception&) {
    throw Error(where + "." + key + ": wrong type (" + v.dump() + ")");
  }
}

// Builds the task the config describes (throws naming the config on bad values).
std::unique_ptr<datasets::SequenceTask> make_task(const Config& c) {
  if (c.task_kind == "code_execution") return std::make_unique<datasets::CodeExecution>(c.code);
  return std::make_unique<datasets::ListOps>(c.listops);
}

Config load_config(const std::string& path) {
  std::ifstream in(path);
  LOOM_CHECK(in, "algorithmic: cannot open config ", path);
  Json j;
  try {
    j = Json::parse(in);
  } catch (const std::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
  check_keys(j, path, {"comment", "out_dir", "task", "model", "training", "expect"});
  Config c;
  c.out_dir = get<std::string>(j, "out_dir", path, "");
  LOOM_CHECK(!c.out_dir.empty(), path, ".out_dir: missing");
  LOOM_CHECK(j.contains("task"), path, ".task: missing");

  const Json& t = j.at("task");
  const std::string tw = path + ".task";
  LOOM_CHECK(t.is_object(), tw, ": expected an object");
  c.task_kind = get<std::string>(t, "kind", tw, "");
  if (c.task_kind == "code_execution") {
    check_keys(t, tw, {"kind", "variables", "statements", "train_size", "valid_size", "test_size", "seed"});
    auto& k = c.code;
    k.variables = get<int64_t>(t, "variables", tw, k.variables);
    k.statements = get<int64_t>(t, "statements", tw, k.statements);
    k.train_size = get<int64_t>(t, "train_size", tw, k.train_size);
    k.valid_size = get<int64_t>(t, "valid_size", tw, k.valid_size);
    k.test_size = get<int64_t>(t, "test_size", tw, k.test_size);
    k.seed = get<uint64_t>(t, "seed", tw, k.seed);
  } else if (c.task_kind == "listops") {
    check_keys(t, tw, {"kind", "max_depth", "min_depth", "max_args", "operation_percent", "max_length", "train_size",
                       "valid_size", "test_size", "seed"});
    auto& k = c.listops;
    k.max_depth = get<int64_t>(t, "max_depth", tw, k.max_depth);
    k.min_depth = get<int64_t>(t, "min_depth", tw, k.max_depth);  // default: every tree max_depth deep
    k.max_args = get<int64_t>(t, "max_args", tw, k.max_args);
    k.operation_percent = get<int64_t>(t, "operation_percent", tw, k.operation_percent);
    k.max_length = get<int64_t>(t, "max_length", tw, k.max_length);
    k.train_size = get<int64_t>(t, "train_size", tw, k.train_size);
    k.valid_size = get<int64_t>(t, "valid_size", tw, k.valid_size);
    k.test_size = get<int64_t>(t, "test_size", tw, k.test_size);
    k.seed = get<uint64_t>(t, "seed", tw, k.seed);
  } else {
    throw Error(tw + ".kind: expected \"code_execution\" or \"listops\", got \"" + c.task_kind + "\"");
  }
  try {
    make_task(c);
  } catch (const Error& e) {
    throw Error(tw + ": " + e.what());
  }

  if (j.contains("model")) {
    const Json& m = j.at("model");
    const std::string mw = path + ".model";
    check_keys(m, mw, {"layer", "d_model", "layers", "heads", "d_ff", "dropout", "seed"});
    auto& k = c.model;
    k.layer = get<std::string>(m, "layer", mw, k.layer);
    k.d_model = get<int64_t>(m, "d_model", mw, k.d_model);
    k.layers = get<int64_t>(m, "layers", mw, k.layers);
    k.heads = get<int64_t>(m, "heads", mw, k.heads);
    k.d_ff = get<int64_t>(m, "d_ff", mw, k.d_ff);
    k.dropout = get<double>(m, "dropout", mw, k.dropout);
    k.seed = get<uint64_t>(m, "seed", mw, k.seed);
  }
  if (j.contains("training")) {
    const Json& r = j.at("training");
    const std::string rw = path + ".training";
    check_keys(r, rw, {"steps", "batch_size", "lr", "clip", "log_interval", "eval_interval", "eval_batch_size", "threads"});
    auto& k = c.training;
    k.steps = get<int64_t>(r, "steps", rw, k.steps);
    k.batch_size = get<int64_t>(r, "batch_size", rw, k.batch_size);
    k.lr = get<double>(r, "lr", rw, k.lr);
    k.clip = get<double>(r, "clip", rw, k.clip);
    k.log_interval = get<int64_t>(r, "log_interval", rw, k.log_interval);
    k.eval_interval = get<int64_t>(r, "eval_interval", rw, k.eval_interval);
    k.eval_batch_size = get<int64_t>(r, "eval_batch_size", rw, k.eval_batch_size);
    k.threads = get<int64_t>(r, "threads", rw, k.threads);
    LOOM_CHECK(k.steps >= 1, rw, ".steps: must be at least 1, got ", k.steps);
    LOOM_CHECK(k.batch_size >= 1, rw, ".batch_size: must be at least 1, got ", k.batch_size);
    LOOM_CHECK(k.lr > 0.0, rw, ".lr: must be positive, got ", k.lr);
    LOOM_CHECK(k.clip >= 0.0, rw, ".clip: must be >= 0 (0: no clipping), got ", k.clip);
    LOOM_CHECK(k.log_interval >= 1, rw, ".log_interval: must be at least 1, got ", k.log_interval);
    LOOM_CHECK(k.eval_interval >= 1, rw, ".eval_interval: must be at least 1, got ", k.eval_interval);
    LOOM_CHECK(k.eval_batch_size >= 1, rw, ".eval_batch_size: must be at least 1, got ", k.eval_batch_size);
    LOOM_CHECK(k.threads >= 0, rw, ".threads: must be >= 0, got ", k.threads);
  }
  if (j.contains("expect")) {
    const Json& e = j.at("expect");
    check_keys(e, path + ".expect", {"test_accuracy_above"});
    c.expect_test_accuracy_above = get<double>(e, "test_accuracy_above", path + ".expect", NAN);
  }
  return c;
}

// Fills in vocab and classes from the task, then checks the model part.
void finish_model_config(Config& c, const datasets::SequenceTask& task, const std::string& where) {
  c.model.vocab = task.vocabulary().size();
  c.model.classes = task.num_classes();
  try {
    models::check_sequence_classifier_config(c.model);
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
}

// ---- the CSV -------------------------------------------------------------------------------

const char* const kCsvHeader =
    "task,layer,d_model,layers,heads,parameters,steps,batch_size,lr,best_valid_accuracy,best_step,test_accuracy,"
    "test_loss,seconds,threads";

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
  size_t used = 0;
  int64_t n = 0;
  try {
    n = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  LOOM_CHECK(used == text.size() && n >= 1, "algorithmic: ", flag, " expects a positive integer, got '", text, "'");
  return n;
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
      for (int i = 2; i < argc; ++i) {
        Config c = load_config(argv[i]);
        finish_model_config(c, *make_task(c), std::string(argv[i]) + ".model");
      }
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
    Config config = load_config(config_path);
    if (!layer.empty()) config.model.layer = layer;
    if (steps > 0) config.training.steps = steps;
    if (threads > 0) config.training.threads = threads;
    const std::unique_ptr<datasets::SequenceTask> task = make_task(config);
    finish_model_config(config, *task, config_path + ".model");
    if (config.training.threads > 0) set_num_threads(static_cast<int>(config.training.threads));
    const std::string out_dir = out_override.empty() ? config.out_dir : out_override;
    std::filesystem::create_directories(out_dir);
    const std::string csv = csv_override.empty() ? out_dir + "/results.csv" : csv_override;

    models::SequenceClassifier model(config.model);
    int64_t parameter_count = 0;
    for (const Tensor& p : model.parameters()) parameter_count += p.numel();
    const Training& tr = config.training;
    std::printf("%s, layer %s (d_model %lld, %lld layers): %lld parameters; %lld train / %lld valid / %lld test "
                "examples; %lld steps of %lld, %d threads\n",
                task->name().c_str(), config.model.layer.c_str(), (long long)config.model.d_model,
                (long long)config.model.layers, (long long)parameter_count,
                (long long)task->split_size(datasets::Split::train), (long long)task->split_size(datasets::Split::valid),
                (long long)task->split_size(datasets::Split::test), (long long)tr.steps, (long long)tr.batch_size,
                num_threads());
    std::fflush(stdout);

    models::AdamOptions options;
    options.form = models::AdamForm::pytorch;  // torch.optim.Adam, as the authors
    models::Adam adam(model.named_parameters(), options, models::LrSchedule::constant(tr.lr));
    const std::vector<Tensor> params = model.parameters();
    std::vector<Tensor> best_params;
    double best_valid = -1.0;
    int64_t best_step = 0;

    const auto start = std::chrono::steady_clock::now();
    const auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    const int64_t train_size = task->split_size(datasets::Split::train);
    const uint64_t shuffle_seed = config.task_kind == "code_execution" ? config.code.seed : config.listops.seed;
    std::vector<int64_t> order;
    int64_t epoch = -1, cursor = train_size;
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0;
    for (int64_t step = 1; step <= tr.steps; ++step) {
      // Batches walk a fresh permutation of the training split each epoch.
      std::vector<datasets::LabelledSequence> examples;
      while (static_cast<int64_t>(examples.size()) < tr.batch_size) {
        if (cursor == train_size) {
          order = datasets::epoch_order(train_size, shuffle_seed, static_cast<uint64_t>(++epoch));
          cursor = 0;
        }
        examples.push_back(task->example(datasets::Split::train, order[cursor++]));
      }
      model.train();
      const models::ClassifierTensors t = models::to_tensors(datasets::make_batch(examples));
      const Tensor logits = model.forward(t.tokens, t.lengths);
      const Tensor loss = cross_entropy(logits, t.labels);
      loss.backward();
      if (tr.clip > 0.0) models::clip_grad_norm(params, tr.clip);
      adam.step();
      adam.zero_grad();
      const double loss_value = loss.item();
      LOOM_CHECK(std::isfinite(loss_value), "algorithmic: the training loss is ", loss_value, " at step ", step);
      {
        const std::vector<int64_t> predicted = argmax(logits, 1).to_vector<int64_t>();
        for (size_t i = 0; i < predicted.size(); ++i) correct += predicted[i] == examples[i].label;
      }
      loss_sum += loss_value * static_cast<double>(examples.size());
      seen += static_cast<int64_t>(examples.size());

      if (step % tr.log_interval == 0 || step == tr.steps) {
        std::printf("step %6lld  epoch %.2f  train loss %.4f  train acc %5.1f%%  %.1f s\n", (long long)step,
                    epoch + static_cast<double>(cursor) / train_size, loss_sum / seen, 100.0 * correct / seen,
                    seconds());
        std::fflush(stdout);
        loss_sum = 0.0;
        correct = seen = 0;
      }
      if (step % tr.eval_interval == 0 || step == tr.steps) {
        const models::Evaluation v = models::evaluate(model, *task, datasets::Split::valid, tr.eval_batch_size);
        const bool better = v.accuracy > best_valid;
        if (better) {
          NoGradGuard no_grad;
          best_valid = v.accuracy;
          best_step = step;
          best_params.clear();
          for (const Tensor& p : params) best_params.push_back(clone(p));
        }
        std::printf("step %6lld  valid loss %.4f  valid acc %5.1f%%%s  (best %5.1f%% at step %lld)\n", (long long)step,
                    v.loss, 100.0 * v.accuracy, better ? " *" : "  ", 100.0 * best_valid, (long long)best_step);
        std::fflush(stdout);
      }
    }
    {
      NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) copy_(params[i], best_params[i]);
    }
    const models::Evaluation test = models::evaluate(model, *task, datasets::Split::test, tr.eval_batch_size);
    const double total_seconds = seconds();
    std::printf("test accuracy %.2f%% (loss %.4f) with the parameters of step %lld (valid %.2f%%); %.1f s\n",
                100.0 * test.accuracy, test.loss, (long long)best_step, 100.0 * best_valid, total_seconds);

    char row[1024];
    std::snprintf(row, sizeof row, "%s,%s,%lld,%lld,%lld,%lld,%lld,%lld,%g,%.4f,%lld,%.4f,%.4f,%.1f,%d",
                  csv_safe(task->name()).c_str(), config.model.layer.c_str(), (long long)config.model.d_model,
                  (long long)config.model.layers, (long long)config.model.heads, (long long)parameter_count,
                  (long long)tr.steps, (long long)tr.batch_size, tr.lr, best_valid, (long long)best_step, test.accuracy,
                  test.loss, total_seconds, num_threads());
    append_row(csv, row);
    std::printf("results: %s\n", csv.c_str());

    if (!std::isnan(config.expect_test_accuracy_above)) {
      const bool ok = test.accuracy > config.expect_test_accuracy_above;
      std::printf("expect: test accuracy %.4f > %g: %s\n", test.accuracy, config.expect_test_accuracy_above,
                  ok ? "ok" : "FAILED");
      return ok ? 0 : 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
