// algorithmic: trains sequence classifiers (models/families/sequence_classifier.h) on one of
// the algorithmic tasks of "Going Beyond Linear Transformers with Recurrent Fast
// Weight Programmers" — the authors' code execution or sequential ListOps
// (task kinds code_execution_rfwp, listops_rfwp), or the small variants for quick
// runs (code_execution, listops) — from a config, for one or several layers and
// seeds. Each run prints progress lines, keeps the parameters of the best
// validation accuracy, reports their test accuracy beside the shallow readings of
// the same test split (datasets/task_readings.h) and appends one row to a CSV.
//
//   algorithmic --check <config.json>...      (only validates the configs)
//   algorithmic --baselines <config.json>      (the shallow readings' accuracies on valid and test)
//   algorithmic <config.json> [--layers A,B,...] [--seeds 1,2,...] [--steps N | --epochs N]
//               [--threads N] [--out DIR] [--csv FILE] [--chart-also DIR,...] [--overwrite]
//   algorithmic <config.json> --chart SVG [--out DIR] [--chart-also DIR,...]
//
// --layers replaces model.layer (lstm, delta_net, delta_rnn, rdn, ...), --seeds
// model.seed (initialisation and dropout; the data stay those of task.seed); each
// (layer, seed) is one run, in turn. A run lives in <out>/<layer>-seed<N>/
// (run_state.safetensors, metrics.jsonl, curves.svg) and <out>/valid_accuracy.svg
// draws every run's validation accuracy (and, for code execution, the accuracy
// per print in a second panel), with the runs of the --chart-also directories
// (a second process's sweep) beside them; --chart draws the same into a file of
// its own and trains nothing. <out> is the config's out_dir unless
// --out is given. A command is a sweep that can be stopped and started again at
// any moment: a run with a row in the CSV is done and skipped, a run with a state
// goes on from it, any other starts. --overwrite starts every named run over.
// The CSV (default <out>/results.csv) is rewritten through a temporary file, so a
// reader never sees half of it. With "expect": {"test_accuracy_above": x} in the
// config, the exit status is 1 when a run's test accuracy is not above x (which
// makes a quick config a test).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "datasets/task_readings.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/file_io.h"
#include "engine/json.h"
#include "examples/command_line.h"
#include "models/programs/algorithmic.h"
#include "models/programs/charts.h"

using namespace loom;

namespace {

const char* const kCsvHeader =
    "task,layer,d_model,layers,heads,parameters,seed,steps,epochs,batch_size,lr,best_valid_accuracy,"
    "best_valid_output_accuracy,best_step,test_accuracy,test_output_accuracy,test_loss,seconds,threads,"
    "strongest_baseline,strongest_baseline_accuracy";

// The CSV's rows (without the header); none when the file does not exist.
std::vector<std::string> read_rows(const std::string& path) {
  std::vector<std::string> rows;
  std::ifstream in(path);
  if (!in) return rows;
  std::string line;
  std::getline(in, line);
  LOOM_CHECK(line == kCsvHeader, path, ": not a results file of this program (header '", line, "')");
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(line);
  return rows;
}

// Appends `row` to the CSV at `path` (creating it with its header), rewriting the
// file atomically so that a reader never sees half of it.
void append_row(const std::string& path, const std::string& row) {
  std::string text = std::string(kCsvHeader) + "\n";
  for (const std::string& r : read_rows(path)) text += r + "\n";
  io::write_file_atomically(path, text + row + "\n");
}

std::vector<std::string> fields(const std::string& row) {
  std::vector<std::string> out;
  std::stringstream s(row);
  std::string f;
  while (std::getline(s, f, ',')) out.push_back(f);
  return out;
}

// The task's name without commas (the CSV has no quoting).
std::string csv_safe(std::string s) {
  std::replace(s.begin(), s.end(), ',', ' ');
  return s;
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

int64_t positive_integer(const std::string& flag, const std::string& text) {
  return examples::positive_integer("algorithmic", flag, text);
}

std::vector<std::string> comma_list(const std::string& flag, const std::string& text) {
  std::vector<std::string> items;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ',')) {
    LOOM_CHECK(!item.empty(), "algorithmic: ", flag, " expects a comma-separated list, got '", text, "'");
    items.push_back(item);
  }
  LOOM_CHECK(!items.empty(), "algorithmic: ", flag, " expects a comma-separated list, got '", text, "'");
  return items;
}


