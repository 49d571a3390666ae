// checkpoint.h: saving and loading models and whole training runs.
//
// A checkpoint is two safetensors files:
//
//   <name>.safetensors        the model: named_parameters() + named_buffers() under
//                             their exact (labml state_dict) names, so PyTorch reads it
//                             with safetensors.torch.load_file + load_state_dict.
//                             Metadata: "format" = "loom", "step", "config" (the
//                             training config JSON, from which generate rebuilds the model).
//   <name>.optim.safetensors  what resuming needs besides the model: the Adam moments
//                             and step counts ("<param>.exp_avg", ...; see optim.h) and, as
//                             metadata, the step, the training batcher's state, the RNG state and
//                             the config, so a resumed run continues the same trajectory.
//
// Each file is written atomically (save_safetensors); the model file is written
// last and both carry the step, so a crash between the two is detected on load.
#pragma once

#include <map>
#include <string>

#include "datasets/batcher.h"
#include "models/module.h"
#include "models/optim.h"

namespace loom::models {

// "run/model.safetensors" -> "run/model.optim.safetensors".
std::string optimizer_state_path(const std::string& model_path);

// Writes the model's parameters and buffers; `metadata` is stored as given.
void save_model(const std::string& path, const Module& model, const std::map<std::string, std::string>& metadata = {});

// Reads `path`, checks every name, shape and dtype against the model (listing
// every missing, unexpected and mismatched tensor in one error, changing
// nothing), then copies the values into the model's tensors in place.
// Returns the file's metadata.
std::map<std::string, std::string> load_model(const std::string& path, Module& model);

// Everything besides the tensors that decides how training continues.
struct TrainingState {
  int64_t step = 0;              // optimizer steps taken
  double elapsed_seconds = 0;    // training time so far
  std::string config_json;       // the run's TrainConfig (to_json)
  datasets::BatcherState train_batcher;
  uint64_t dropout_seed = 0, dropout_offset = 0;  // the model's dropout Generator
};

// save_model(path) with the state's step and config, then the optimizer file.
void save_checkpoint(const std::string& path, const Module& model, const Adam& optimizer, const TrainingState& state);

// load_model(path) and the optimizer file beside it; returns the training state.
TrainingState load_checkpoint(const std::string& path, Module& model, Adam& optimizer);

}  // namespace loom::models
