// algorithmic.cpp: the config and training protocol of the algorithmic tasks (see the header).
#include "models/programs/algorithmic.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <type_traits>

#include "autodiff/grad_mode.h"
#include "engine/error.h"
#include "engine/json.h"
#include "engine/safetensors.h"
#include "models/blocks/optim.h"

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

// The keys every task config has.
template <class TaskConfig>
void read_sizes_and_seed(const Json& t, const std::string& where, TaskConfig& k) {
  k.train_size = get<int64_t>(t, "train_size", where, k.train_size);
  k.valid_size = get<int64_t>(t, "valid_size", where, k.valid_size);
  k.test_size = get<int64_t>(t, "test_size", where, k.test_size);
  k.seed = get<uint64_t>(t, "seed", where, k.seed);
}

void positive(int64_t value, const std::string& where, const char* key) {
  LOOM_CHECK(value >= 1, where, ".", key, ": must be at least 1, got ", value);
}

}  // namespace

constexpr const char* kTaskKinds = "\"code_execution_rfwp\", \"listops_rfwp\", \"code_execution\" or \"listops\"";

std::unique_ptr<datasets::SequenceTask> make_algorithmic_task(const AlgorithmicConfig& c) {
  if (c.task_kind == "code_execution") return std::make_unique<datasets::CodeExecution>(c.code);
  if (c.task_kind == "listops") return std::make_unique<datasets::ListOps>(c.listops);
  if (c.task_kind == "code_execution_rfwp") return std::make_unique<datasets::CodeExecutionRfwp>(c.code_rfwp);
  if (c.task_kind == "listops_rfwp") return std::make_unique<datasets::ListOpsRfwp>(c.listops_rfwp);
  LOOM_FAIL("algorithmic: unknown task kind '", c.task_kind, "' (expected ", kTaskKinds, ")");
}

uint64_t algorithmic_task_seed(const AlgorithmicConfig& c) {
  if (c.task_kind == "code_execution") return c.code.seed;
  if (c.task_kind == "listops") return c.listops.seed;
  if (c.task_kind == "code_execution_rfwp") return c.code_rfwp.seed;
  return c.listops_rfwp.seed;
}

int64_t steps_per_epoch(int64_t train_size, int64_t batch_size) { return (train_size + batch_size - 1) / batch_size; }

