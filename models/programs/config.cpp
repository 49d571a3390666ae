#include "models/programs/config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "engine/error.h"
#include "engine/json.h"
#include "models/families/fast_weights.h"

namespace loom::models {

using Json = nlohmann::ordered_json;

int64_t TrainConfig::total_steps(int64_t batches_per_epoch) const {
  if (training.steps > 0) return training.steps;
  const double steps = std::round(training.epochs * static_cast<double>(batches_per_epoch));
  // Beyond 2^53 steps the count is not even exact, and no run gets near it.
  LOOM_CHECK(steps <= 9007199254740992.0, "training.epochs: ", training.epochs, " epochs of ", batches_per_epoch,
             " batches are ", steps, " steps, more than 2^53; give fewer epochs or training.steps");
  return std::max<int64_t>(1, static_cast<int64_t>(steps));
}

// ---- family defaults ------------------------------------------------------------------

TrainConfig default_config(const std::string& family) {
  TrainConfig c;
  c.model.family = family;
  c.training.out_dir = "runs/" + family;
  if (family == "fast_weights" || family == "feedback") {
    // models/FAMILIES.md §2.1 / §3.1: Noam lr 1.0, warmup 2000, seq 128; batch 16 / 64.
    c.data.seq_len = 128;
    c.data.batch_size = family == "fast_weights" ? 16 : 64;
  } else if (family == "primer_ez" || family == "transformer") {
    // models/FAMILIES.md §4.1; the vanilla transformer is trained exactly like Primer EZ so
    // that the two differ only in their architecture.
    c.model.dropout = 0.1;
    c.data.seq_len = 256;
    c.data.batch_size = 32;
    c.optimizer.kind = "adam";
    c.optimizer.lr = 2.5e-4;
    c.sample.prompt = "It is ";
  } else if (family == "bigram") {
    // A one-layer smoke-test model: small and quick to learn.
    c.model.d_model = 64;
    c.model.heads = 1;
    c.model.d_ff = 64;
    c.model.layers = 1;
    c.data.seq_len = 64;
    c.data.batch_size = 16;
    c.optimizer.kind = "adam";
    c.optimizer.lr = 1e-2;
    c.training.epochs = 1;
  } else {
    LOOM_FAIL("unknown model family \"", family, "\"");
  }
  return c;
}

bool family_uses_key(const std::string& family, const std::string& key) {
  if (key == "family" || key == "vocab" || key == "d_model" || key == "seed") return true;
  if (family == "bigram") return false;  // an embedding and a linear layer
  if (key == "heads" || key == "d_ff" || key == "layers" || key == "dropout") return true;
  if (key == "conv_kernels" || key == "conv_width") return family == "primer_ez";
  if (key == "activation") return family == "transformer" || family == "primer_ez";
  if (key == "feature_map" || key == "dpfp_nu" || key == "update_rule" || key == "attention_layer_norm" ||
      key == "fast_layer" || key == "fast_net_depth")
    return family == "fast_weights";
  if (key == "shared_kv") return family == "feedback";
  if (key == "max_seq_len") return family == "transformer" || family == "primer_ez" || family == "feedback";
  return false;
}

// ---- strict reading -------------------------------------------------------------------

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", \"" : "\"") + items[i] + "\"";
  return out;
}

// One JSON object of the config. Each getter reads one key when present,
// validates it and records it as known; finish() flags the keys nobody read.
// Problems are collected rather than thrown, so one run reports all of them;
// a value with a problem is left at its default.
class Section {
 public:
  Section(const Json& json, std::string path, std::vector<std::string>& problems)
      : json_(json), path_(std::move(path)), problems_(problems) {
    if (!json_.is_object()) fail(path_, "expected an object, got " + json_excerpt(json_));
  }

  bool has(const char* key) {
    known_.insert(key);
    return json_.is_object() && json_.contains(key);
  }

  void integer(const char* key, int64_t& out, int64_t min) {
    if (!has(key)) return;
    const Json& v = json_[key];
    const char* what = min > 0 ? "a positive integer" : "a non-negative integer";
    // nlohmann stores non-negative integers as unsigned: compare in the matching type.
    bool ok = v.is_number_integer();
    if (ok && v.is_number_unsigned()) ok = v.get<uint64_t>() >= uint64_t(min) && v.get<uint64_t>() <= uint64_t(INT64_MAX);
    else if (ok) ok = v.get<int64_t>() >= min;
    if (check(ok, at(key), std::string("expected ") + what + ", got " + json_excerpt(v))) out = v.get<int64_t>();
  }

