// checkpoint.h: saving and loading models and whole training runs.
//
// A training checkpoint is one directory, which appears whole or not at all:
//
//   <out_dir>/checkpoint -> checkpoint-<step>     a symbolic link naming the newest complete one
//   <out_dir>/checkpoint-<step>/
//       model.safetensors       the model: named_parameters() + named_buffers() under their exact
//                               (labml state_dict) names, so PyTorch reads it with
//                               safetensors.torch.load_file + load_state_dict. Metadata: "format" =
//                               "loom", "step", "config" (generate rebuilds the model from it),
//                               "vocab_checksum" (the CRC-32C of vocab.json).
//       optimizer.safetensors   what resuming needs besides the model: the Adam moments and step
//                               counts ("<param>.exp_avg", ...; see optim.h) and, as metadata, the
//                               step, the training batcher's state, the RNG state and the config.
//       vocab.json              the tokenizer's characters in id order.
//
// save_checkpoint writes the three files into a temporary directory
// (".checkpoint-<step>.tmp-XXXXXX"), fsyncs each file and the directory, renames it
// to checkpoint-<step>, points the link at it (a new link renamed over the old one,
// which is atomic) and fsyncs out_dir. Only then are the older checkpoint and any
// temporaries removed. So a crash or a failed write at any moment leaves the link
// naming a complete checkpoint, the old one or the new, and the next save clears
// what the crash left behind. All file system calls go through io::file_system()
// (engine/file_io.h), where the tests inject failures.
//
// Both safetensors files carry the checksums of their tensors and header
// (engine/safetensors.h), and the model file the vocabulary's; every load here
// verifies them and refuses a damaged file, naming it and the tensor. A checkpoint
// written before loom stored checksums loads unchecked, with one line on stderr
// saying so.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "datasets/batcher.h"
#include "datasets/char_tokenizer.h"
#include "models/programs/config.h"
#include "models/families/language_model.h"
#include "models/blocks/module.h"
#include "models/blocks/optim.h"

namespace loom::models {

// The names inside a run directory and a checkpoint directory.
inline constexpr const char* kCheckpointLink = "checkpoint";
inline constexpr const char* kModelFile = "model.safetensors";
inline constexpr const char* kOptimizerFile = "optimizer.safetensors";
inline constexpr const char* kVocabFile = "vocab.json";

// Writes the model's parameters and buffers; `metadata` is stored as given.
void save_model(const std::string& path, const Module& model, const std::map<std::string, std::string>& metadata = {});

// Reads `path`, checks every name, shape and dtype against the model (listing
// every missing, unexpected and mismatched tensor in one error, changing
// nothing), then copies the values into the model's tensors in place.
// Returns the file's metadata.
std::map<std::string, std::string> load_model(const std::string& path, Module& model);

// Throws naming the tensor, the count and the first position when any tensor
// holds NaN or infinity. `what` starts the message.
void check_finite(const NamedTensors& tensors, const std::string& what);

// Everything besides the tensors that decides how training continues.
struct TrainingState {
  int64_t step = 0;              // optimizer steps taken
  double elapsed_seconds = 0;    // training time so far
  std::string config_json;       // the run's TrainConfig (to_json)
  datasets::BatcherState train_batcher;
  uint64_t dropout_seed = 0, dropout_offset = 0;  // the model's dropout Generator
  std::string vocab;             // the tokenizer's characters in id order
  // data.carry_over: the model's carried state (DecodeState::tensors()), stored in the
  // optimizer file under "carried_state.<name>"; empty otherwise.
  NamedTensors carried_state;
  // Early stopping (training.patience): the lowest validation loss so far, the step of
  // that validation (-1: none yet) and the validations since it without a lower loss.
  // A checkpoint written before early stopping existed has none: it reads as -1 and 0.
  double best_valid_loss = 0;
  int64_t best_valid_step = -1;
  int64_t evaluations_since_best = 0;
};

// Where a checkpoint is. `path` may be a run directory (its "checkpoint" link is
// followed), a checkpoint directory, or the model.safetensors inside one. Returns
// the checkpoint directory with every link resolved, so that all its files are read
// from one directory even while a concurrent save moves the link.
std::string find_checkpoint(const std::string& path);

// Writes a checkpoint of `model`, `optimizer` and `state` into run directory `out_dir`
// as described above and returns the new checkpoint directory. Refuses non-finite
// tensors. The caller must be the only writer of out_dir (the Trainer holds a lock).
std::string save_checkpoint(const std::string& out_dir, const Module& model, const Adam& optimizer,
                            const TrainingState& state);

// The checkpoint at `path` (find_checkpoint) into model and optimizer; returns the
// training state. Everything is read and checked before the model changes.
TrainingState load_checkpoint(const std::string& path, Module& model, Adam& optimizer);

// The vocabulary of the checkpoint directory `checkpoint_dir`: its vocab.json,
// checked against the checksum in the model file's metadata when it has one, read
// with parse_vocab.
datasets::CharTokenizer load_checkpoint_vocab(const std::string& checkpoint_dir);
// A vocab.json text: a JSON list of one-character strings (CharTokenizer::to_json) whose
// characters are in ascending byte order, as every vocabulary built from a text is.
datasets::CharTokenizer parse_vocab(const std::string& text, const std::string& where);

// A trained model ready to use (generate, context_probe): the checkpoint at `path`
// (find_checkpoint), its model rebuilt from the config in the model file's metadata
// and loaded (non-finite weights refused), and its vocabulary, checked against the config.
struct TrainedModel {
  std::string checkpoint_dir;
  TrainConfig config;
  datasets::CharTokenizer tokenizer;
  std::unique_ptr<LanguageModel> model;
  std::string step;  // the "step" metadata, "?" when absent
};
TrainedModel load_trained_model(const std::string& path);

// The step of the checkpoint out_dir's link names, or -1 when there is none.
int64_t latest_checkpoint_step(const std::string& out_dir);

// Removes what interrupted saves left in out_dir: temporary directories and links,
// and checkpoint directories the link does not name. Returns how many entries it removed.
int remove_stale_checkpoints(const std::string& out_dir);

// Removes the link and every checkpoint directory (a run started over with --overwrite).
void remove_all_checkpoints(const std::string& out_dir);

}  // namespace loom::models