int64_t total_steps(const AlgorithmicTraining& t, int64_t train_size) {
  return t.epochs > 0 ? t.epochs * steps_per_epoch(train_size, t.batch_size) : t.steps;
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
    read_sizes_and_seed(t, tw, k);
  } else if (c.task_kind == "listops") {
    check_keys(t, tw, {"kind", "max_depth", "min_depth", "max_args", "operation_percent", "max_length", "train_size",
                       "valid_size", "test_size", "seed"});
    auto& k = c.listops;
    k.max_depth = get<int64_t>(t, "max_depth", tw, k.max_depth);
    k.min_depth = get<int64_t>(t, "min_depth", tw, k.max_depth);  // default: every tree max_depth deep
    k.max_args = get<int64_t>(t, "max_args", tw, k.max_args);
    k.operation_percent = get<int64_t>(t, "operation_percent", tw, k.operation_percent);
    k.max_length = get<int64_t>(t, "max_length", tw, k.max_length);
    read_sizes_and_seed(t, tw, k);
  } else if (c.task_kind == "code_execution_rfwp") {
    check_keys(t, tw, {"kind", "variables", "statements", "semantics", "train_size", "valid_size", "test_size", "seed"});
    auto& k = c.code_rfwp;
    k.variables = get<int64_t>(t, "variables", tw, k.variables);
    k.statements = get<int64_t>(t, "statements", tw, k.statements);
    const std::string semantics = get<std::string>(t, "semantics", tw, "authors");
    LOOM_CHECK(semantics == "authors" || semantics == "exact", tw,
               ".semantics: expected \"authors\" or \"exact\", got \"", semantics, "\"");
    k.semantics = semantics == "authors" ? datasets::CodeSemantics::authors : datasets::CodeSemantics::exact;
    read_sizes_and_seed(t, tw, k);
  } else if (c.task_kind == "listops_rfwp") {
    check_keys(t, tw, {"kind", "depth", "max_args", "operators", "train_size", "valid_size", "test_size", "seed"});
    auto& k = c.listops_rfwp;
    k.depth = get<int64_t>(t, "depth", tw, k.depth);
    k.max_args = get<int64_t>(t, "max_args", tw, k.max_args);
    const std::string operators = get<std::string>(t, "operators", tw, "min_max_first");
    LOOM_CHECK(operators == "min_max_first" || operators == "min_max_med_sm", tw,
               ".operators: expected \"min_max_first\" or \"min_max_med_sm\", got \"", operators, "\"");
    k.operators = operators == "min_max_first" ? datasets::ListOpsOperators::min_max_first
                                               : datasets::ListOpsOperators::min_max_med_sm;
    read_sizes_and_seed(t, tw, k);
  } else {
    LOOM_FAIL(tw, ".kind: expected ", kTaskKinds, ", got \"", c.task_kind, "\"");
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
    check_keys(r, rw, {"steps", "epochs", "batch_size", "lr", "adam_beta1", "adam_beta2", "adam_eps", "clip",
                       "log_interval", "eval_interval", "patience", "eval_batch_size", "threads"});
    auto& k = c.training;
    LOOM_CHECK(!(r.contains("steps") && r.contains("epochs")), rw, ": give steps or epochs, not both");
    k.steps = get<int64_t>(r, "steps", rw, k.steps);
    k.epochs = get<int64_t>(r, "epochs", rw, k.epochs);
    k.adam_beta1 = get<double>(r, "adam_beta1", rw, k.adam_beta1);
    k.adam_beta2 = get<double>(r, "adam_beta2", rw, k.adam_beta2);
    k.adam_eps = get<double>(r, "adam_eps", rw, k.adam_eps);
    k.patience = get<int64_t>(r, "patience", rw, k.patience);
    k.batch_size = get<int64_t>(r, "batch_size", rw, k.batch_size);
    k.lr = get<double>(r, "lr", rw, k.lr);
    k.clip = get<double>(r, "clip", rw, k.clip);
    k.log_interval = get<int64_t>(r, "log_interval", rw, k.log_interval);
    // With epochs, the authors' protocol: one validation per epoch.
    k.eval_interval = get<int64_t>(r, "eval_interval", rw,
                                   k.epochs > 0 ? steps_per_epoch(task->split_size(datasets::Split::train), k.batch_size)
                                                : k.eval_interval);
    k.eval_batch_size = get<int64_t>(r, "eval_batch_size", rw, k.eval_batch_size);
    k.threads = get<int64_t>(r, "threads", rw, k.threads);
    positive(k.steps, rw, "steps");
    LOOM_CHECK(k.epochs >= 0, rw, ".epochs: must be >= 0 (0: use steps), got ", k.epochs);
    LOOM_CHECK(k.patience >= 0, rw, ".patience: must be >= 0 (0: never stop early), got ", k.patience);
    LOOM_CHECK(k.adam_beta1 >= 0.0 && k.adam_beta1 < 1.0, rw, ".adam_beta1: must be in [0, 1), got ", k.adam_beta1);
    LOOM_CHECK(k.adam_beta2 >= 0.0 && k.adam_beta2 < 1.0, rw, ".adam_beta2: must be in [0, 1), got ", k.adam_beta2);
    LOOM_CHECK(k.adam_eps > 0.0 && std::isfinite(k.adam_eps), rw, ".adam_eps: must be positive, got ", k.adam_eps);
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

std::string algorithmic_run_identity(const AlgorithmicConfig& c, const datasets::SequenceTask& task) {
  const SequenceClassifierConfig& m = c.model;
  const AlgorithmicTraining& t = c.training;
  char text[1024];
  std::snprintf(text, sizeof text,
                "task %s (seed %llu, %lld train); model %s d_model %lld layers %lld heads %lld d_ff %lld dropout %g "
                "seed %llu; batch %lld lr %g betas %g %g eps %g clip %g",
                task.name().c_str(), (unsigned long long)algorithmic_task_seed(c),
                (long long)task.split_size(datasets::Split::train), m.layer.c_str(), (long long)m.d_model,
                (long long)m.layers, (long long)m.heads, (long long)m.d_ff, m.dropout, (unsigned long long)m.seed,
                (long long)t.batch_size, t.lr, t.adam_beta1, t.adam_beta2, t.adam_eps, t.clip);
  return text;
}

namespace {

Json point_json(const EvalPoint& p) {
  const auto number = [](double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); };
  return Json{{"step", p.step},
              {"epoch", p.epoch},
              {"train_loss", number(p.train_loss)},
              {"train_accuracy", number(p.train_accuracy)},
              {"valid_loss", number(p.valid_loss)},
              {"valid_accuracy", number(p.valid_accuracy)},
              {"valid_output_accuracy", number(p.valid_output_accuracy)},
              {"tokens_per_second", number(p.tokens_per_second)},
              {"seconds", p.seconds}};
}

EvalPoint point_from_json(const Json& j, const std::string& where) {
  const auto number = [&](const char* key) {
    LOOM_CHECK(j.contains(key), where, ": history point without \"", key, "\"");
    const Json& v = j.at(key);
    LOOM_CHECK(v.is_null() || v.is_number(), where, ": history \"", key, "\" is not a number");
    return v.is_null() ? NAN : v.get<double>();
  };
  EvalPoint p;
  p.step = static_cast<int64_t>(number("step"));
  p.epoch = number("epoch");
  p.train_loss = number("train_loss");
  p.train_accuracy = number("train_accuracy");
  p.valid_loss = number("valid_loss");
  p.valid_accuracy = number("valid_accuracy");
  p.valid_output_accuracy = number("valid_output_accuracy");
  p.tokens_per_second = number("tokens_per_second");
  p.seconds = number("seconds");
  return p;
}

// What a run's state file holds besides the optimizer's tensors.
struct RunState {
  int64_t step = 0;
  double seconds = 0.0;
  double best_valid_accuracy = -1.0, best_valid_output_accuracy = NAN;
  int64_t best_step = 0, evaluations_since_best = 0;
  uint64_t dropout_offset = 0;
  std::vector<EvalPoint> history;
};

// The lowest validation loss of the history without its last `skip` points (+inf if none).
double history_min_loss(const std::vector<EvalPoint>& history, size_t skip) {
  double lowest = INFINITY;
  for (size_t i = 0; i + skip < history.size(); ++i) lowest = std::min(lowest, history[i].valid_loss);
  return lowest;
}

constexpr const char* kModelPrefix = "model.";
constexpr const char* kBestPrefix = "best.";
constexpr const char* kAdamPrefix = "adam.";

void save_run_state(const RunPersistence& where, const SequenceClassifier& model, const std::vector<Tensor>& best,
                    const Adam& adam, const RunState& st) {
  NamedTensors tensors;
  const NamedTensors params = model.named_parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    tensors.emplace_back(kModelPrefix + params[i].first, params[i].second);
    if (!best.empty()) tensors.emplace_back(kBestPrefix + params[i].first, best[i]);
  }
  for (const auto& [name, t] : adam.state_tensors()) tensors.emplace_back(kAdamPrefix + name, t);
  Json history = Json::array();
  for (const EvalPoint& p : st.history) history.push_back(point_json(p));
  char number[64];
  const auto exact = [&](double v) {  // round-trips every double
    std::snprintf(number, sizeof number, "%.17g", v);
    return std::string(number);
  };
  save_safetensors(where.state_path, tensors,
                   {{"format", "loom-algorithmic-run"},
                    {"identity", where.identity},
                    {"step", std::to_string(st.step)},
                    {"seconds", exact(st.seconds)},
                    {"best_valid_accuracy", exact(st.best_valid_accuracy)},
                    {"best_valid_output_accuracy", exact(st.best_valid_output_accuracy)},
                    {"best_step", std::to_string(st.best_step)},
                    {"evaluations_since_best", std::to_string(st.evaluations_since_best)},
                    {"dropout_offset", std::to_string(st.dropout_offset)},
                    {"history", history.dump()}});
}