  void seed(const char* key, uint64_t& out) {
    if (!has(key)) return;
    const Json& v = json_[key];
    const bool ok = v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
    if (check(ok, at(key), "expected a non-negative integer, got " + json_excerpt(v))) out = v.get<uint64_t>();
  }

  // A number in the range the caller describes; `ok` tests it.
  template <class Ok>
  void number(const char* key, double& out, const char* what, Ok ok) {
    if (has(key)) checked_number(json_[key], at(key), what, ok, out);
  }

  void text(const char* key, std::string& out, bool allow_empty = true) {
    if (!has(key)) return;
    const Json& v = json_[key];
    const bool ok = v.is_string() && (allow_empty || !v.get<std::string>().empty());
    if (check(ok, at(key), std::string("expected a ") + (allow_empty ? "" : "non-empty ") + "string, got " + json_excerpt(v)))
      out = v.get<std::string>();
  }

  void choice(const char* key, std::string& out, const std::vector<std::string>& allowed) {
    if (!has(key)) return;
    const Json& v = json_[key];
    const bool ok = v.is_string() && std::find(allowed.begin(), allowed.end(), v.get<std::string>()) != allowed.end();
    if (check(ok, at(key), "expected one of " + quoted_list(allowed) + ", got " + json_excerpt(v))) out = v.get<std::string>();
  }

  void boolean(const char* key, bool& out) {
    if (!has(key)) return;
    const Json& v = json_[key];
    if (check(v.is_boolean(), at(key), "expected true or false, got " + json_excerpt(v))) out = v.get<bool>();
  }

  // "betas": [b1, b2], each in [0, 1).
  void betas(const char* key, double& b1, double& b2) {
    if (!has(key)) return;
    const Json& v = json_[key];
    if (!check(v.is_array() && v.size() == 2, at(key), "expected a list of two numbers, got " + json_excerpt(v))) return;
    auto in_unit = [](double x) { return x >= 0 && x < 1; };
    checked_number(v[0], at(key) + "[0]", "a number in [0, 1)", in_unit, b1);
    checked_number(v[1], at(key) + "[1]", "a number in [0, 1)", in_unit, b2);
  }

  Section child(const char* key) {
    return Section(has(key) ? json_[key] : empty_object(), at(key), problems_);
  }

  void finish() {
    if (!json_.is_object()) return;
    for (const auto& [key, value] : json_.items()) {
      if (known_.count(key)) continue;
      std::string best;
      size_t best_distance = 3;  // suggest only near misses
      for (const std::string& k : known_) {
        const size_t d = edit_distance(key, k);
        if (d < best_distance && d < std::max<size_t>(k.size(), 2)) best = k, best_distance = d;
      }
      fail(at(key), "unknown key" + (best.empty() ? std::string() : " (did you mean \"" + best + "\"?)"));
    }
  }

  std::string at(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  void fail(const std::string& path, const std::string& message) {
    problems_.push_back((path.empty() ? std::string() : path + ": ") + message);
  }
  bool check(bool ok, const std::string& path, const std::string& message) {
    if (!ok) fail(path, message);
    return ok;
  }

 private:
  static const Json& empty_object() {
    static const Json empty = Json::object();
    return empty;
  }
  template <class Ok>
  void checked_number(const Json& v, const std::string& path, const char* what, Ok ok, double& out) {
    if (check(v.is_number() && ok(v.get<double>()), path, std::string("expected ") + what + ", got " + json_excerpt(v)))
      out = v.get<double>();
  }

  const Json& json_;
  std::string path_;
  std::vector<std::string>& problems_;
  std::set<std::string> known_;
};

std::vector<std::string> families() { return {std::begin(kFamilies), std::end(kFamilies)}; }

// The model keys only some families read.
constexpr const char* kFamilyKeys[] = {"heads",        "d_ff",    "layers",      "dropout",
                                       "conv_kernels", "conv_width", "feature_map", "dpfp_nu",
                                       "update_rule",  "attention_layer_norm", "shared_kv", "max_seq_len",
                                       "activation",   "fast_layer", "fast_net_depth"};

std::string families_using(const std::string& key) {
  std::string out;
  for (const char* f : kFamilies)
    if (family_uses_key(f, key)) out += (out.empty() ? "" : ", ") + std::string(f);
  return out;
}

bool positive(double x) { return x > 0; }
bool non_negative(double x) { return x >= 0; }

}  // namespace

