// retrieval: sweeps the number of keys S of the associative-retrieval task for
// several feature maps and update rules (models/programs/retrieval.h), as in the
// memory-capacity experiments of "Linear Transformers Are Secretly Fast Weight
// Programmers", and writes the best and the final evaluation loss of each run to
// a CSV and one SVG chart per setting (best loss vs S, one line per model, the
// config's seed; the authors' values dashed when the config lists them).
//
//   retrieval --check <config.json>...     (only validates the configs)
//   retrieval <config.json> [--out DIR] [--models a,b] [--keys 20,40] [--seeds 1,2,3]
//             [--threads N] [--max-steps N] [--fresh] [--redo-best-only]
//
// Runs already in DIR/results.csv are kept and skipped, so an interrupted sweep
// continues where it stopped (--fresh starts over). --models (e.g. dpfp2/sum) and
// --keys restrict the sweep; --seeds runs each point once per seed (default: the
// config's seed; rows are keyed by seed); --max-steps overrides the config's step
// cap. Rows written before the CSV had a final loss are kept as "best only" (an
// empty final_eval_loss); --redo-best-only reruns them. The config's "expect"
// entries are checked at the end, on the config's seed: the exit status is 1 when
// one fails, which makes a small sweep a test.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>
#if defined(__SSE__)
#include <xmmintrin.h>  // _mm_setcsr: flush subnormals to zero
#endif

#include "datasets/associative_retrieval.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/file_io.h"
#include "examples/command_line.h"
#include "models/programs/charts.h"
#include "models/programs/retrieval.h"

using namespace loom;
using Json = nlohmann::json;

