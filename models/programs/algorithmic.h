// algorithmic.h: a training run on an algorithmic task with the sequence
// classifier (models/families/sequence_classifier.h): its JSON config and its training
// protocol, used by examples/algorithmic. The tasks: the authors' code execution
// and sequential ListOps (datasets/code_execution_rfwp.h, datasets/listops_rfwp.h:
// task kinds code_execution_rfwp and listops_rfwp), and two smaller variants for
// quick runs (datasets/code_execution.h, datasets/listops.h: code_execution,
// listops), which are not the paper's tasks.
//
//   {
//     "out_dir":  "runs/code_execution",
//     "task":     {"kind": "code_execution_rfwp", "variables": 5, "statements": 100, "semantics": "authors", ...},
//     "model":    {"layer": "lstm", "d_model": 256, "layers": 4, ...},
//     "training": {"epochs": 200, "batch_size": 64, "lr": 0.0003, "patience": 10, ...},
//     "expect":   {"test_accuracy_above": 0.5}                          (optional)
//   }
//
// Parsing is strict: an unknown key, a wrong type or a bad value is one loom::Error
// naming the key path ("run.json.training.lr: must be positive, got 0").
//
// The protocol, the authors' (IDSIA/recurrent-fwp, algorithmic/main.py): Adam
// (PyTorch's form) at a constant rate, optional global gradient-norm clipping,
// batches walking a fresh permutation of the training split each epoch
// (datasets::epoch_order with the task's seed; a batch never spans two epochs);
// for a task labelling every token the loss is the mean cross entropy over all
// real tokens; the whole validation split every eval_interval steps and at the
// end; with patience, the run stops once that many evaluations in a row found
// neither a better validation accuracy nor a lower validation loss; the
// parameters of the best validation accuracy (ties: the best per-output
// accuracy; the first of equals) are put back into the model before the test
// split is evaluated.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "datasets/code_execution.h"
#include "datasets/code_execution_rfwp.h"
#include "datasets/listops.h"
#include "datasets/listops_rfwp.h"
#include "models/families/sequence_classifier.h"

namespace loom::models {

struct AlgorithmicTraining {
  int64_t steps = 1000;    // optimizer steps; epochs > 0 replaces it
  int64_t epochs = 0;      // passes over the training split: steps = epochs · steps_per_epoch
  int64_t batch_size = 64;
  double lr = 3e-4;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;  // torch.optim.Adam's defaults
  double clip = 1.0;  // global gradient-norm limit; 0: none
  int64_t log_interval = 50;
  int64_t eval_interval = 250;  // steps; with epochs > 0 and no eval_interval given: one epoch
  int64_t patience = 0;  // stop after this many evaluations with neither a better valid accuracy nor a lower valid loss; 0: never
  int64_t eval_batch_size = 250;
  int64_t threads = 0;  // 0: OMP_NUM_THREADS or all cores
};

struct AlgorithmicConfig {
  std::string out_dir;
  std::string task_kind;  // code_execution | listops | code_execution_rfwp | listops_rfwp
  datasets::CodeExecutionConfig code;
  datasets::ListOpsConfig listops;
  datasets::CodeExecutionRfwpConfig code_rfwp;
  datasets::ListOpsRfwpConfig listops_rfwp;
  SequenceClassifierConfig model;  // vocab and classes filled in from the task
  AlgorithmicTraining training;
  double expect_test_accuracy_above = NAN;  // NaN: no expectation
};

// `source` (e.g. the file name) starts every error message.
AlgorithmicConfig parse_algorithmic_config(const std::string& json_text, const std::string& source);
AlgorithmicConfig load_algorithmic_config(const std::string& path);

// The task a config describes, and the seed of its data (which also orders the epochs).
std::unique_ptr<datasets::SequenceTask> make_algorithmic_task(const AlgorithmicConfig& config);
uint64_t algorithmic_task_seed(const AlgorithmicConfig& config);

// Batches of one epoch: the split in a fresh order, the last batch smaller when
// batch_size does not divide it (as a PyTorch DataLoader without drop_last).
int64_t steps_per_epoch(int64_t train_size, int64_t batch_size);
// The optimizer steps a run takes: training.steps, or epochs · steps_per_epoch.
int64_t total_steps(const AlgorithmicTraining& training, int64_t train_size);

// One validation of a run.
struct EvalPoint {
  int64_t step = 0;
  double epoch = 0.0;                  // passes over the training split so far
  double train_loss = NAN;             // mean over the steps since the previous evaluation
  double train_accuracy = NAN;
  double valid_loss = NAN, valid_accuracy = NAN, valid_output_accuracy = NAN;
  double tokens_per_second = NAN;      // training tokens (no padding) per second since the previous evaluation
  double seconds = 0.0;                // training time so far
};

struct AlgorithmicRun {
  double best_valid_accuracy = 0.0;
  double best_valid_output_accuracy = NAN;
  int64_t best_step = 0;
  int64_t steps = 0;                   // steps taken, fewer than planned when patience stopped the run
  bool stopped_early = false;
  Evaluation test;  // with the best validation step's parameters
  double seconds = 0.0;                // training time, over every piece of a resumed run
  std::vector<EvalPoint> history;
};

// Where a run keeps its state, so that a killed run goes on where it was:
// state_path gets the model, the best parameters, the optimizer and the history
// after every `save_interval` steps and every evaluation (one safetensors file,
// replaced atomically). `identity` names what must not change between the pieces
// of a run (the task, model and optimizer settings); a state written with another
// identity is refused. on_eval sees the history after each evaluation.
struct RunPersistence {
  std::string state_path;
  std::string identity;
  int64_t save_interval = 0;  // 0: at evaluations only
  bool resume = false;        // read state_path first (it must exist)
  std::function<void(const std::vector<EvalPoint>&)> on_eval;
};

// Trains `model` on `task`; `log` receives each progress and validation line.
AlgorithmicRun train_algorithmic(SequenceClassifier& model, const datasets::SequenceTask& task,
                                 const AlgorithmicTraining& training, uint64_t shuffle_seed,
                                 const std::function<void(const std::string&)>& log = {},
                                 const RunPersistence& persistence = {});

// The identity of a run for RunPersistence: task, model and optimizer settings.
std::string algorithmic_run_identity(const AlgorithmicConfig& config, const datasets::SequenceTask& task);

// The history as JSON lines (metrics.jsonl), one evaluation a line.
std::string history_jsonl(const std::vector<EvalPoint>& history);

}  // namespace loom::models
