// charts.cpp: see charts.h.
#include "models/programs/charts.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"
#include "engine/file_io.h"

namespace loom::models {

namespace {

// The page: a title band, then per panel its frame and the band of its x axis.
constexpr double kTitleBand = 50, kAxisBand = 60, kLeft = 70, kRight = 190;
const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

std::string escape_xml(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// printf into a std::string (every element of the chart is one such line).
template <class... Args>
std::string format(const char* pattern, Args... args) {
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, pattern, args...);
  return buffer;
}

// The smallest step of 1, 2, 5 times a power of ten (at least min_step) that cuts
// `range` into at most max_ticks pieces.
double tick_step(double range, int max_ticks, double min_step) {
  double step = std::pow(10.0, std::floor(std::log10(range / max_ticks)));
  for (int i = 0; range / step > max_ticks + 1e-9 || step < min_step; ++i) step *= (i % 3 == 1) ? 2.5 : 2;
  return step;
}

// Decimals that show every multiple of `step` exactly (0.1 -> 1, 2.5 -> 1, 50 -> 0).
int decimals_of(double step) {
  int d = 0;
  while (d < 6 && std::abs(step * std::pow(10.0, d) - std::round(step * std::pow(10.0, d))) > 1e-6) ++d;
  return d;
}

// A tick's label: multiples of `step`, thousands as "k" and millions as "M" (400k, not 400000).
std::string tick_label(double value, double step, double largest) {
  const double unit = largest >= 1e6 ? 1e6 : largest >= 1e4 ? 1e3 : 1;
  const char* suffix = unit == 1e6 ? "M" : unit == 1e3 ? "k" : "";
  if (std::abs(value) < step * 1e-6) value = 0;  // no "-0" from rounding
  return format("%.*f%s", decimals_of(step / unit), value / unit, suffix);
}

// [lo, hi] of the values, or [0, 1] for none; never empty.
std::pair<double, double> extent(const std::vector<double>& values) {
  double lo = INFINITY, hi = -INFINITY;
  for (double v : values)
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (lo > hi) return {0, 1};
  if (lo == hi) {
    const double pad = std::max(std::abs(lo) * 0.1, 1e-3);
    return {lo - pad, hi + pad};
  }
  return {lo, hi};
}

// One panel whose frame's top edge is at `top`.
void draw_panel(std::ostringstream& s, const ChartPanel& panel, double width, double top) {
  const double pw = width - kLeft - kRight, ph = panel.height;
  std::vector<double> xs, ys;
  for (const ChartSeries& series : panel.series)
    for (const auto& [x, y] : series.points) xs.push_back(x), ys.push_back(y);

  // Plain variables, not structured bindings: clang 14 cannot capture bindings in the lambdas below.
  const auto x_extent = extent(xs);
  double x_min = x_extent.first, x_max = x_extent.second;
  if (!std::isnan(panel.x_min)) x_min = panel.x_min;
  if (!std::isnan(panel.x_max)) x_max = panel.x_max;
  if (x_max <= x_min) x_max = x_min + 1;
  // y: the data's range (or the fixed ends), widened to whole ticks at the free ends.
  const auto y_extent = extent(ys);
  double y_min = y_extent.first, y_max = y_extent.second;
  if (!std::isnan(panel.y_min)) y_min = panel.y_min;
  if (!std::isnan(panel.y_max)) y_max = panel.y_max;
  if (y_max <= y_min) y_max = y_min + 1;
  const double y_step = tick_step(y_max - y_min, panel.max_y_ticks, 0);
  if (std::isnan(panel.y_min)) y_min = std::floor(y_min / y_step) * y_step;
  if (std::isnan(panel.y_max)) y_max = std::ceil(y_max / y_step) * y_step;
  const auto x_of = [&](double x) { return kLeft + pw * (x - x_min) / (x_max - x_min); };
  const auto y_of = [&](double y) {
    return top + ph * (1.0 - (std::isnan(y) ? 1.0 : (std::clamp(y, y_min, y_max) - y_min) / (y_max - y_min)));
  };

  // Grid and ticks (the y step again, over the widened range).
  const double ys_step = tick_step(y_max - y_min, panel.max_y_ticks, 0);
  const double y_largest = std::max(std::abs(y_min), std::abs(y_max));
  for (double y = std::ceil(y_min / ys_step - 1e-9) * ys_step; y <= y_max + ys_step * 1e-6; y += ys_step)
    s << format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                kLeft, y_of(y), kLeft + pw, y_of(y), kLeft - 6, y_of(y) + 4, tick_label(y, ys_step, y_largest).c_str());
  const double x_step = tick_step(x_max - x_min, 12, panel.min_x_step);
  const double x_largest = std::max(std::abs(x_min), std::abs(x_max));
  for (double x = std::ceil(x_min / x_step - 1e-9) * x_step; x <= x_max + x_step * 1e-6; x += x_step)
    s << format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                x_of(x), top, x_of(x), top + ph, x_of(x), top + ph + 18, tick_label(x, x_step, x_largest).c_str());
  s << format("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n",
              kLeft, top, pw, ph)
    << format("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", kLeft + pw / 2, top + ph + kAxisBand - 18)
    << escape_xml(panel.x_label) << "</text>\n"
    << format("<text transform=\"translate(%.1f,%.1f) rotate(-90)\" text-anchor=\"middle\">", kLeft - 48,
              top + ph / 2)
    << escape_xml(panel.y_label) << "</text>\n";