// A run of a sweep directory: its directory and its name (<layer>-seed<N>).
struct RunPlace {
  std::string dir, name;
};

// The runs under a sweep directory that have a history (a metrics.jsonl), by name.
std::vector<RunPlace> runs_in(const std::string& dir) {
  std::vector<RunPlace> runs;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error))
    if (entry.is_directory() && std::filesystem::exists(entry.path() / "metrics.jsonl"))
      runs.push_back({dir, entry.path().filename().string()});
  LOOM_CHECK(!error, "cannot list the sweep directory '", dir, "': ", error.message());
  std::sort(runs.begin(), runs.end(), [](const RunPlace& a, const RunPlace& b) { return a.name < b.name; });
  return runs;
}

// Every run's validation accuracy against the epoch, one series per run that has a
// history, written atomically to `path`. Tasks scored per output as well (code
// execution's prints) get a second panel with that accuracy: at the reduced
// budget every model's program accuracy stays at 0, and the prints tell them apart.
// Returns the number of runs drawn; with none, nothing is written.
size_t write_sweep_chart(const std::string& path, const std::vector<RunPlace>& runs, const std::string& title) {
  models::ChartPanel whole, per_output;
  whole.y_label = "validation accuracy";
  per_output.y_label = "validation accuracy per output";
  for (models::ChartPanel* panel : {&whole, &per_output}) {
    panel->x_label = "epoch";
    panel->y_min = 0.0;
    panel->y_max = 1.0;
  }
  for (const RunPlace& run : runs) {
    const std::string metrics = run.dir + "/" + run.name + "/metrics.jsonl";
    std::ifstream in(metrics);
    if (!in) continue;
    models::ChartSeries series, outputs;
    series.label = outputs.label = run.name;
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (line.empty()) continue;
      const auto j = parse_json_strictly(line, metrics + " line " + std::to_string(n) + ": ");
      if (!j.contains("epoch")) continue;
      const double epoch = j.at("epoch").get<double>();
      if (j.contains("valid_accuracy") && j.at("valid_accuracy").is_number())
        series.points.emplace_back(epoch, j.at("valid_accuracy").get<double>());
      if (j.contains("valid_output_accuracy") && j.at("valid_output_accuracy").is_number())
        outputs.points.emplace_back(epoch, j.at("valid_output_accuracy").get<double>());
    }
    if (!series.points.empty()) whole.series.push_back(std::move(series));
    if (!outputs.points.empty()) per_output.series.push_back(std::move(outputs));
  }
  if (whole.series.empty()) return 0;
  const size_t drawn = whole.series.size();
  models::Chart chart;
  chart.title = title;
  chart.panels.push_back(std::move(whole));
  if (!per_output.series.empty()) chart.panels.push_back(std::move(per_output));
  io::write_file_atomically(path, models::chart_svg(chart));
  return drawn;
}