RunState load_run_state(const RunPersistence& where, SequenceClassifier& model, std::vector<Tensor>& best, Adam& adam) {
  const std::string& path = where.state_path;
  const SafetensorsFile file = read_safetensors(path);
  const auto meta = [&](const char* key) -> const std::string& {
    const auto it = file.metadata.find(key);
    LOOM_CHECK(it != file.metadata.end(), path, ": not a run state of this program (no \"", key, "\" in its metadata)");
    return it->second;
  };
  LOOM_CHECK(meta("format") == "loom-algorithmic-run", path, ": not a run state of this program (format \"",
             meta("format"), "\")");
  LOOM_CHECK(meta("identity") == where.identity, path, ": the run was started with other settings:\n  saved:  ",
             meta("identity"), "\n  config: ", where.identity, "\nstart it over with --overwrite, or restore the config");
  const auto integer = [&](const char* key) {
    const std::string& v = meta(key);
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    LOOM_CHECK(!v.empty() && *end == '\0' && errno == 0 && x >= 0, path, ": metadata \"", key, "\" = \"", v,
               "\" is not a non-negative integer");
    return static_cast<int64_t>(x);
  };
  const auto real = [&](const char* key) {
    const std::string& v = meta(key);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    LOOM_CHECK(!v.empty() && *end == '\0', path, ": metadata \"", key, "\" = \"", v, "\" is not a number");
    return x;
  };
  RunState st;
  st.step = integer("step");
  st.seconds = real("seconds");
  st.best_valid_accuracy = real("best_valid_accuracy");
  st.best_valid_output_accuracy = real("best_valid_output_accuracy");
  st.best_step = integer("best_step");
  st.evaluations_since_best = integer("evaluations_since_best");
  st.dropout_offset = static_cast<uint64_t>(integer("dropout_offset"));
  const Json history = parse_json_strictly(meta("history"), path + ": history: ");
  LOOM_CHECK(history.is_array(), path, ": history is not a list");
  for (const Json& p : history) st.history.push_back(point_from_json(p, path));

  // Every tensor is checked before anything changes.
  std::map<std::string, Tensor> by_name(file.tensors.begin(), file.tensors.end());
  const NamedTensors params = model.named_parameters();
  std::vector<Tensor> current, saved_best;
  for (const auto& [name, p] : params) {
    for (const char* prefix : {kModelPrefix, kBestPrefix}) {
      const auto it = by_name.find(prefix + name);
      if (it == by_name.end()) {
        LOOM_CHECK(prefix == kBestPrefix && st.best_step == 0, path, ": tensor ", prefix, name, " is missing");
        continue;
      }
      LOOM_CHECK(it->second.shape() == p.shape() && it->second.dtype() == p.dtype(), path, ": tensor ", prefix, name,
                 " is ", it->second.describe(), ", the model's is ", p.describe());
      (prefix == kModelPrefix ? current : saved_best).push_back(it->second);
      by_name.erase(it);
    }
  }
  NamedTensors adam_state;
  for (const auto& [name, t] : by_name) {
    LOOM_CHECK(name.rfind(kAdamPrefix, 0) == 0, path, ": unexpected tensor ", name);
    adam_state.emplace_back(name.substr(std::string(kAdamPrefix).size()), t);
  }
  adam.load_state_tensors(adam_state);
  NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) copy_(params[i].second, current[i]);
  best.clear();
  for (const Tensor& t : saved_best) best.push_back(clone(t.to(params.front().second.device())));
  return st;
}

}  // namespace