namespace {

// ---- the config ---------------------------------------------------------------------

struct Sweep {
  int setting = 1;
  std::vector<int64_t> keys;
  std::vector<std::string> models;  // "dpfp2/sum"
};

struct Expectation {
  int setting = 1;
  std::string model;
  int64_t keys = 0;
  double above = NAN, at_most = NAN;  // one of the two
};

struct Config {
  std::string out_dir;
  uint64_t seed = 1;
  int64_t hidden = 64;
  bool eval_length_is_num_keys = false;  // the authors' evaluation sequences: S pairs
  models::RetrievalProtocol protocol;
  std::vector<Sweep> sweeps;
  // reference["1 linear/sum"][S] = the authors' best eval loss
  std::map<std::string, std::map<int64_t, double>> reference;
  std::vector<Expectation> expect;
};

// Strict reading: every key is known, every value has its type; errors give the key path.
void check_keys(const Json& j, const std::string& where, std::initializer_list<const char*> allowed) {
  LOOM_CHECK(j.is_object(), where, ": expected an object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || it.key() == a;
    LOOM_CHECK(ok, where, ".", it.key(), ": unknown key");
  }
}

template <class T>
T get(const Json& j, const std::string& key, const std::string& where, T fallback) {
  if (!j.contains(key)) return fallback;
  try {
    return j.at(key).get<T>();
  } catch (const std::exception&) {
    throw Error(where + "." + key + ": wrong type (" + j.at(key).dump() + ")");
  }
}

std::string model_key(int setting, const std::string& model) { return std::to_string(setting) + " " + model; }

void split_model(const std::string& model, const std::string& where, std::string& phi, std::string& rule) {
  const size_t slash = model.find('/');
  LOOM_CHECK(slash != std::string::npos, where, ": model '", model, "' must be <feature map>/<rule>, e.g. dpfp2/sum");
  phi = model.substr(0, slash);
  rule = model.substr(slash + 1);
  models::RetrievalModelConfig probe;
  try {
    models::parse_retrieval_model(phi, rule, probe);
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
}

Config load_config(const std::string& path) {
  std::ifstream in(path);
  LOOM_CHECK(in, "retrieval: cannot open config ", path);
  Json j;
  try {
    j = Json::parse(in);
  } catch (const std::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
  check_keys(j, path, {"comment", "out_dir", "seed", "hidden", "protocol", "sweeps", "reference", "expect"});
  Config c;
  c.out_dir = get<std::string>(j, "out_dir", path, "");
  LOOM_CHECK(!c.out_dir.empty(), path, ".out_dir: missing");
  c.seed = get<uint64_t>(j, "seed", path, 1);
  c.hidden = get<int64_t>(j, "hidden", path, 64);
  LOOM_CHECK(c.hidden >= 1, path, ".hidden: must be positive");
  if (j.contains("protocol")) {
    const Json& p = j.at("protocol");
    const std::string w = path + ".protocol";
    check_keys(p, w, {"batch_size", "lr", "eval_interval", "eval_sequences", "eval_max_queries", "eval_length",
                      "stop_loss", "patience", "max_steps"});
    auto& q = c.protocol;
    q.batch_size = get<int64_t>(p, "batch_size", w, q.batch_size);
    q.lr = get<double>(p, "lr", w, q.lr);
    q.eval_interval = get<int64_t>(p, "eval_interval", w, q.eval_interval);
    q.eval_sequences = get<int64_t>(p, "eval_sequences", w, q.eval_sequences);
    q.eval_max_queries = get<int64_t>(p, "eval_max_queries", w, q.eval_max_queries);
    q.stop_loss = get<double>(p, "stop_loss", w, q.stop_loss);
    q.patience = get<int64_t>(p, "patience", w, q.patience);
    q.max_steps = get<int64_t>(p, "max_steps", w, q.max_steps);
    const std::string length = get<std::string>(p, "eval_length", w, "training");
    LOOM_CHECK(length == "training" || length == "num_keys", w,
               ".eval_length: must be \"training\" (the training sequences' length) or \"num_keys\" (S pairs), got \"",
               length, "\"");
    c.eval_length_is_num_keys = length == "num_keys";
    LOOM_CHECK(q.batch_size >= 1 && q.eval_interval >= 1 && q.eval_sequences >= 1 && q.eval_max_queries >= 1 &&
                   q.max_steps >= 1 && q.patience >= 0 && q.lr > 0,
               w, ": batch_size, eval_interval, eval_sequences, eval_max_queries, max_steps and lr must be positive, "
               "patience >= 0");
  }
  LOOM_CHECK(j.contains("sweeps") && j.at("sweeps").is_array() && !j.at("sweeps").empty(), path,
             ".sweeps: expected a non-empty list");
  for (size_t i = 0; i < j.at("sweeps").size(); ++i) {
    const Json& s = j.at("sweeps")[i];
    const std::string w = path + ".sweeps[" + std::to_string(i) + "]";
    check_keys(s, w, {"setting", "keys", "models"});
    Sweep sweep;
    sweep.setting = get<int>(s, "setting", w, 0);
    LOOM_CHECK(sweep.setting == 1 || sweep.setting == 2, w, ".setting: must be 1 or 2, got ", sweep.setting);
    sweep.keys = get<std::vector<int64_t>>(s, "keys", w, {});
    sweep.models = get<std::vector<std::string>>(s, "models", w, {});
    LOOM_CHECK(!sweep.keys.empty() && !sweep.models.empty(), w, ": keys and models must be non-empty lists");
    for (int64_t S : sweep.keys) LOOM_CHECK(S >= 1, w, ".keys: ", S, " is not a positive number of keys");
    for (const std::string& m : sweep.models) {
      std::string phi, rule;
      split_model(m, w + ".models", phi, rule);
    }
    c.sweeps.push_back(sweep);
  }
  if (j.contains("reference")) {
    // [S, best, final] per run (null for NaN); the chart draws the bests (a run
    // without one, NaN throughout, is left out), the finals are for the README's tables.
    const Json& r = j.at("reference");
    LOOM_CHECK(r.is_object(), path, ".reference: expected {\"<setting> <model>\": [[S, best, final], ...]}");
    for (auto it = r.begin(); it != r.end(); ++it) {
      const std::string w = path + ".reference." + it.key();
      LOOM_CHECK(it.value().is_array(), w, ": expected a list of [S, best, final]");
      for (const Json& run : it.value()) {
        const bool numbers = run.is_array() && run.size() == 3 && run[0].is_number_integer() &&
                             (run[1].is_number() || run[1].is_null()) && (run[2].is_number() || run[2].is_null());
        LOOM_CHECK(numbers, w, ": ", run.dump(), " is not [S, best, final] (a loss may be null for NaN)");
        if (!run[1].is_null()) c.reference[it.key()][run[0].get<int64_t>()] = run[1].get<double>();
      }
    }
  }
  if (j.contains("expect")) {
    LOOM_CHECK(j.at("expect").is_array(), path, ".expect: expected a list");
    for (size_t i = 0; i < j.at("expect").size(); ++i) {
      const Json& e = j.at("expect")[i];
      const std::string w = path + ".expect[" + std::to_string(i) + "]";
      check_keys(e, w, {"setting", "model", "keys", "above", "at_most"});
      Expectation x;
      x.setting = get<int>(e, "setting", w, 0);
      x.model = get<std::string>(e, "model", w, "");
      x.keys = get<int64_t>(e, "keys", w, 0);
      x.above = get<double>(e, "above", w, NAN);
      x.at_most = get<double>(e, "at_most", w, NAN);
      LOOM_CHECK(std::isnan(x.above) != std::isnan(x.at_most), w, ": give exactly one of above and at_most");
      bool swept = false;
      for (const Sweep& s : c.sweeps)
        swept = swept || (s.setting == x.setting && std::count(s.keys.begin(), s.keys.end(), x.keys) &&
                          std::count(s.models.begin(), s.models.end(), x.model));
      LOOM_CHECK(swept, w, ": setting ", x.setting, ", ", x.model, ", S = ", x.keys, " is not in the sweeps");
      c.expect.push_back(x);
    }
  }
  return c;
}

// ---- results ---------------------------------------------------------------------------

struct Result {
  int setting = 1;
  std::string model;
  int64_t keys = 0;
  uint64_t seed = 1;
  double best_eval_loss = 0;
  int64_t best_step = 0;
  std::optional<double> final_eval_loss;  // none: a row from before the CSV kept it ("best only")
  int64_t steps = 0;
  std::string stop_reason;
  double seconds = 0;
};

const char* const kCsvHeader =
    "setting,model,keys,seed,best_eval_loss,best_step,final_eval_loss,steps,stop_reason,seconds";
// The CSV before it had seed and final loss: its rows are read with the config's seed, as best only.
const char* const kBestOnlyCsvHeader = "setting,model,keys,best_eval_loss,best_step,steps,stop_reason,seconds";

std::vector<Result> read_results(const std::string& path, uint64_t config_seed) {
  std::vector<Result> out;
  std::ifstream in(path);
  if (!in) return out;
  std::string line;
  std::getline(in, line);
  const bool best_only = line == kBestOnlyCsvHeader;
  LOOM_CHECK(best_only || line == kCsvHeader, path, ": not a results file of this program (header '", line, "')");
  const size_t fields = best_only ? 8 : 10;
  int64_t row = 1;
  while (std::getline(in, line)) {
    ++row;
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) f.push_back(cell);
    LOOM_CHECK(f.size() == fields, path, ":", row, ": expected ", fields, " fields, got ", f.size());
    if (best_only) {  // the columns of the new header, seed and final loss added
      f.insert(f.begin() + 3, std::to_string(config_seed));
      f.insert(f.begin() + 6, "");
    }
    try {
      Result r{std::stoi(f[0]), f[1], std::stoll(f[2]), std::stoull(f[3]), std::stod(f[4]), std::stoll(f[5]),
               std::nullopt, std::stoll(f[7]), f[8], std::stod(f[9])};
      if (!f[6].empty()) r.final_eval_loss = std::stod(f[6]);
      out.push_back(r);
    } catch (const std::exception&) {
      throw Error(path + ":" + std::to_string(row) + ": unreadable row '" + line + "'");
    }
  }
  return out;
}

void write_results(const std::string& path, const std::vector<Result>& results) {
  std::ostringstream s;
  s << kCsvHeader << "\n";
  char buf[256];
  for (const Result& r : results) {
    char final_loss[32] = "";
    if (r.final_eval_loss) std::snprintf(final_loss, sizeof final_loss, "%.6g", *r.final_eval_loss);
    std::snprintf(buf, sizeof buf, "%d,%s,%lld,%llu,%.6g,%lld,%s,%lld,%s,%.2f\n", r.setting, r.model.c_str(),
                  (long long)r.keys, (unsigned long long)r.seed, r.best_eval_loss, (long long)r.best_step,
                  final_loss, (long long)r.steps, r.stop_reason.c_str(), r.seconds);
    s << buf;
  }
  io::write_file_atomically(path, s.str());
}

// ---- the chart ---------------------------------------------------------------------------

// A line chart: x = S, y = best eval loss (0 … 0.5, clipped; NaN at the top), one
// colour per model; loom solid with dots, the authors dashed.
std::string svg_chart(int setting, const std::vector<std::string>& models, const std::vector<Result>& results,
                      const std::map<std::string, std::map<int64_t, double>>& reference) {
  models::ChartPanel panel;
  panel.x_label = "number of keys S";
  panel.y_label = "best eval loss (0.5 = no retrieval)";
  panel.y_min = 0;
  panel.y_max = 0.5;
  panel.min_x_step = 1;
  bool any_reference = false;
  for (size_t m = 0; m < models.size(); ++m) {
    models::ChartSeries ours{models[m], {}, models::chart_colour(m), true};
    for (const Result& r : results)
      if (r.setting == setting && r.model == models[m]) ours.points.emplace_back(r.keys, r.best_eval_loss);
    std::sort(ours.points.begin(), ours.points.end());
    panel.series.push_back(ours);
    if (const auto ref = reference.find(model_key(setting, models[m])); ref != reference.end()) {
      models::ChartSeries authors{models[m] + " (authors)", {}, ours.colour, false, true, false};
      for (const auto& [S, loss] : ref->second) authors.points.emplace_back(S, loss);
      panel.series.push_back(authors);
      any_reference = true;
    }
  }
  panel.notes.push_back("solid, dots: loom");
  if (any_reference) panel.notes.push_back("dashed: the authors' logs");
  models::Chart chart;
  chart.title = detail::concat("Associative retrieval, setting ", setting, " (",
                               setting == 1 ? "capacity, L = S" : "editing, L = 2S",
                               "): best eval loss vs number of keys S");
  chart.panels.push_back(panel);
  return models::chart_svg(chart);
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// FAVOR+ features exp(±u − ‖x‖²/2) underflow into subnormal floats, on which x86
// arithmetic is tens of times slower (a FAVOR+ step at S = 100 took 4x longer).
// Flushing them to zero (FTZ, and DAZ for inputs) on every OpenMP thread changes
// only values below 1.2e-38.
void flush_subnormals_to_zero() {
#if defined(__SSE__)
#pragma omp parallel
  _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string out_override;
    std::set<std::string> only_models;
    std::set<int64_t> only_keys;
    std::vector<uint64_t> seeds;
    bool fresh = false, check = false, redo_best_only = false;
    int64_t max_steps = 0;
    examples::CommandLine cli(
        "retrieval",
        "sweeps the number of keys S of the associative-retrieval task for several feature maps and update rules "
        "(models/programs/retrieval.h), as in the memory-capacity experiments of \"Linear Transformers Are Secretly Fast "
        "Weight Programmers\". Writes the best and the final evaluation loss of each run to DIR/results.csv and one chart per "
        "setting to DIR/setting<n>.svg (loss vs S, one line per model; the authors' values dashed when the config "
        "lists them), both rewritten atomically after every run. Runs already in results.csv are skipped, so an "
        "interrupted sweep continues where it stopped. The config's \"expect\" entries are checked at the end: the "
        "exit status is 1 when one fails, which makes a small sweep a test.",
        "./build/examples/retrieval examples/configs/retrieval_quick.json --out /tmp/retrieval_quick");
    cli.argument("<config.json>", "the sweep (examples/configs/retrieval_*.json); with --check, any number of them.",
                 false, true);
    cli.flag("--check", "only validate the configs, print how many are valid, and exit.",
             [&](const auto&) { check = true; });
    cli.option("--out", "DIR", "the config's out_dir", "where results.csv and setting<n>.svg go.",
               [&](const auto& v) { out_override = v.text; });
    cli.option("--models", "LIST", "every model of the config", "comma-separated models to run, e.g. dpfp2/sum,linear/delta.",
               [&](const auto& v) { for (const auto& m : split_list(v.text)) only_models.insert(m); });
    cli.option("--keys", "LIST", "every S of the config", "comma-separated numbers of keys S to run, e.g. 20,40.",
               [&](const auto& v) {
                 for (const auto& k : split_list(v.text))
                   only_keys.insert(examples::positive_integer("retrieval", "--keys", k));
               });
    cli.option("--seeds", "LIST", "the config's seed", "comma-separated seeds; each point runs once per seed (rows keyed "
               "by seed; the charts and the config's expectations use the config's seed).",
               [&](const auto& v) {
                 for (const auto& k : split_list(v.text)) {
                   const uint64_t seed = static_cast<uint64_t>(examples::positive_integer("retrieval", "--seeds", k));
                   if (std::find(seeds.begin(), seeds.end(), seed) == seeds.end()) seeds.push_back(seed);
                 }
               });
    cli.option("--threads", "N", "every core (OMP_NUM_THREADS)", "CPU threads.",
               [&](const auto& v) { set_num_threads(static_cast<int>(v.positive_integer())); });
    cli.option("--max-steps", "N", "the config's protocol.max_steps", "the step cap of each run.",
               [&](const auto& v) { max_steps = v.positive_integer(); });
    cli.flag("--fresh", "start the sweep over, ignoring the runs already in results.csv.",
             [&](const auto&) { fresh = true; });
    cli.flag("--redo-best-only", "rerun the rows written before results.csv had a final_eval_loss column, to get "
             "their final loss.", [&](const auto&) { redo_best_only = true; });
    const examples::CommandLine::Parsed parsed = cli.parse(argc, argv);
    if (parsed.exit) return 0;
    if (check) {  // validate configs only
      for (const std::string& path : parsed.arguments) load_config(path);
      std::printf("%zu config(s) valid\n", parsed.arguments.size());
      return 0;
    }
    LOOM_CHECK(parsed.arguments.size() == 1, "retrieval: one config to sweep, got ", parsed.arguments.size(), "\n",
               cli.usage());
    const std::string& config_path = parsed.arguments[0];
    flush_subnormals_to_zero();
    const Config config = load_config(config_path);
    const std::string out_dir = out_override.empty() ? config.out_dir : out_override;
    std::filesystem::create_directories(out_dir);
    const io::DirectoryLock out_dir_lock(out_dir, "out_dir");  // one run writes out_dir at a time
    const std::string csv = out_dir + "/results.csv";
    // What a run killed while replacing the CSV or a chart left (out_dir is locked:
    // no other process writes them).
    io::remove_atomic_leftovers(csv);
    for (const Sweep& s : config.sweeps)
      io::remove_atomic_leftovers(out_dir + "/setting" + std::to_string(s.setting) + ".svg");
    std::vector<Result> results = fresh ? std::vector<Result>{} : read_results(csv, config.seed);
    if (seeds.empty()) seeds.push_back(config.seed);
    const auto same_run = [](const Result& r, int setting, const std::string& model, int64_t keys, uint64_t seed) {
      return r.setting == setting && r.model == model && r.keys == keys && r.seed == seed;
    };

    for (const std::string& m : only_models)
      LOOM_CHECK(std::any_of(config.sweeps.begin(), config.sweeps.end(),
                             [&](const Sweep& s) { return std::count(s.models.begin(), s.models.end(), m) > 0; }),
                 "retrieval: --models: ", m, " is not a model of ", config_path);
    for (int64_t S : only_keys)
      LOOM_CHECK(std::any_of(config.sweeps.begin(), config.sweeps.end(),
                             [&](const Sweep& s) { return std::count(s.keys.begin(), s.keys.end(), S) > 0; }),
                 "retrieval: --keys: S = ", S, " is not swept by ", config_path);
    struct Planned {
      int setting;
      int64_t keys;
      std::string model;
      uint64_t seed;
    };
    std::vector<Planned> plan;
    int64_t skipped = 0, best_only = 0;
    for (uint64_t seed : seeds)
      for (const Sweep& sweep : config.sweeps)
        for (int64_t S : sweep.keys)
          for (const std::string& m : sweep.models) {
            if ((!only_models.empty() && !only_models.count(m)) || (!only_keys.empty() && !only_keys.count(S)))
              continue;
            const auto done = std::find_if(results.begin(), results.end(),
                                           [&](const Result& r) { return same_run(r, sweep.setting, m, S, seed); });
            const bool lacks_final = done != results.end() && !done->final_eval_loss;
            best_only += lacks_final;
            if (done != results.end() && !(lacks_final && redo_best_only)) ++skipped;
            else plan.push_back({sweep.setting, S, m, seed});
          }
    std::fprintf(stderr, "%zu runs to do (%lld already in %s%s), %d threads\n", plan.size(), (long long)skipped,
                 csv.c_str(), skipped ? "; --fresh redoes them" : "", num_threads());
    if (best_only > 0 && !redo_best_only)
      std::fprintf(stderr, "%lld of them without a final loss (best only); --redo-best-only reruns those\n",
                   (long long)best_only);

    const auto write_outputs = [&]() {
      write_results(csv, results);
      std::vector<Result> config_seed_results;  // the charts draw one seed
      std::copy_if(results.begin(), results.end(), std::back_inserter(config_seed_results),
                   [&](const Result& r) { return r.seed == config.seed; });
      for (int setting = 1; setting <= 2; ++setting) {
        std::vector<std::string> models;
        for (const Sweep& s : config.sweeps)
          if (s.setting == setting)
            for (const std::string& m : s.models)
              if (std::find(models.begin(), models.end(), m) == models.end()) models.push_back(m);
        if (!models.empty())
          io::write_file_atomically(out_dir + "/setting" + std::to_string(setting) + ".svg",
                     svg_chart(setting, models, config_seed_results, config.reference));
      }
    };

    for (size_t i = 0; i < plan.size(); ++i) {
      const Planned& p = plan[i];
      models::RetrievalModelConfig mc;
      mc.num_keys = p.keys;
      mc.hidden = config.hidden;
      mc.seed = p.seed;
      std::string phi, rule;
      split_model(p.model, "model", phi, rule);
      models::parse_retrieval_model(phi, rule, mc);
      const datasets::AssociativeRetrieval data(p.keys, static_cast<datasets::RetrievalSetting>(p.setting), p.seed);
      models::RetrievalProtocol protocol = config.protocol;
      protocol.eval_length = config.eval_length_is_num_keys ? p.keys : 0;
      if (max_steps > 0) protocol.max_steps = max_steps;
      models::RetrievalModel model(mc);
      const models::RetrievalRun run = models::train_retrieval(model, data, protocol);
      std::erase_if(results, [&](const Result& r) { return same_run(r, p.setting, p.model, p.keys, p.seed); });
      results.push_back({p.setting, p.model, p.keys, p.seed, run.best_eval_loss, run.best_step, run.final_eval_loss,
                         run.steps, run.stop_reason, run.seconds});
      std::printf("[%3zu/%zu] setting %d %-13s S=%4lld seed %llu  best eval loss %.4f at step %lld, final %.4f; "
                  "%lld steps (%s), %.1f s, %.1f ms/step\n",
                  i + 1, plan.size(), p.setting, p.model.c_str(), (long long)p.keys, (unsigned long long)p.seed,
                  run.best_eval_loss, (long long)run.best_step, run.final_eval_loss, (long long)run.steps,
                  run.stop_reason.c_str(), run.seconds, 1000.0 * run.seconds / std::max<int64_t>(1, run.steps));
      std::fflush(stdout);
      write_outputs();
    }
    if (plan.empty()) write_outputs();
    std::printf("results: %s; charts: %s/setting<n>.svg\n", csv.c_str(), out_dir.c_str());

    int failed = 0;
    for (const Expectation& x : config.expect) {
      const auto it = std::find_if(results.begin(), results.end(),
                                   [&](const Result& r) { return same_run(r, x.setting, x.model, x.keys, config.seed); });
      if (it == results.end()) {
        std::printf("expect: setting %d %s S=%lld: not run\n", x.setting, x.model.c_str(), (long long)x.keys);
        ++failed;
        continue;
      }
      const bool ok = std::isnan(x.above) ? it->best_eval_loss <= x.at_most : it->best_eval_loss > x.above;
      std::printf("expect: setting %d %s S=%lld: best eval loss %.4f %s %g: %s\n", x.setting, x.model.c_str(),
                  (long long)x.keys, it->best_eval_loss, std::isnan(x.above) ? "<=" : ">",
                  std::isnan(x.above) ? x.at_most : x.above, ok ? "ok" : "FAILED");
      failed += !ok;
    }
    return failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