// The shallow readings of a config's task on its valid and test splits, as a Markdown table.
void print_baselines(const std::string& config_path) {
  const models::AlgorithmicConfig config = models::load_algorithmic_config(config_path);
  const std::unique_ptr<datasets::SequenceTask> task = models::make_algorithmic_task(config);
  const bool every_token = task->labels_every_token();
  std::printf("%s\n| reading | valid | test |%s\n| --- | ---: | ---: |%s\n", task->name().c_str(),
              every_token ? " valid per output | test per output |" : "", every_token ? " ---: | ---: |" : "");
  const auto valid = datasets::score_readings(*task, datasets::Split::valid);
  const auto test = datasets::score_readings(*task, datasets::Split::test);
  for (size_t i = 0; i < test.size(); ++i) {
    std::printf("| %s | %s | %s |", test[i].name.c_str(), percent(valid[i].accuracy).c_str(),
                percent(test[i].accuracy).c_str());
    if (every_token)
      std::printf(" %s | %s |", percent(valid[i].output_accuracy).c_str(), percent(test[i].output_accuracy).c_str());
    std::printf("\n");
  }
}

struct Options {
  std::vector<std::string> layers;  // empty: the config's
  std::vector<int64_t> seeds;       // empty: the config's
  int64_t steps = 0, epochs = 0, threads = 0;
  std::string out, csv;
  std::vector<std::string> chart_also;  // other sweeps' directories whose runs the chart draws too
  bool overwrite = false;
};

