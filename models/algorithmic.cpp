// algorithmic.cpp: the config and training protocol of the algorithmic tasks (see the header).
#include "models/algorithmic.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <type_traits>

#include "autodiff/grad_mode.h"
#include "engine/error.h"
#include "engine/json.h"
#include "models/optim.h"

namespace loom::models {

namespace {

using Json = nlohmann::ordered_json;

void check_keys(const Json& j, const std::string& where, std::initializer_list<const char*> allowed) {
  LOOM_CHECK(j.is_object(), where, ": expected an object, got ", json_excerpt(j));
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    std::string list;
    for (const char* a : allowed) {
      ok = ok || it.key() == a;
      list += (list.empty() ? "" : ", ") + std::string(a);
    }
    LOOM_CHECK(ok, where, ".", it.key(), ": unknown key (known: ", list, ")");
  }
}

template <class T>
T get(const Json& j, const std::string& key, const std::string& where, T fallback) {
  if (!j.contains(key)) return fallback;
  const Json& v = j.at(key);
  // nlohmann turns 2.5 into an integer and -1 into an unsigned one without complaint.
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    LOOM_CHECK(v.is_number_integer() && (std::is_signed_v<T> || v.get<int64_t>() >= 0), where, ".", key,
               ": expected ", std::is_signed_v<T> ? "an integer" : "a non-negative integer", ", got ", json_excerpt(v));
  } else if constexpr (std::is_floating_point_v<T>) {
    LOOM_CHECK(v.is_number(), where, ".", key, ": expected a number, got ", json_excerpt(v));
  } else {
    LOOM_CHECK(v.is_string(), where, ".", key, ": expected a string, got ", json_excerpt(v));
  }
  return v.get<T>();
}

void positive(int64_t value, const std::string& where, const char* key) {
  LOOM_CHECK(value >= 1, where, ".", key, ": must be at least 1, got ", value);
}

}  // namespace

std::unique_ptr<datasets::SequenceTask> make_algorithmic_task(const AlgorithmicConfig& c) {
  if (c.task_kind == "code_execution") return std::make_unique<datasets::CodeExecution>(c.code);
  if (c.task_kind == "listops") return std::make_unique<datasets::ListOps>(c.listops);
  LOOM_FAIL("algorithmic: unknown task kind '", c.task_kind, "' (expected code_execution or listops)");
}

AlgorithmicConfig parse_algorithmic_config(const std::string& text, const std::string& source) {
  const Json j = parse_json_strictly(text, source + ": ");
  check_keys(j, source, {"comment", "out_dir", "task", "model", "training", "expect"});
  AlgorithmicConfig c;
  c.out_dir = get<std::string>(j, "out_dir", source, "");
  LOOM_CHECK(!c.out_dir.empty(), source, ".out_dir: missing");

  LOOM_CHECK(j.contains("task"), source, ".task: missing");
  const Json& t = j.at("task");
  const std::string tw = source + ".task";
  LOOM_CHECK(t.is_object(), tw, ": expected an object, got ", json_excerpt(t));
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
    LOOM_FAIL(tw, ".kind: expected \"code_execution\" or \"listops\", got \"", c.task_kind, "\"");
  }
  std::unique_ptr<datasets::SequenceTask> task;
  try {
    task = make_algorithmic_task(c);  // the generators check their own parameters
  } catch (const Error& e) {
    throw Error(tw + ": " + e.what());
  }

  if (j.contains("model")) {
    const Json& m = j.at("model");
    const std::string mw = source + ".model";
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
  c.model.vocab = task->vocabulary().size();
  c.model.classes = task->num_classes();
  try {
    check_sequence_classifier_config(c.model);  // names the key: model.heads: ...
  } catch (const Error& e) {
    throw Error(source + "." + e.what());
  }

  if (j.contains("training")) {
    const Json& r = j.at("training");
    const std::string rw = source + ".training";
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
    positive(k.steps, rw, "steps");
    positive(k.batch_size, rw, "batch_size");
    positive(k.log_interval, rw, "log_interval");
    positive(k.eval_interval, rw, "eval_interval");
    positive(k.eval_batch_size, rw, "eval_batch_size");
    LOOM_CHECK(k.lr > 0.0 && std::isfinite(k.lr), rw, ".lr: must be positive, got ", k.lr);
    LOOM_CHECK(k.clip >= 0.0 && std::isfinite(k.clip), rw, ".clip: must be >= 0 (0: no clipping), got ", k.clip);
    LOOM_CHECK(k.threads >= 0, rw, ".threads: must be >= 0 (0: all cores), got ", k.threads);
  }
  if (j.contains("expect")) {
    const Json& e = j.at("expect");
    check_keys(e, source + ".expect", {"test_accuracy_above"});
    c.expect_test_accuracy_above = get<double>(e, "test_accuracy_above", source + ".expect", NAN);
  }
  return c;
}