TrainConfig parse_train_config(const std::string& json_text, const std::string& source) {
  const Json root = parse_json_strictly(json_text, source + ": ");
  std::vector<std::string> problems;
  Section top(root, "", problems);

  // The family decides the defaults, so it is read first.
  std::string family = "transformer";
  Section model = top.child("model");
  model.choice("family", family, families());
  TrainConfig c = default_config(family);

  ModelConfig& m = c.model;
  if (model.has("vocab")) {
    model.integer("vocab", m.vocab, 1);
    c.vocab_from_data = false;
  }
  model.integer("d_model", m.d_model, 1);
  model.seed("seed", m.seed);
  // A key the family does not read would be silently ignored: it is refused instead.
  auto uses = [&](const char* key) { return family_uses_key(family, key); };
  if (uses("heads")) model.integer("heads", m.heads, 1);
  if (uses("d_ff")) model.integer("d_ff", m.d_ff, 1);
  if (uses("layers")) model.integer("layers", m.layers, 1);
  if (uses("dropout")) model.number("dropout", m.dropout, "a number in [0, 1)", [](double x) { return x >= 0 && x < 1; });
  if (uses("conv_kernels")) model.choice("conv_kernels", m.conv_kernels, {"per_channel", "shared", "per_head"});
  if (uses("conv_width")) model.integer("conv_width", m.conv_width, 1);
  if (uses("activation")) model.choice("activation", m.activation, {"relu", "squared_relu", "gelu", "silu"});
  if (uses("feature_map")) model.choice("feature_map", m.feature_map, {"dpfp", "elu_plus_one"});
  if (uses("dpfp_nu")) model.integer("dpfp_nu", m.dpfp_nu, 1);
  if (uses("update_rule")) model.choice("update_rule", m.update_rule, {"delta", "sum"});
  if (uses("attention_layer_norm")) model.boolean("attention_layer_norm", m.attention_layer_norm);
  if (uses("fast_layer"))
    model.choice("fast_layer", m.fast_layer, {std::begin(kFastLayers), std::end(kFastLayers)});
  if (uses("fast_net_depth")) model.integer("fast_net_depth", m.fast_net_depth, 1);
  if (uses("shared_kv")) model.boolean("shared_kv", m.shared_kv);
  if (uses("max_seq_len")) model.integer("max_seq_len", m.max_seq_len, 1);
  for (const char* key : kFamilyKeys)
    if (!uses(key) && model.has(key))
      model.fail(model.at(key), "not used by the " + family + " family (" + families_using(key) + " use it)");
  model.finish();
  if (const std::string problem = heads_problem(m.d_model, m.heads); !problem.empty()) model.fail("model.heads", problem);

  Section data = top.child("data");
  data.text("path", c.data.path, false);
  data.text("url", c.data.url);
  data.integer("seq_len", c.data.seq_len, 1);
  data.integer("batch_size", c.data.batch_size, 1);
  data.seed("seed", c.data.seed);
  data.boolean("carry_over", c.data.carry_over);
  data.finish();
  // Only the fast weights layers have a state that outlives a batch.
  if (c.data.carry_over && family != "fast_weights")
    data.fail("data.carry_over", "only the fast_weights family carries its states across batches, not " + family);
  // The transformers' positional tables and the feedback memory have a fixed length.
  if (family != "fast_weights" && family != "bigram" && c.data.seq_len > m.max_seq_len)
    data.fail("data.seq_len", std::to_string(c.data.seq_len) + " is longer than model.max_seq_len " +
                                  std::to_string(m.max_seq_len));

  Section opt = top.child("optimizer");
  OptimizerConfig& o = c.optimizer;
  opt.choice("kind", o.kind, {"adam", "noam"});
  opt.choice("form", o.form, {"labml", "pytorch"});
  opt.number("lr", o.lr, "a positive number", positive);
  opt.betas("betas", o.beta1, o.beta2);
  opt.number("eps", o.eps, "a positive number", positive);
  opt.integer("warmup", o.warmup, 1);
  opt.number("weight_decay", o.weight_decay, "a non-negative number", non_negative);
  opt.number("clip", o.clip, "a non-negative number (0: no clipping)", non_negative);
  opt.finish();

  Section train = top.child("training");
  TrainingConfig& t = c.training;
  const bool has_steps = train.has("steps"), has_epochs = train.has("epochs");
  if (has_steps && has_epochs) train.fail("training", "give \"steps\" or \"epochs\", not both");
  train.integer("steps", t.steps, 1);
  train.number("epochs", t.epochs, "a positive number", positive);
  if (has_steps) t.epochs = 0;
  train.integer("log_interval", t.log_interval, 1);
  train.integer("eval_interval", t.eval_interval, 0);
  train.integer("eval_batches", t.eval_batches, 1);
  train.integer("checkpoint_interval", t.checkpoint_interval, 0);
  train.integer("patience", t.patience, 0);
  train.text("out_dir", t.out_dir, false);
  train.text("log", t.log);
  train.integer("threads", t.threads, 0);
  train.choice("device", t.device, {"cpu", "cuda"});
  train.finish();

  Section sample = top.child("sample");
  sample.text("prompt", c.sample.prompt);
  sample.integer("length", c.sample.length, 0);
  sample.finish();
  if (c.sample.length > 0 && c.sample.prompt.empty())
    sample.fail("sample.prompt", "must not be empty when sample.length is above 0");

  top.finish();
  if (!problems.empty()) {
    std::string message;
    for (const std::string& p : problems) message += (message.empty() ? "" : "\n") + source + ": " + p;
    throw Error(message);
  }
  return c;
}