// One (layer, seed) run: done already (skipped), resumed or started. Returns
// false when the config's expectation failed.
bool run_one(models::AlgorithmicConfig config, const Options& o, const std::string& out_dir, const std::string& csv) {
  models::check_sequence_classifier_config(config.model);
  const std::unique_ptr<datasets::SequenceTask> task = models::make_algorithmic_task(config);
  const std::string name = config.model.layer + "-seed" + std::to_string(config.model.seed);
  const std::string task_name = csv_safe(task->name());
  for (const std::string& row : read_rows(csv)) {
    const std::vector<std::string> f = fields(row);
    if (f.size() > 6 && f[0] == task_name && f[1] == config.model.layer && f[6] == std::to_string(config.model.seed) &&
        !o.overwrite) {
      std::printf("%s: done (a row in %s)\n", name.c_str(), csv.c_str());
      return true;
    }
  }
  const std::string run_dir = out_dir + "/" + name;
  std::filesystem::create_directories(run_dir);
  const std::string state_path = run_dir + "/run_state.safetensors";
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  // What a sweep killed while replacing one of these files left (out_dir is locked:
  // no other process writes them).
  for (const std::string& file : {state_path, metrics_path, run_dir + "/curves.svg"}) io::remove_atomic_leftovers(file);
  if (o.overwrite) std::filesystem::remove(state_path);
  const bool resume = std::filesystem::exists(state_path);

  models::SequenceClassifier model(config.model);
  int64_t parameter_count = 0;
  for (const Tensor& p : model.parameters()) parameter_count += p.numel();
  const models::AlgorithmicTraining& tr = config.training;
  const int64_t train_size = task->split_size(datasets::Split::train);
  const int64_t per_epoch = models::steps_per_epoch(train_size, tr.batch_size);
  const int64_t planned = models::total_steps(tr, train_size);
  std::printf("%s: %s, layer %s (d_model %lld, %lld layers): %lld parameters; %lld train / %lld valid / %lld test "
              "examples; %lld steps of %lld (%.1f epochs), %d threads\n",
              name.c_str(), task->name().c_str(), config.model.layer.c_str(), (long long)config.model.d_model,
              (long long)config.model.layers, (long long)parameter_count, (long long)train_size,
              (long long)task->split_size(datasets::Split::valid), (long long)task->split_size(datasets::Split::test),
              (long long)planned, (long long)tr.batch_size, static_cast<double>(planned) / per_epoch, num_threads());
  std::fflush(stdout);

  models::RunPersistence persist;
  persist.state_path = state_path;
  persist.identity = models::algorithmic_run_identity(config, *task);
  persist.resume = resume;
  persist.save_interval = std::max<int64_t>(1, tr.eval_interval / 4);
  persist.on_eval = [&](const std::vector<models::EvalPoint>& history) {
    io::write_file_atomically(metrics_path, models::history_jsonl(history));
    models::TrainingCurves curves;
    for (const models::EvalPoint& p : history) {
      const double x = static_cast<double>(p.step);
      curves.train_loss.emplace_back(x, p.train_loss);
      curves.valid_loss.emplace_back(x, p.valid_loss);
      curves.valid_accuracy.emplace_back(x, p.valid_accuracy);
      curves.tokens_per_s.emplace_back(x, p.tokens_per_second);
    }
    models::write_training_chart(run_dir + "/curves.svg", curves, name + ": " + task->name());
  };
  const models::AlgorithmicRun run = models::train_algorithmic(
      model, *task, tr, models::algorithmic_task_seed(config),
      [](const std::string& line) {
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
      },
      persist);
  const bool every_token = task->labels_every_token();
  std::printf("test accuracy %s%s%s (loss %.4f) with the parameters of step %lld (valid %s); %lld steps, %.1f s%s\n",
              percent(run.test.accuracy).c_str(), every_token ? ", per output " : "",
              every_token ? percent(run.test.output_accuracy).c_str() : "", run.test.loss, (long long)run.best_step,
              percent(run.best_valid_accuracy).c_str(), (long long)run.steps, run.seconds,
              run.stopped_early ? " (stopped early: patience)" : "");

  // The shallow readings of the same test split: a trained model must beat them.
  const std::vector<datasets::ReadingScore> readings = datasets::score_readings(*task, datasets::Split::test);
  const datasets::ReadingScore* strongest = &readings.front();
  std::printf("baselines on the same test split (accuracy%s):\n", every_token ? ", per output" : "");
  for (const datasets::ReadingScore& r : readings) {
    std::printf("  %-40s %8s  %s\n", r.name.c_str(), percent(r.accuracy).c_str(),
                every_token ? percent(r.output_accuracy).c_str() : "");
    if (r.accuracy > strongest->accuracy) strongest = &r;
  }
  std::printf("the model is %s the strongest baseline (%s, %s)\n",
              run.test.accuracy > strongest->accuracy ? "above" : "NOT above", strongest->name.c_str(),
              percent(strongest->accuracy).c_str());

  char row[2048];
  std::snprintf(row, sizeof row, "%s,%s,%lld,%lld,%lld,%lld,%lld,%lld,%.2f,%lld,%g,%s,%s,%lld,%s,%s,%.4f,%.1f,%d,%s,%s",
                task_name.c_str(), config.model.layer.c_str(), (long long)config.model.d_model,
                (long long)config.model.layers, (long long)config.model.heads, (long long)parameter_count,
                (long long)config.model.seed, (long long)run.steps, static_cast<double>(run.steps) / per_epoch,
                (long long)tr.batch_size, tr.lr, csv_number(run.best_valid_accuracy).c_str(),
                csv_number(run.best_valid_output_accuracy).c_str(), (long long)run.best_step,
                csv_number(run.test.accuracy).c_str(), csv_number(run.test.output_accuracy).c_str(), run.test.loss,
                run.seconds, num_threads(), csv_safe(strongest->name).c_str(), csv_number(strongest->accuracy).c_str());
  append_row(csv, row);
  std::printf("results: %s\nhistory: %s\n", csv.c_str(), metrics_path.c_str());

  if (!std::isnan(config.expect_test_accuracy_above)) {
    const bool ok = run.test.accuracy > config.expect_test_accuracy_above;
    std::printf("expect: test accuracy %.4f > %g: %s\n", run.test.accuracy, config.expect_test_accuracy_above,
                ok ? "ok" : "FAILED");
    return ok;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o;
    bool check = false, baselines = false;
    examples::CommandLine cli(
        "algorithmic",
        "trains sequence classifiers (models/families/sequence_classifier.h) on the authors' code execution or sequential "
        "ListOps (or the small smoke variants) from a config (models/programs/algorithmic.h), for each layer of --layers and "
        "seed of --seeds in turn. Each run prints progress lines, keeps the parameters of the best validation "
        "accuracy, prints their test accuracy beside the shallow readings of the same test split "
        "(datasets/task_readings.h) and appends a row to the CSV. A run lives in OUT/<layer>-seed<N>/: "
        "run_state.safetensors (its state, replaced atomically several times an epoch), metrics.jsonl (one line per "
        "validation) and curves.svg (its curves); OUT/valid_accuracy.svg draws every run's validation accuracy. "
        "Running the same command again skips the runs with a row in the CSV, continues those with a state, "
        "bit for bit, and starts the rest. With \"expect\": {\"test_accuracy_above\": x} in the config the exit "
        "status is 1 when a run's test accuracy is not above x.",
        "./build/examples/algorithmic examples/configs/listops_rfwp_depth10_reduced.json --layers delta_net,lstm "
        "--threads 1");
    cli.argument("<config.json>", "the task, model and training (examples/configs/*rfwp*.json, "
                 "code_execution_quick.json); with --check, any number of them.", false, true);
    cli.flag("--check", "only validate the configs, print how many are valid, and exit.",
             [&](const auto&) { check = true; });
    cli.flag("--baselines", "only print the shallow readings' accuracies on the valid and test splits of the "
             "config's task, as a Markdown table, and exit.", [&](const auto&) { baselines = true; });
    cli.option("--layers", "A,B,...", "the config's model.layer",
               "the layers to train in turn: lstm, delta_net, delta_rnn, rdn, linear, ... (--layer is the same).",
               [&](const auto& v) { o.layers = comma_list(v.option, v.text); });
    cli.option("--layer", "NAME", "the config's model.layer", "one layer (as --layers).",
               [&](const auto& v) { o.layers = comma_list(v.option, v.text); });
    cli.option("--seeds", "1,2,...", "the config's model.seed",
               "initialisation and dropout seeds, one run each (the data stay those of task.seed).",
               [&](const auto& v) {
                 for (const std::string& s : comma_list(v.option, v.text)) o.seeds.push_back(positive_integer(v.option, s));
               });
    cli.option("--steps", "N", "the config's training", "training steps (replaces training.epochs).",
               [&](const auto& v) { o.steps = v.positive_integer(); });
    cli.option("--epochs", "N", "the config's training", "passes over the training split.",
               [&](const auto& v) { o.epochs = v.positive_integer(); });
    cli.option("--threads", "N", "the config's training.threads, else every core", "CPU threads.",
               [&](const auto& v) { o.threads = v.positive_integer(); });
    cli.option("--out", "DIR", "the config's out_dir", "where the runs live; results.csv goes there unless --csv.",
               [&](const auto& v) { o.out = v.text; });
    cli.option("--csv", "FILE", "OUT/results.csv", "the CSV that gains one row per finished run (rewritten atomically).",
               [&](const auto& v) { o.csv = v.text; });
    cli.flag("--overwrite", "start every named run over, discarding its state.", [&](const auto&) { o.overwrite = true; });
    std::string chart_only;
    cli.option("--chart-also", "DIR,...", "none",
               "other sweep directories (a second process's --out) whose runs OUT/valid_accuracy.svg draws too.",
               [&](const auto& v) { o.chart_also = comma_list(v.option, v.text); });
    cli.option("--chart", "SVG", "none",
               "only draw the validation accuracy of every run under OUT and the --chart-also directories into SVG, "
               "and exit (nothing is trained; a sweep may be running).",
               [&](const auto& v) { chart_only = v.text; });
    const examples::CommandLine::Parsed parsed = cli.parse(argc, argv);
    if (parsed.exit) return 0;
    if (check) {
      for (const std::string& path : parsed.arguments) models::load_algorithmic_config(path);
      std::printf("%zu config(s) valid\n", parsed.arguments.size());
      return 0;
    }
    LOOM_CHECK(parsed.arguments.size() == 1, "algorithmic: one config to run, got ", parsed.arguments.size(), "\n",
               cli.usage());
    const std::string& config_path = parsed.arguments[0];
    if (baselines) {
      print_baselines(config_path);
      return 0;
    }
    LOOM_CHECK(!(o.steps > 0 && o.epochs > 0), "algorithmic: --steps and --epochs exclude each other");
    models::AlgorithmicConfig config = models::load_algorithmic_config(config_path);
    if (o.steps > 0) config.training.steps = o.steps, config.training.epochs = 0;
    if (o.epochs > 0) config.training.epochs = o.epochs;
    if (o.threads > 0) config.training.threads = o.threads;
    if (config.training.threads > 0) set_num_threads(static_cast<int>(config.training.threads));
    const std::string out_dir = o.out.empty() ? config.out_dir : o.out;
    const std::string title = "validation accuracy: " + models::make_algorithmic_task(config)->name();
    // The chart's runs besides this sweep's own: those of the --chart-also directories.
    auto other_runs = [&] {
      std::vector<RunPlace> runs;
      for (const std::string& dir : o.chart_also) {
        LOOM_CHECK(std::filesystem::is_directory(dir), "--chart-also: '", dir, "' is not a directory");
        for (RunPlace& run : runs_in(dir)) runs.push_back(std::move(run));
      }
      return runs;
    };
    if (!chart_only.empty()) {
      LOOM_CHECK(std::filesystem::is_directory(out_dir), "--chart: the sweep directory '", out_dir, "' does not exist");
      std::vector<RunPlace> runs = runs_in(out_dir);
      for (RunPlace& run : other_runs()) runs.push_back(std::move(run));
      const size_t drawn = write_sweep_chart(chart_only, runs, title);
      LOOM_CHECK(drawn > 0, "--chart: no run with a validation in its metrics.jsonl under '", out_dir, "'",
                 o.chart_also.empty() ? "" : " or the --chart-also directories", "; nothing written");
      std::printf("chart: %s (%zu runs)\n", chart_only.c_str(), drawn);
      return 0;
    }
    std::filesystem::create_directories(out_dir);
    const io::DirectoryLock out_dir_lock(out_dir, "out_dir");  // one sweep writes out_dir at a time
    const std::string csv = o.csv.empty() ? out_dir + "/results.csv" : o.csv;
    // What a sweep killed while redrawing its chart left; each run cleans its own
    // files. The CSV may be another sweep's (--csv): left alone.
    io::remove_atomic_leftovers(out_dir + "/valid_accuracy.svg");

    const std::vector<std::string> layers = o.layers.empty() ? std::vector<std::string>{config.model.layer} : o.layers;
    const std::vector<int64_t> seeds =
        o.seeds.empty() ? std::vector<int64_t>{static_cast<int64_t>(config.model.seed)} : o.seeds;
    // Every name is checked before the first run starts.
    for (const std::string& layer : layers) {
      models::SequenceClassifierConfig m = config.model;
      m.layer = layer;
      try {
        models::check_sequence_classifier_config(m);
      } catch (const Error& e) {
        throw Error(std::string("--layers: ") + e.what());
      }
    }
    std::vector<RunPlace> runs;
    for (const std::string& layer : layers)
      for (const int64_t seed : seeds) runs.push_back({out_dir, layer + "-seed" + std::to_string(seed)});
    for (RunPlace& run : other_runs()) runs.push_back(std::move(run));
    bool all_ok = true;
    for (const std::string& layer : layers) {
      for (const int64_t seed : seeds) {
        models::AlgorithmicConfig c = config;
        c.model.layer = layer;
        c.model.seed = static_cast<uint64_t>(seed);
        all_ok = run_one(c, o, out_dir, csv) && all_ok;
        write_sweep_chart(out_dir + "/valid_accuracy.svg", runs, title);
      }
    }
    std::printf("chart: %s/valid_accuracy.svg\n", out_dir.c_str());
    return all_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
