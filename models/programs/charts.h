// charts.h: line charts as SVG text, and the training curves of a run.
//
// An SVG file is plain text that every browser shows, so a run can be looked at
// without Python or a plotting library. A chart is one or more panels stacked
// under a title; a panel is a frame with grid lines, tick labels and a legend on
// the right, holding series of (x, y) points.
//
// Each series is one <g class="series"> element whose data-label and data-points
// attributes carry its label and its points in data units ("x,y x,y ..."), so a
// reader (or a test) can get the values back without undoing the pixel mapping.
//
// The training curves of any training loop:
//
//   models::write_training_chart(run_dir + "/metrics.jsonl", run_dir + "/curves.svg", "my run");
//
// reads the metrics log (one JSON object per line; see read_training_curves) and
// replaces the chart atomically (engine/file_io.h), so a reader or a crash never
// sees half a chart. A loop that keeps its points in memory fills TrainingCurves
// itself and calls write_training_chart(svg_path, curves, title).
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace loom::models {

using ChartPoints = std::vector<std::pair<double, double>>;  // (x, y) in data units

struct ChartSeries {
  std::string label;
  ChartPoints points;
  std::string colour;        // "" picks the panel's next palette colour
  bool dots = false;         // a circle on each point
  bool dashed = false;       // a lighter dashed line
  bool in_legend = true;
};

struct ChartPanel {
  std::string x_label, y_label;
  std::vector<ChartSeries> series;
  // The axes' ranges; NAN takes them from the data, widened to whole ticks.
  // A y value outside a fixed range is drawn at its edge; a y that is NaN at the top.
  double x_min = NAN, x_max = NAN, y_min = NAN, y_max = NAN;
  double min_x_step = 0;  // the smallest tick step of x (1 for counts)
  int max_y_ticks = 5;
  std::vector<double> x_marks;       // vertical dashed lines (e.g. where a run resumed)
  std::string x_mark_label;          // their legend entry
  std::vector<std::string> notes;    // grey lines under the legend
  double height = 390;               // the frame's height in pixels
};

struct Chart {
  std::string title;
  std::vector<ChartPanel> panels;
  double width = 820;
};

// Colour number i of the palette series take in turn ("#1f77b4", ...).
std::string chart_colour(size_t i);

// The chart as a standalone SVG document.
std::string chart_svg(const Chart& chart);

// The curves a training run logs, against the step.
struct TrainingCurves {
  ChartPoints train_loss, valid_loss, valid_accuracy, tokens_per_s;
  std::vector<double> resumed_at;  // steps where the run was resumed
};

// Reads a metrics log: lines {"step", "loss", "tokens_per_s", ...} give the
// training loss and tokens/s, lines {"step", "valid_loss", "valid_acc"} the
// validation; a line {"resumed_at_step": N} drops every point past step N (an
// interrupted run logged them, the resumed run logs them again). Empty lines are
// skipped; any other line that is not a JSON object is a loom::Error naming the
// file and the line.
TrainingCurves read_training_curves(const std::string& metrics_path);

// Panels: loss (training and validation), validation accuracy (when logged), tokens/s.
Chart training_chart(const TrainingCurves& curves, const std::string& title);

// Writes training_chart(...) to svg_path atomically.
void write_training_chart(const std::string& svg_path, const TrainingCurves& curves, const std::string& title);
void write_training_chart(const std::string& metrics_path, const std::string& svg_path, const std::string& title);

}  // namespace loom::models