std::string history_jsonl(const std::vector<EvalPoint>& history) {
  std::string text;
  for (const EvalPoint& p : history) text += point_json(p).dump() + "\n";
  return text;
}

AlgorithmicRun train_algorithmic(SequenceClassifier& model, const datasets::SequenceTask& task,
                                 const AlgorithmicTraining& tr, uint64_t shuffle_seed,
                                 const std::function<void(const std::string&)>& log, const RunPersistence& persist) {
  const auto start = std::chrono::steady_clock::now();
  const auto say = [&](const char* format, auto... values) {
    char line[512];
    std::snprintf(line, sizeof line, format, values...);
    if (log) log(line);
  };
  AdamOptions options;
  options.form = AdamForm::pytorch;  // torch.optim.Adam, as the authors
  options.beta1 = tr.adam_beta1;
  options.beta2 = tr.adam_beta2;
  options.eps = tr.adam_eps;
  Adam adam(model.named_parameters(), options, LrSchedule::constant(tr.lr));
  const std::vector<Tensor> params = model.parameters();
  const Device device = params.front().device();
  const bool every_token = task.labels_every_token();

  const int64_t train_size = task.split_size(datasets::Split::train);
  const int64_t per_epoch = steps_per_epoch(train_size, tr.batch_size);
  const int64_t planned = total_steps(tr, train_size);
  RunState st;
  std::vector<Tensor> best_params;
  if (persist.resume) {
    st = load_run_state(persist, model, best_params, adam);
    model.dropout_generator().set_state(model.dropout_generator().seed(), st.dropout_offset);
    say("resumed at step %lld of %lld (best valid %.2f%% at step %lld)", (long long)st.step, (long long)planned,
        100.0 * std::max(0.0, st.best_valid_accuracy), (long long)st.best_step);
  }
  const double seconds_before = st.seconds;
  const auto seconds = [&] {
    return seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const auto save = [&] {
    if (persist.state_path.empty()) return;
    st.seconds = seconds();
    st.dropout_offset = model.dropout_generator().offset();
    save_run_state(persist, model, best_params, adam, st);
  };

  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  double loss_sum = 0.0, eval_loss_sum = 0.0;
  int64_t loss_steps = 0, eval_loss_steps = 0;
  datasets::Scorer train_scorer(task.blank_class()), eval_scorer(task.blank_class());
  int64_t tokens = 0;
  double tokens_since = seconds();
  bool stop = st.best_step > 0 && tr.patience > 0 && st.evaluations_since_best >= tr.patience;
  while (st.step < planned && !stop) {
    // Batch `step` is a pure function of the step: epoch step / per_epoch, its
    // (step % per_epoch)-th slice of that epoch's order. So a resumed run draws
    // the very batches it would have.
    const int64_t epoch = st.step / per_epoch, first = (st.step % per_epoch) * tr.batch_size;
    if (epoch != order_epoch) {
      order = datasets::epoch_order(train_size, shuffle_seed, static_cast<uint64_t>(epoch));
      order_epoch = epoch;
    }
    std::vector<datasets::LabelledSequence> examples;
    for (int64_t i = first; i < std::min(first + tr.batch_size, train_size); ++i)
      examples.push_back(task.example(datasets::Split::train, order[i]));
    ++st.step;
    model.train();
    const datasets::ClassificationBatch batch = datasets::make_batch(examples);
    const BatchResult r = classify_batch(model, to_tensors(batch, device), every_token);
    r.loss.backward();
    if (tr.clip > 0.0) clip_grad_norm(params, tr.clip);
    adam.step();
    adam.zero_grad();
    const double loss_value = r.loss.item();
    LOOM_CHECK(std::isfinite(loss_value), "algorithmic: the training loss is ", loss_value, " at step ", st.step);
    score_batch(train_scorer, batch, r.predicted);
    score_batch(eval_scorer, batch, r.predicted);
    loss_sum += loss_value, eval_loss_sum += loss_value;
    ++loss_steps, ++eval_loss_steps;
    for (int64_t n : batch.lengths) tokens += n;
    const double epochs_done = static_cast<double>(st.step) / static_cast<double>(per_epoch);

    if (st.step % tr.log_interval == 0 || st.step == planned) {
      say("step %6lld  epoch %.2f  train loss %.4f  train acc %5.1f%%  %.1f s", (long long)st.step, epochs_done,
          loss_sum / loss_steps, 100.0 * train_scorer.accuracy(), seconds());
      loss_sum = 0.0;
      loss_steps = 0;
      train_scorer = datasets::Scorer(task.blank_class());
    }
    if (st.step % tr.eval_interval == 0 || st.step == planned) {
      const double now = seconds();
      EvalPoint p;
      p.step = st.step;
      p.epoch = epochs_done;
      p.train_loss = eval_loss_sum / eval_loss_steps;
      p.train_accuracy = eval_scorer.accuracy();
      p.tokens_per_second = static_cast<double>(tokens) / (now - tokens_since);
      const Evaluation v = evaluate(model, task, datasets::Split::valid, tr.eval_batch_size);
      p.valid_loss = v.loss;
      p.valid_accuracy = v.accuracy;
      p.valid_output_accuracy = v.output_accuracy;
      p.seconds = seconds();
      st.history.push_back(p);
      // The best parameters: the highest accuracy, ties going to the higher
      // per-output accuracy (a program accuracy can stay 0 for many epochs).
      const bool better = v.accuracy > st.best_valid_accuracy ||
                          (v.accuracy == st.best_valid_accuracy && std::isfinite(v.output_accuracy) &&
                           !(v.output_accuracy <= st.best_valid_output_accuracy));
      // Patience counts evaluations that neither found better parameters nor a
      // lower validation loss.
      const bool lower_loss = history_min_loss(st.history, 1) > v.loss;
      if (better) {
        NoGradGuard no_grad;
        st.best_valid_accuracy = v.accuracy;
        st.best_valid_output_accuracy = v.output_accuracy;
        st.best_step = st.step;
        best_params.clear();
        for (const Tensor& t : params) best_params.push_back(clone(t));
      }
      st.evaluations_since_best = better || lower_loss ? 0 : st.evaluations_since_best + 1;
      if (every_token) {
        say("step %6lld  valid loss %.4f  valid acc %5.1f%%  per output %5.1f%%%s  (best %5.1f%% at step %lld)",
            (long long)st.step, v.loss, 100.0 * v.accuracy, 100.0 * v.output_accuracy, better ? " *" : "  ",
            100.0 * st.best_valid_accuracy, (long long)st.best_step);
      } else {
        say("step %6lld  valid loss %.4f  valid acc %5.1f%%%s  (best %5.1f%% at step %lld)", (long long)st.step, v.loss,
            100.0 * v.accuracy, better ? " *" : "  ", 100.0 * st.best_valid_accuracy, (long long)st.best_step);
      }
      stop = tr.patience > 0 && st.evaluations_since_best >= tr.patience;
      if (stop)
        say("no better validation accuracy or loss in %lld evaluations: stopping at step %lld", (long long)tr.patience,
            (long long)st.step);
      save();
      if (persist.on_eval) persist.on_eval(st.history);
      eval_loss_sum = 0.0;
      eval_loss_steps = 0;
      eval_scorer = datasets::Scorer(task.blank_class());
      tokens = 0;
      tokens_since = seconds();
    } else if (persist.save_interval > 0 && st.step % persist.save_interval == 0) {
      save();
    }
  }
  AlgorithmicRun run;
  run.best_valid_accuracy = st.best_valid_accuracy;
  run.best_valid_output_accuracy = st.best_valid_output_accuracy;
  run.best_step = st.best_step;
  run.steps = st.step;
  run.stopped_early = st.step < planned;
  run.history = st.history;
  if (!best_params.empty()) {
    NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) copy_(params[i], best_params[i]);
  }
  run.test = evaluate(model, task, datasets::Split::test, tr.eval_batch_size);
  run.seconds = seconds();
  return run;
}

}  // namespace loom::models