  double legend_y = top + 10;
  const auto legend_entry = [&](const std::string& label, const std::string& colour, const char* dash) {
    s << format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n"
                "<text x=\"%.1f\" y=\"%.1f\">",
                kLeft + pw + 12, legend_y, kLeft + pw + 40, legend_y, colour.c_str(), dash, kLeft + pw + 46,
                legend_y + 4)
      << escape_xml(label) << "</text>\n";
    legend_y += 20;
  };
  for (double x : panel.x_marks)
    s << format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"3,3\"/>\n",
                x_of(x), top, x_of(x), top + ph);
  if (!panel.x_marks.empty()) legend_entry(panel.x_mark_label, "#888", " stroke-dasharray=\"3,3\"");

  // The series: their points in data units on the group, the drawing inside.
  size_t next_colour = 0;
  for (const ChartSeries& series : panel.series) {
    const std::string colour =
        series.colour.empty() ? chart_colour(next_colour++) : series.colour;
    s << "<g class=\"series\" data-label=\"" << escape_xml(series.label) << "\" data-points=\"";
    for (size_t i = 0; i < series.points.size(); ++i)
      s << (i ? " " : "") << format("%.9g,%.9g", series.points[i].first, series.points[i].second);
    s << "\">\n<title>" << escape_xml(series.label) << "</title>\n";
    if (series.points.size() >= 2) {
      s << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\""
        << (series.dashed ? " stroke-dasharray=\"6,4\" stroke-opacity=\"0.6\"" : "") << " points=\"";
      for (const auto& [x, y] : series.points) s << format("%.1f,%.1f ", x_of(x), y_of(y));
      s << "\"/>\n";
    }
    if (series.dots)
      for (const auto& [x, y] : series.points)
        s << format("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", x_of(x), y_of(y), colour.c_str());
    s << "</g>\n";
    if (series.in_legend) legend_entry(series.label, colour, series.dashed ? " stroke-dasharray=\"6,4\"" : "");
  }
  legend_y += 14;  // the notes sit a little apart from the entries
  for (const std::string& note : panel.notes) {
    s << format("<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">", kLeft + pw + 12, legend_y) << escape_xml(note)
      << "</text>\n";
    legend_y += 16;
  }
}

double number_at(const nlohmann::json& entry, const char* key) {
  const nlohmann::json& v = entry.at(key);
  return v.is_number() ? v.get<double>() : NAN;  // a non-finite value is logged as null
}

}  // namespace

std::string chart_colour(size_t i) { return kPalette[i % (sizeof kPalette / sizeof kPalette[0])]; }

