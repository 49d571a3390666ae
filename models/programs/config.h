// config.h: the JSON configuration of a training run, as typed structs.
//
//   {
//     "model":     {"family": "fast_weights", "d_model": 512, ...},   ModelConfig (language_model.h)
//     "data":      {"path": "data/tinyshakespeare.txt", "seq_len": 128, "batch_size": 16},
//     "optimizer": {"kind": "noam", "form": "labml", "lr": 1.0, "betas": [0.9, 0.999], ...},
//     "training":  {"steps": 1000, "eval_interval": 100, "out_dir": "runs/fast_weights", ...},
//     "sample":    {"prompt": "It is", "length": 25}
//   }
//
// Every key is optional. Defaults are those of the family's labml experiment
// (models/FAMILIES.md §2.1, §3.1, §4.1): the family is read first, its defaults are laid
// down, then the file's values replace them. models/README.md has the table.
//
// Parsing is strict: unknown keys, wrong types and bad values throw one
// loom::Error that lists every problem, one line each, naming the key path:
//   run.json: model.heads: expected a positive integer, got -3
//   run.json: optimizer.betas[1]: expected a number in [0, 1), got 1.5
//   run.json: model.famly: unknown key (did you mean "family"?)
//   run.json: model.conv_width: not used by the bigram family (primer_ez use it)
//   run.json: duplicate key "optimizer.lr" (JSON keeps only one; give it once)
// so nothing runs on a config that does not mean what its author thinks.
#pragma once

#include <cstdint>
#include <string>

#include "models/families/language_model.h"

namespace loom::models {

struct DataConfig {
  // The text to train on. A relative path is taken from the working directory;
  // when the file is missing it is downloaded from `url` (empty: never download).
  std::string path = "data/tinyshakespeare.txt";
  std::string url = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";
  int64_t seq_len = 128;
  int64_t batch_size = 16;
  uint64_t seed = 0;  // shuffling and window offsets of the batcher
  // fast_weights only: batch row b is one contiguous stream of the text (no shuffling),
  // and each layer's final state of one batch is the next batch's initial state
  // (detached), so the model sees an unbounded context (models/FAMILIES.md §2.8).
  bool carry_over = false;
};

struct OptimizerConfig {
  std::string kind = "noam";   // adam (constant lr) | noam (warmup, then 1/sqrt(t) decay)
  std::string form = "labml";  // labml | pytorch (where eps goes: see optim.h)
  double lr = 1.0;
  double beta1 = 0.9, beta2 = 0.999;  // JSON: "betas": [beta1, beta2]
  double eps = 1e-8;
  int64_t warmup = 2000;  // noam only; noam's d_model is model.d_model
  double weight_decay = 0.0;
  double clip = 1.0;  // global gradient-norm limit; 0 turns clipping off
};

struct TrainingConfig {
  // How long: `steps` optimizer steps, or `epochs` passes over the training
  // batches (may be fractional). Give at most one; with neither, epochs = 128.
  int64_t steps = 0;
  double epochs = 128;
  int64_t log_interval = 10;          // steps between metric lines
  int64_t eval_interval = 500;        // steps between validations (+ a sample); 0: only at the end
  int64_t eval_batches = 8;           // validation batches per evaluation
  int64_t checkpoint_interval = 1000; // steps between checkpoints; 0: only at the end
  // Early stopping: training ends (with a checkpoint) after this many validations in a
  // row without a validation loss below the lowest so far; 0: off, run every step.
  int64_t patience = 0;
  std::string out_dir = "runs/fast_weights";  // checkpoints and the metrics log go here
  std::string log = "metrics.jsonl";  // JSON-lines metrics, inside out_dir; "" for none
  int64_t threads = 0;                // CPU threads; 0: OMP_NUM_THREADS or all cores
  std::string device = "cpu";         // cpu | cuda
};

struct SampleConfig {
  std::string prompt = "It is";
  int64_t length = 25;  // greedy characters generated at each validation; 0: none
};

struct TrainConfig {
  ModelConfig model;
  // True when model.vocab is left to the data (the tokenizer's size); the
  // training program sets it and clears this before saving the config.
  bool vocab_from_data = true;
  DataConfig data;
  OptimizerConfig optimizer;
  TrainingConfig training;
  SampleConfig sample;

  // The number of optimizer steps the run ends at, given the batches per epoch.
  int64_t total_steps(int64_t batches_per_epoch) const;
};

// The defaults of `family` (unknown families throw).
TrainConfig default_config(const std::string& family);

// Parses and validates a config; `source` (e.g. the file name) starts error messages.
TrainConfig parse_train_config(const std::string& json_text, const std::string& source = "config");
TrainConfig load_train_config(const std::string& path);

// Every key, so that parse_train_config(to_json(c)) gives c back.
std::string to_json(const TrainConfig& config, int indent = 2);

// Whether `family` reads model.<key>; a config giving a key its family does not read is refused.
bool family_uses_key(const std::string& family, const std::string& key);

// The families a config may name.
inline constexpr const char* kFamilies[] = {"transformer", "primer_ez", "fast_weights", "feedback", "bigram"};

}  // namespace loom::models
