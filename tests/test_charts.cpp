// test_charts.cpp: the SVG charts of models/programs/charts.h. A chart is well-formed XML
// (tests/xml_reader.h, written from the XML rules, not from the chart code), its
// series carry exactly the values the metrics log holds, and a resumed run's
// chart holds every step once. (A chart write that fails at any system call:
// test_crash_safety.cpp.)
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model_test_utils.h"
#include "models/programs/charts.h"
#include "models/programs/trainer.h"
#include "tests/xml_reader.h"

namespace loom::test {

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct ReadSeries {
  std::vector<std::pair<double, double>> values;  // from data-points
  std::vector<std::pair<double, double>> pixels;  // the polyline's points
};

// label -> the series of that label, read from the SVG's <g class="series"> elements.
std::map<std::string, ReadSeries> series_of(const XmlElement& svg) {
  std::vector<const XmlElement*> groups;
  svg.find_all("g", groups);
  std::map<std::string, ReadSeries> out;
  const auto pairs = [](const std::string& text) {
    std::vector<std::pair<double, double>> points;
    std::istringstream in(text);
    for (std::string item; in >> item;) {
      const size_t comma = item.find(',');
      REQUIRE(comma != std::string::npos);
      points.emplace_back(std::stod(item.substr(0, comma)), std::stod(item.substr(comma + 1)));
    }
    return points;
  };
  for (const XmlElement* g : groups) {
    if (g->attributes.count("class") == 0 || g->attributes.at("class") != "series") continue;
    ReadSeries& s = out[g->attributes.at("data-label")];
    s.values = pairs(g->attributes.at("data-points"));
    for (const auto& child : g->children)
      if (child->name == "polyline") s.pixels = pairs(child->attributes.at("points"));
  }
  return out;
}

// The values the log holds, the way a reader of the file sees them: per key and
// step, the value of the line written last (a resumed run rewrites the steps
// after its checkpoint).
std::map<std::string, std::map<int64_t, double>> logged_values(const std::string& metrics_path) {
  std::map<std::string, std::map<int64_t, double>> out;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    if (!entry.contains("step")) continue;
    for (const char* key : {"loss", "valid_loss", "valid_acc", "tokens_per_s"})
      if (entry.contains(key)) out[key][entry["step"].get<int64_t>()] = entry[key].get<double>();
  }
  return out;
}

// The chart's series equal the log's values: the same steps in order, once each.
void check_chart_matches_log(const std::string& svg_path, const std::string& metrics_path, int64_t last_step) {
  const std::string svg_text = read_text(svg_path);
  std::unique_ptr<XmlElement> svg;
  REQUIRE_NOTHROW(svg = XmlReader::parse(svg_text));
  CHECK(svg->name == "svg");
  CHECK(svg->attributes.at("xmlns") == "http://www.w3.org/2000/svg");
  const auto series = series_of(*svg);
  const auto logged = logged_values(metrics_path);
  const std::map<std::string, std::string> label_of_key = {{"loss", "training loss"},
                                                           {"valid_loss", "validation loss"},
                                                           {"valid_acc", "validation accuracy"},
                                                           {"tokens_per_s", "tokens/s (training)"}};
  for (const auto& key_and_label : label_of_key) {  // no structured bindings: clang 14 cannot capture them in INFO
    const std::string& key = key_and_label.first;
    const std::string& label = key_and_label.second;
    INFO(label);
    REQUIRE(series.count(label) == 1);
    REQUIRE(logged.count(key) == 1);
    const ReadSeries& s = series.at(label);
    const std::map<int64_t, double>& want = logged.at(key);
    REQUIRE(s.values.size() == want.size());
    CHECK(want.rbegin()->first == last_step);
    size_t i = 0;
    for (const auto& step_and_value : want) {
      const int64_t step = step_and_value.first;
      const double value = step_and_value.second;
      CHECK(s.values[i].first == static_cast<double>(step));
      CHECK(s.values[i].second == relative(value, 1e-8));
      ++i;
    }
    // The drawing follows the values: one vertex per point, x growing with the
    // step, a larger value drawn higher (smaller y).
    REQUIRE(s.pixels.size() == s.values.size());
    for (size_t a = 0; a < s.values.size(); ++a)
      for (size_t b = 0; b < s.values.size(); ++b) {
        if (s.values[a].first < s.values[b].first) CHECK(s.pixels[a].first < s.pixels[b].first);
        if (s.values[a].second > s.values[b].second * (1 + 1e-2)) CHECK(s.pixels[a].second < s.pixels[b].second);
      }
  }
}

models::TrainConfig chart_config(const std::string& out_dir, int64_t steps) {
  models::TrainConfig c = models::parse_train_config(R"({
    "model": {"family": "bigram", "d_model": 16, "seed": 3},
    "data": {"seq_len": 16, "batch_size": 4, "seed": 5},
    "training": {"log_interval": 1, "eval_interval": 2, "eval_batches": 2, "checkpoint_interval": 0},
    "sample": {"prompt": "ab", "length": 4}
  })");
  c.training.steps = steps;
  c.training.out_dir = out_dir;
  return c;
}