std::string chart_svg(const Chart& chart) {
  double height = kTitleBand;
  for (const ChartPanel& panel : chart.panels) height += panel.height + kAxisBand;
  std::ostringstream s;
  s << format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
              "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
              chart.width, height, chart.width, height)
    << format("<text x=\"%.0f\" y=\"25\" font-size=\"15\" text-anchor=\"middle\">",
              kLeft + (chart.width - kLeft - kRight) / 2)
    << escape_xml(chart.title) << "</text>\n";
  double top = kTitleBand;
  for (const ChartPanel& panel : chart.panels) {
    draw_panel(s, panel, chart.width, top);
    top += panel.height + kAxisBand;
  }
  s << "</svg>\n";
  return s.str();
}

TrainingCurves read_training_curves(const std::string& metrics_path) {
  std::ifstream in(metrics_path);
  LOOM_CHECK(in, "cannot read the metrics log '", metrics_path, "'");
  TrainingCurves c;
  int64_t line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json entry;
    try {
      entry = nlohmann::json::parse(line);
      LOOM_CHECK(entry.is_object(), "not a JSON object");
      if (entry.contains("resumed_at_step")) {
        const double at = entry.at("resumed_at_step").get<double>();
        for (ChartPoints* points : {&c.train_loss, &c.valid_loss, &c.valid_accuracy, &c.tokens_per_s})
          points->erase(std::remove_if(points->begin(), points->end(), [&](const auto& p) { return p.first > at; }),
                        points->end());
        c.resumed_at.push_back(at);
        continue;
      }
      if (!entry.contains("step")) continue;
      const double step = entry.at("step").get<double>();
      if (entry.contains("loss")) c.train_loss.emplace_back(step, number_at(entry, "loss"));
      if (entry.contains("tokens_per_s")) c.tokens_per_s.emplace_back(step, number_at(entry, "tokens_per_s"));
      if (entry.contains("valid_loss")) c.valid_loss.emplace_back(step, number_at(entry, "valid_loss"));
      if (entry.contains("valid_acc")) c.valid_accuracy.emplace_back(step, number_at(entry, "valid_acc"));
    } catch (const std::exception& e) {
      LOOM_FAIL(metrics_path, ":", line_number, ": unreadable metrics line (", e.what(), ")");
    }
  }
  return c;
}

Chart training_chart(const TrainingCurves& curves, const std::string& title) {
  Chart chart;
  chart.title = title;
  // The panels share the step axis, from 0 to the last step logged.
  double last_step = 1;
  for (const ChartPoints* points : {&curves.train_loss, &curves.valid_loss, &curves.valid_accuracy, &curves.tokens_per_s})
    for (const auto& point : *points) last_step = std::max(last_step, point.first);
  const auto panel = [&](const char* y_label, double height) {
    ChartPanel p;
    p.x_label = "step";
    p.y_label = y_label;
    p.x_min = 0;
    p.x_max = last_step;
    p.min_x_step = 1;
    p.height = height;
    p.x_marks = curves.resumed_at;
    p.x_mark_label = "resumed";
    return p;
  };
  ChartPanel loss = panel("loss (cross-entropy, nats)", 300);
  loss.series.push_back({"training loss", curves.train_loss, "#1f77b4"});
  loss.series.push_back({"validation loss", curves.valid_loss, "#d62728", true});
  chart.panels.push_back(loss);
  if (!curves.valid_accuracy.empty()) {
    ChartPanel accuracy = panel("validation accuracy", 180);
    accuracy.series.push_back({"validation accuracy", curves.valid_accuracy, "#2ca02c", true});
    chart.panels.push_back(accuracy);
  }
  ChartPanel speed = panel("tokens/s", 180);
  speed.y_min = 0;  // a rate's scale starts at nothing
  speed.series.push_back({"tokens/s (training)", curves.tokens_per_s, "#7f7f7f"});
  chart.panels.push_back(speed);
  return chart;
}

void write_training_chart(const std::string& svg_path, const TrainingCurves& curves, const std::string& title) {
  io::write_file_atomically(svg_path, chart_svg(training_chart(curves, title)));
}

void write_training_chart(const std::string& metrics_path, const std::string& svg_path, const std::string& title) {
  write_training_chart(svg_path, read_training_curves(metrics_path), title);
}

}  // namespace loom::models