AlgorithmicConfig load_algorithmic_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LOOM_CHECK(in, "algorithmic: cannot open config ", path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_algorithmic_config(text.str(), path);
}

AlgorithmicRun train_algorithmic(SequenceClassifier& model, const datasets::SequenceTask& task,
                                 const AlgorithmicTraining& tr, uint64_t shuffle_seed,
                                 const std::function<void(const std::string&)>& log) {
  const auto start = std::chrono::steady_clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  const auto say = [&](const char* format, auto... values) {
    char line[512];
    std::snprintf(line, sizeof line, format, values...);
    if (log) log(line);
  };
  AdamOptions options;
  options.form = AdamForm::pytorch;  // torch.optim.Adam, as the authors
  Adam adam(model.named_parameters(), options, LrSchedule::constant(tr.lr));
  const std::vector<Tensor> params = model.parameters();
  const Device device = params.front().device();

  AlgorithmicRun run;
  run.best_valid_accuracy = -1.0;
  std::vector<Tensor> best_params;
  const int64_t train_size = task.split_size(datasets::Split::train);
  std::vector<int64_t> order;
  int64_t epoch = -1, cursor = train_size;
  double loss_sum = 0.0;
  int64_t correct = 0, seen = 0;
  for (int64_t step = 1; step <= tr.steps; ++step) {
    std::vector<datasets::LabelledSequence> examples;
    while (static_cast<int64_t>(examples.size()) < tr.batch_size) {
      if (cursor == train_size) {
        order = datasets::epoch_order(train_size, shuffle_seed, static_cast<uint64_t>(++epoch));
        cursor = 0;
      }
      examples.push_back(task.example(datasets::Split::train, order[cursor++]));
    }
    model.train();
    const ClassifierTensors t = to_tensors(datasets::make_batch(examples), device);
    const Tensor logits = model.forward(t.tokens, t.lengths);
    const Tensor loss = cross_entropy(logits, t.labels);
    loss.backward();
    if (tr.clip > 0.0) clip_grad_norm(params, tr.clip);
    adam.step();
    adam.zero_grad();
    const double loss_value = loss.item();
    LOOM_CHECK(std::isfinite(loss_value), "algorithmic: the training loss is ", loss_value, " at step ", step);
    const std::vector<int64_t> predicted = argmax(logits, 1).to(Device::cpu).to_vector<int64_t>();
    for (size_t i = 0; i < predicted.size(); ++i) correct += predicted[i] == examples[i].label;
    loss_sum += loss_value * static_cast<double>(examples.size());
    seen += static_cast<int64_t>(examples.size());

    if (step % tr.log_interval == 0 || step == tr.steps) {
      say("step %6lld  epoch %.2f  train loss %.4f  train acc %5.1f%%  %.1f s", (long long)step,
          epoch + static_cast<double>(cursor) / static_cast<double>(train_size), loss_sum / seen,
          100.0 * correct / seen, seconds());
      loss_sum = 0.0;
      correct = seen = 0;
    }
    if (step % tr.eval_interval == 0 || step == tr.steps) {
      const Evaluation v = evaluate(model, task, datasets::Split::valid, tr.eval_batch_size);
      const bool better = v.accuracy > run.best_valid_accuracy;
      if (better) {
        NoGradGuard no_grad;
        run.best_valid_accuracy = v.accuracy;
        run.best_step = step;
        best_params.clear();
        for (const Tensor& p : params) best_params.push_back(clone(p));
      }
      say("step %6lld  valid loss %.4f  valid acc %5.1f%%%s  (best %5.1f%% at step %lld)", (long long)step, v.loss,
          100.0 * v.accuracy, better ? " *" : "  ", 100.0 * run.best_valid_accuracy, (long long)run.best_step);
    }
  }
  {
    NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) copy_(params[i], best_params[i]);
  }
  run.test = evaluate(model, task, datasets::Split::test, tr.eval_batch_size);
  run.seconds = seconds();
  return run;
}

}  // namespace loom::models