void run_to(int64_t steps, const std::string& out_dir, const std::string& resume = "") {
  std::string text;
  for (int i = 0; i < 400; ++i) text += "abcab cba bca\n";
  models::TrainConfig config = chart_config(out_dir, steps);
  datasets::TextDataset data = datasets::TextDataset::from_text(text);
  models::resolve_vocab(config, data.tokenizer);
  std::unique_ptr<models::LanguageModel> model = models::make_model(config.model);
  models::Trainer trainer(config, *model, std::move(data));
  if (!resume.empty()) trainer.resume(resume);
  models::RunOptions quiet;
  quiet.progress = false;
  trainer.run(quiet);
  CHECK(trainer.chart_path() == out_dir + "/curves.svg");
}

}  // namespace

TEST_CASE("xml reader: refuses what is not well-formed XML") {
  CHECK_NOTHROW(XmlReader::parse("<?xml version=\"1.0\"?>\n<a x=\"1\" y='&lt;2'><b/>t &amp; u<!-- c --></a>\n"));
  CHECK(XmlReader::parse("<a x=\"&quot;\">&#65;&#x42;</a>")->text == "AB");
  for (const char* bad : {"<a><b></a></b>", "<a x=1/>", "<a x=\"1\" x=\"2\"/>", "<a>&nbsp;</a>", "<a>1 < 2</a>",
                          "<a>&</a>", "<a/><b/>", "<a>", "text", "<a x=\"<\"/>", "<a\"x\"/>"}) {
    INFO(bad);
    CHECK_THROWS_AS(XmlReader::parse(bad), std::runtime_error);
  }
}

TEST_CASE("charts: a chart is well-formed SVG whose series carry their points; labels are escaped") {
  models::Chart chart;
  chart.title = "a <title> & \"quotes\"";
  models::ChartPanel panel;
  panel.x_label = "x < 1";
  panel.y_label = "y";
  panel.series.push_back({"one & two", {{0, 1.5}, {1, 2.25}, {2, -0.125}}, "", true});
  panel.series.push_back({"flat", {{0, 3}, {2, 3}}, "", false, true});
  panel.series.push_back({"single", {{1, 0.5}}});
  panel.notes.push_back("a note <here>");
  chart.panels.push_back(panel);
  chart.panels.push_back(panel);  // two panels: the document stays one root
  const std::string text = models::chart_svg(chart);
  std::unique_ptr<XmlElement> svg;
  REQUIRE_NOTHROW(svg = XmlReader::parse(text));
  std::vector<const XmlElement*> texts;
  svg->find_all("text", texts);
  bool title_found = false, note_found = false;
  for (const XmlElement* t : texts) {
    title_found = title_found || t->text == "a <title> & \"quotes\"";
    note_found = note_found || t->text == "a note <here>";
  }
  CHECK(title_found);
  CHECK(note_found);
  const auto series = series_of(*svg);
  REQUIRE(series.count("one & two") == 1);
  CHECK(series.at("one & two").values == std::vector<std::pair<double, double>>{{0, 1.5}, {1, 2.25}, {2, -0.125}});
  CHECK(series.at("single").values == std::vector<std::pair<double, double>>{{1, 0.5}});
  CHECK(series.at("single").pixels.empty());  // one point draws no line
}

TEST_CASE("charts: a metrics line that is not JSON is an error naming the file and line") {
  TempDir dir("charts-bad-log");
  std::ofstream(dir.file("metrics.jsonl")) << "{\"step\": 1, \"loss\": 2.5}\n\n{\"step\": 2, \"loss\n";
  CHECK(contains(error_of([&] { models::read_training_curves(dir.file("metrics.jsonl")); }),
                 dir.file("metrics.jsonl") + ":3: unreadable metrics line"));
  CHECK(contains(error_of([&] { models::read_training_curves(dir.file("missing.jsonl")); }),
                 "cannot read the metrics log '" + dir.file("missing.jsonl") + "'"));
}

TEST_CASE("charts: train draws curves.svg from its log; a resumed run continues it without lost or doubled points") {
  TempDir dir("charts-run");
  const std::string run = dir.file("run");
  run_to(4, run);  // evaluations at 2 and 4, a checkpoint at 4
  check_chart_matches_log(run + "/curves.svg", run + "/metrics.jsonl", 4);
  std::filesystem::copy(run + "/checkpoint-4", dir.file("step-4"), std::filesystem::copy_options::recursive);
  run_to(6, run, run);  // resumed at its end: nothing to drop
  check_chart_matches_log(run + "/curves.svg", run + "/metrics.jsonl", 6);

  // Resumed from the copy of step 4, as after a run killed before its save at
  // step 6: the log holds steps 5 and 6 twice, the chart must hold them once,
  // with the resumed run's values.
  run_to(10, run, dir.file("step-4"));
  check_chart_matches_log(run + "/curves.svg", run + "/metrics.jsonl", 10);
  int64_t loss_lines = 0;
  std::ifstream log(run + "/metrics.jsonl");
  for (std::string line; std::getline(log, line);) loss_lines += contains(line, "\"loss\"");
  CHECK(loss_lines == 12);  // 1..4, 5..6, then 5..10: the chart's 10 points are not a count of lines
  const models::TrainingCurves curves = models::read_training_curves(run + "/metrics.jsonl");
  CHECK(curves.resumed_at == std::vector<double>{4, 4});
}

}  // namespace loom::test
