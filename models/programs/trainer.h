// trainer.h: the training loop shared by the `train` program and the tests.
//
// One step (models/FAMILIES.md §1.5): the next shuffled batch [L, B] -> model.forward ->
// logits [L, B, V] -> mean cross-entropy over all L·B positions -> backward ->
// clip the global grad norm -> Adam step -> drop the grads. Every eval_interval
// steps: the validation loss and accuracy over eval_batches batches (eval mode,
// no grad) and a greedy sample from the prompt. Every checkpoint_interval steps
// and at the end: a checkpoint (checkpoint.h) that resumes the same trajectory.
// With training.patience, training ends once that many validations in a row have
// not lowered the best validation loss (early stopping).
#pragma once

#include <atomic>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "datasets/batcher.h"
#include "datasets/text_dataset.h"
#include "engine/file_io.h"
#include "models/programs/config.h"
#include "models/programs/distributed.h"
#include "models/families/language_model.h"
#include "models/blocks/optim.h"

namespace loom::models {

// Sets config.model.vocab from the tokenizer when the config leaves it to the
// data; otherwise checks that they agree. Afterwards vocab_from_data is false,
// so the config saved with a checkpoint records the size.
void resolve_vocab(TrainConfig& config, const datasets::CharTokenizer& tokenizer);

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
  // When set (train's FMA probe), run again at each evaluation, and MFU is against
  // the best reading so far: a probe that caught other processes reads low, and
  // would make every MFU look higher than it is.
  std::function<double()> probe_peak_gflops;
  bool overwrite = false;   // a fresh run may replace the run already in out_dir
  // Set (e.g. by a SIGINT handler) to stop: the step in progress finishes, a
  // checkpoint is saved and run() returns.
  const std::atomic<bool>* stop = nullptr;
};

// A loss above this many times ln(vocab) (a uniform guess costs 1x) means training
// diverged: it stops rather than save such weights.
inline constexpr double kExplodingLossFactor = 100;

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

  // A checkpoint (checkpoint.h) of the current state in out_dir; returns its directory.
  // The weights are checked first (finite, and a sane loss on the last batch): weights
  // of a diverged run are never saved.
  std::string save();
  // Takes out_dir for this process (io::DirectoryLock, kept until the trainer is
  // destroyed): out_dir is created and must be writable, and a run holding it is
  // refused. resume() and prepare() take it first, before they read anything; a
  // program calls it itself before it looks into out_dir on its own. Only the writer
  // rank locks; elsewhere, and when already held, it does nothing.
  void lock_out_dir();

  // Restores model, optimizer, batchers, dropout RNG and step from the checkpoint at
  // `path` (a run directory, a checkpoint directory or its model.safetensors); the
  // checkpoint's model, data settings and vocabulary must match this trainer's.
  // Locks out_dir first (lock_out_dir); a failed resume lets it go again.
  void resume(const std::string& path);

  // Everything that can be checked before the first step, with out_dir locked first
  // (lock_out_dir): a run that did not resume() refuses an out_dir holding another run
  // unless `overwrite`, which removes it; the log must not be a checkpoint path; the
  // sample prompt must be in the vocabulary. The metrics log is opened for appending.
  // A refused run leaves out_dir free. run() calls it when it was not called.
  void prepare(bool overwrite = false);

  // Data-parallel training (models/programs/distributed.h): this trainer is rank comm.rank()
  // of comm.size(). Call before resume() and prepare(); no collective runs until
  // run() (which first broadcasts rank 0's parameters), so start-up errors can be
  // agreed on first. Only rank 0 touches out_dir, logs, evaluates and samples.
  void distribute(comm::Communicator& comm);
  const DataParallel* parallel() const { return parallel_.get(); }
  // True on the one process that writes checkpoints, metrics and progress.
  bool is_writer() const { return !parallel_ || parallel_->rank() == 0; }

  // Steps until total_steps(), or until training.patience validations in a row bring
  // no lower validation loss (then it saves and returns true), logging, evaluating and
  // checkpointing on the way. Returns false when options.stop ended it early (after saving).
  bool run(const RunOptions& options = {});

  int64_t step() const { return step_; }
  // Early stopping (training.patience): the lowest validation loss so far and its step
  // (-1: no validation yet); stopped_early() once patience validations in a row have
  // not gone below it. All three survive a resume.
  double best_valid_loss() const { return best_valid_loss_; }
  int64_t best_valid_step() const { return best_valid_step_; }
  bool stopped_early() const;
  int64_t total_steps() const;
  int64_t batches_per_epoch() const { return train_batches_.batches_per_epoch(); }
  std::string checkpoint_path() const;  // <out_dir>/checkpoint, the link to the newest
  // <out_dir>/curves.svg (models/programs/charts.h), redrawn from the metrics log at every
  // evaluation; "" when training.log is off.
  std::string chart_path() const;
  const TrainConfig& config() const { return config_; }
  Adam& optimizer() { return *optimizer_; }
  const datasets::TextDataset& data() const { return data_; }

 private:
  datasets::Batch to_device(datasets::Batch batch) const;
  void write_metrics(const nlohmann::ordered_json& entry);
  void draw_chart();
  void check_loss(double loss, int64_t step, const char* what) const;
  void record_validation(double loss);  // updates the early-stopping record
  void prepare_locked(bool overwrite);        // prepare() after the lock is taken
  void resume_locked(const std::string& path);  // resume() after the lock is taken
  // Runs `work` with out_dir locked; when it throws, the lock is let go.
  void with_out_dir_locked(const std::function<void()>& work);

  TrainConfig config_;
  LanguageModel& model_;
  datasets::TextDataset data_;
  Device device_;
  datasets::ShuffledBatcher train_batches_, valid_batches_;
  std::unique_ptr<Adam> optimizer_;
  int64_t step_ = 0;
  double elapsed_ = 0;  // seconds spent in run() so far, across resumes
  double best_valid_loss_ = 0;
  int64_t best_valid_step_ = -1, evaluations_since_best_ = 0;
  std::ofstream metrics_;
  std::string metrics_path_;  // "" when training.log is off
  bool resumed_ = false, prepared_ = false;
  int64_t saved_step_ = -1;    // the step of the newest checkpoint in out_dir (-1: none)
  io::DirectoryLock lock_;     // out_dir, from lock_out_dir() on
  datasets::Batch last_batch_;  // the batch of the latest step, for the check before a save
  // data.carry_over: the layers' states after the latest training batch, which the next
  // batch of the same epoch continues (null: zeros; an epoch starts from zeros).
  std::unique_ptr<DecodeState> carried_;
  Tensor forward_carried(const Tensor& input, bool epoch_start);
  std::unique_ptr<DataParallel> parallel_;  // null: one process
  bool parameters_synced_ = false;          // rank 0's parameters broadcast
  const std::atomic<bool>* stop_flag_ = nullptr;  // run()'s options.stop, agreed in each step
  bool stop_agreed_ = false;                // some rank asked to stop during the latest step

 public:
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;
};

}  // namespace loom::models
