// trainer.h: the training loop shared by the `train` program and the tests.
//
// One step (models/FAMILIES.md §1.5): the next shuffled batch [L, B] -> model.forward ->
// logits [L, B, V] -> mean cross-entropy over all L·B positions -> backward ->
// clip the global grad norm -> Adam step -> drop the grads. Every eval_interval
// steps: the validation loss and accuracy over eval_batches batches (eval mode,
// no grad) and a greedy sample from the prompt. Every checkpoint_interval steps
// and at the end: a checkpoint (checkpoint.h) that resumes the same trajectory.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "datasets/batcher.h"
#include "datasets/text_dataset.h"
#include "models/config.h"
#include "models/language_model.h"
#include "models/optim.h"

namespace loom::models {

// Sets config.model.vocab from the tokenizer when the config leaves it to the
// data; otherwise checks that they agree. Afterwards vocab_from_data is false,
// so the config saved with a checkpoint records the size.
void resolve_vocab(TrainConfig& config, const datasets::CharTokenizer& tokenizer);

// "<dir>/model.safetensors" -> "<dir>/model.vocab.json": the tokenizer beside a checkpoint.
std::string tokenizer_path(const std::string& checkpoint_path);

struct StepResult {
  double loss = 0;
  double grad_norm = 0;  // before clipping
  double lr = 0;
  int64_t tokens = 0;    // L·B of the batch
};

struct EvalResult {
  double loss = 0;      // mean over all positions of the batches
  double accuracy = 0;  // fraction of positions where argmax(logits) is the target
  std::string sample;   // greedy continuation of the prompt ("" when sample.length is 0)
};

struct RunOptions {
  bool progress = true;     // progress line on stderr, evaluations on stdout
  double peak_gflops = 0;   // for MFU; 0: unknown, MFU not shown
};

class Trainer {
 public:
  // The model must be built from config.model (after resolve_vocab) and live on
  // config.training.device. The trainer keeps a reference to it.
  Trainer(TrainConfig config, LanguageModel& model, datasets::TextDataset data);

  // One optimisation step on the next training batch.
  StepResult train_step();
  // Validation on the next eval_batches batches of the valid split, and the sample.
  EvalResult evaluate();
  std::string sample();

  // The checkpoint pair at `path` (checkpoint.h) and the tokenizer beside it.
  void save(const std::string& path) const;
  // Restores model, optimizer, batchers, dropout RNG and step from `path`; the
  // checkpoint's model and data settings must match this trainer's config.
  void resume(const std::string& path);

  // Steps until total_steps(), logging, evaluating and checkpointing on the way.
  void run(const RunOptions& options = {});

  int64_t step() const { return step_; }
  int64_t total_steps() const;
  int64_t batches_per_epoch() const { return train_batches_.batches_per_epoch(); }
  std::string checkpoint_path() const;  // <out_dir>/model.safetensors
  const TrainConfig& config() const { return config_; }
  Adam& optimizer() { return *optimizer_; }
  const datasets::TextDataset& data() const { return data_; }

 private:
  datasets::Batch to_device(datasets::Batch batch) const;
  void open_metrics_log();
  void write_metrics(const nlohmann::ordered_json& entry);

  TrainConfig config_;
  LanguageModel& model_;
  datasets::TextDataset data_;
  Device device_;
  datasets::ShuffledBatcher train_batches_, valid_batches_;
  std::unique_ptr<Adam> optimizer_;
  int64_t step_ = 0;
  double elapsed_ = 0;  // seconds spent in run() so far, across resumes
  std::ofstream metrics_;
};

}  // namespace loom::models
