// algorithmic.h: a training run on an algorithmic task (datasets/code_execution.h,
// datasets/listops.h) with the sequence classifier (models/sequence_classifier.h):
// its JSON config and its training protocol, used by examples/algorithmic.
//
//   {
//     "out_dir":  "runs/code_execution",
//     "task":     {"kind": "code_execution", "variables": 5, "statements": 4, "train_size": 100000, ...},
//     "model":    {"layer": "lstm", "d_model": 64, "layers": 2, ...},
//     "training": {"steps": 15000, "batch_size": 64, "lr": 0.001, ...},
//     "expect":   {"test_accuracy_above": 0.5}                          (optional)
//   }
//
// Parsing is strict: an unknown key, a wrong type or a bad value is one loom::Error
// naming the key path ("run.json.training.lr: must be positive, got 0").
//
// The protocol: Adam (PyTorch's form, as the authors) at a constant rate, global
// gradient-norm clipping, batches walking a fresh permutation of the training
// split each epoch (datasets::epoch_order with the task's seed); the whole
// validation split every eval_interval steps and at the end; the parameters of
// the best validation accuracy are put back into the model before the test split
// is evaluated.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "datasets/code_execution.h"
#include "datasets/listops.h"
#include "models/sequence_classifier.h"

namespace loom::models {

struct AlgorithmicTraining {
  int64_t steps = 1000;
  int64_t batch_size = 64;
  double lr = 3e-4;
  double clip = 1.0;  // global gradient-norm limit; 0: none
  int64_t log_interval = 50;
  int64_t eval_interval = 250;
  int64_t eval_batch_size = 250;
  int64_t threads = 0;  // 0: OMP_NUM_THREADS or all cores
};

struct AlgorithmicConfig {
  std::string out_dir;
  std::string task_kind;  // code_execution | listops
  datasets::CodeExecutionConfig code;
  datasets::ListOpsConfig listops;
  SequenceClassifierConfig model;  // vocab and classes filled in from the task
  AlgorithmicTraining training;
  double expect_test_accuracy_above = NAN;  // NaN: no expectation
};

// `source` (e.g. the file name) starts every error message.
AlgorithmicConfig parse_algorithmic_config(const std::string& json_text, const std::string& source);
AlgorithmicConfig load_algorithmic_config(const std::string& path);

// The task a config describes.
std::unique_ptr<datasets::SequenceTask> make_algorithmic_task(const AlgorithmicConfig& config);

struct AlgorithmicRun {
  double best_valid_accuracy = 0.0;
  int64_t best_step = 0;
  Evaluation test;  // with the best validation step's parameters
  double seconds = 0.0;
};

// Trains `model` on `task`; `log` receives each progress and validation line.
AlgorithmicRun train_algorithmic(SequenceClassifier& model, const datasets::SequenceTask& task,
                                 const AlgorithmicTraining& training, uint64_t shuffle_seed,
                                 const std::function<void(const std::string&)>& log = {});

}  // namespace loom::models