TrainConfig load_train_config(const std::string& path) {
  std::error_code ec;
  LOOM_CHECK(!std::filesystem::is_directory(path, ec), "config file ", path, " is a directory (give the .json file)");
  std::ifstream in(path);
  LOOM_CHECK(in, "cannot open config file ", path, ": ", std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  return parse_train_config(text.str(), path);
}

std::string to_json(const TrainConfig& c, int indent) {
  const ModelConfig& m = c.model;
  Json model = {{"family", m.family}};
  if (!c.vocab_from_data) model["vocab"] = m.vocab;
  const Json all = {{"d_model", m.d_model},
                    {"heads", m.heads},
                    {"d_ff", m.d_ff},
                    {"layers", m.layers},
                    {"dropout", m.dropout},
                    {"seed", m.seed},
                    {"conv_kernels", m.conv_kernels},
                    {"conv_width", m.conv_width},
                    {"feature_map", m.feature_map},
                    {"dpfp_nu", m.dpfp_nu},
                    {"update_rule", m.update_rule},
                    {"attention_layer_norm", m.attention_layer_norm},
                    {"shared_kv", m.shared_kv},
                    {"max_seq_len", m.max_seq_len},
                    {"fast_layer", m.fast_layer}};
  for (const auto& [key, value] : all.items())  // only the keys the family reads
    if (family_uses_key(m.family, key)) model[key] = value;
  if (!m.activation.empty() && family_uses_key(m.family, "activation")) model["activation"] = m.activation;
  if (m.fast_layer == "delta_mlp" && family_uses_key(m.family, "fast_net_depth")) model["fast_net_depth"] = m.fast_net_depth;
  const OptimizerConfig& o = c.optimizer;
  const TrainingConfig& t = c.training;
  Json training;
  if (t.steps > 0) training["steps"] = t.steps;
  else training["epochs"] = t.epochs;
  training.update(Json{{"log_interval", t.log_interval},
                       {"eval_interval", t.eval_interval},
                       {"eval_batches", t.eval_batches},
                       {"checkpoint_interval", t.checkpoint_interval},
                       {"patience", t.patience},
                       {"out_dir", t.out_dir},
                       {"log", t.log},
                       {"threads", t.threads},
                       {"device", t.device}});
  const Json root = {
      {"model", model},
      {"data", {{"path", c.data.path},
                {"url", c.data.url},
                {"seq_len", c.data.seq_len},
                {"batch_size", c.data.batch_size},
                {"seed", c.data.seed},
                {"carry_over", c.data.carry_over}}},
      {"optimizer", {{"kind", o.kind},
                     {"form", o.form},
                     {"lr", o.lr},
                     {"betas", {o.beta1, o.beta2}},
                     {"eps", o.eps},
                     {"warmup", o.warmup},
                     {"weight_decay", o.weight_decay},
                     {"clip", o.clip}}},
      {"training", training},
      {"sample", {{"prompt", c.sample.prompt}, {"length", c.sample.length}}},
  };
  return root.dump(indent);
}

std::string heads_problem(int64_t d_model, int64_t heads) {
  if (heads < 1) return "must be positive, got " + std::to_string(heads);
  if (d_model % heads != 0)
    return "d_model " + std::to_string(d_model) + " is not divisible by " + std::to_string(heads) + " heads";
  return "";
}

void check_heads(int64_t d_model, int64_t heads) {
  const std::string problem = heads_problem(d_model, heads);
  LOOM_CHECK(problem.empty(), "model.heads: ", problem);
}

}  // namespace loom::models
