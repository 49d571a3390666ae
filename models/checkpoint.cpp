#include "models/checkpoint.h"

#include <filesystem>
#include <map>

#include "autodiff/grad_mode.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/safetensors.h"

namespace loom::models {

std::string optimizer_state_path(const std::string& model_path) {
  const std::string suffix = ".safetensors";
  const bool has_suffix = model_path.size() > suffix.size() &&
                          model_path.compare(model_path.size() - suffix.size(), suffix.size(), suffix) == 0;
  return (has_suffix ? model_path.substr(0, model_path.size() - suffix.size()) : model_path) + ".optim.safetensors";
}

namespace {

// Parameters, then buffers: the state_dict's tensors.
NamedTensors model_tensors(const Module& model) {
  NamedTensors all = model.named_parameters();
  for (auto& entry : model.named_buffers()) all.push_back(entry);
  return all;
}

std::string describe_type(const Tensor& t) { return std::string(dtype_name(t.dtype())) + shape_str(t.shape()); }

const std::string& required(const std::map<std::string, std::string>& metadata, const std::string& key,
                            const std::string& path) {
  const auto it = metadata.find(key);
  LOOM_CHECK(it != metadata.end(), path, ": metadata has no \"", key, "\" (not a loom training checkpoint?)");
  return it->second;
}

template <class T>
T parse_number(const std::string& text, const std::string& key, const std::string& path) {
  try {
    size_t used = 0;
    T value;
    if constexpr (std::is_same_v<T, double>) value = std::stod(text, &used);
    else if constexpr (std::is_same_v<T, uint64_t>) value = std::stoull(text, &used);
    else value = std::stoll(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  LOOM_FAIL(path, ": metadata \"", key, "\" should be a number, got \"", text, "\"");
}

std::string number_text(double x) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.17g", x);  // exact round trip
  return buffer;
}

}  // namespace

void save_model(const std::string& path, const Module& model, const std::map<std::string, std::string>& metadata) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  save_safetensors(path, model_tensors(model), metadata);
}

std::map<std::string, std::string> load_model(const std::string& path, Module& model) {
  SafetensorsFile file = read_safetensors(path);
  std::map<std::string, Tensor> stored(file.tensors.begin(), file.tensors.end());
  const NamedTensors wanted = model_tensors(model);

  // Collect every problem first, so one run of a mismatched checkpoint shows them all.
  std::vector<std::string> problems;
  std::map<std::string, bool> in_model;
  for (const auto& [name, t] : wanted) {
    in_model[name] = true;
    const auto it = stored.find(name);
    if (it == stored.end()) {
      problems.push_back("missing: " + name + " " + describe_type(t));
    } else if (it->second.shape() != t.shape() || it->second.dtype() != t.dtype()) {
      problems.push_back("wrong shape or dtype: " + name + " is " + describe_type(it->second) +
                         " in the file, the model has " + describe_type(t));
    }
  }
  for (const auto& [name, t] : file.tensors)
    if (!in_model.count(name)) problems.push_back("unexpected: " + name + " " + describe_type(t));
  if (!problems.empty()) {
    std::string message = "checkpoint " + path + " does not match the model (" + std::to_string(problems.size()) +
                          " problem" + (problems.size() > 1 ? "s" : "") + "):";
    for (const std::string& p : problems) message += "\n  " + p;
    throw Error(message);
  }

  NoGradGuard no_grad;  // copy_ refuses parameters while recording
  for (const auto& [name, t] : wanted) copy_(t, stored.at(name).to(t.device()));
  return file.metadata;
}

void save_checkpoint(const std::string& path, const Module& model, const Adam& optimizer, const TrainingState& state) {
  const std::string step = std::to_string(state.step);
  // The optimizer file first: the model file is what a user points at, and its
  // step is checked against this one on load.
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  save_safetensors(optimizer_state_path(path), optimizer.state_tensors(),
                   {{"format", "loom"},
                    {"step", step},
                    {"elapsed_seconds", number_text(state.elapsed_seconds)},
                    {"config", state.config_json},
                    {"train_batcher", state.train_batcher.to_json()},
                    {"dropout_rng_seed", std::to_string(state.dropout_seed)},
                    {"dropout_rng_offset", std::to_string(state.dropout_offset)}});
  save_model(path, model, {{"format", "loom"}, {"step", step}, {"config", state.config_json}});
}

TrainingState load_checkpoint(const std::string& path, Module& model, Adam& optimizer) {
  const std::string optim_path = optimizer_state_path(path);
  LOOM_CHECK(std::filesystem::exists(optim_path), "cannot resume from ", path, ": the optimizer state ", optim_path,
             " is missing");
  // Read and check the optimizer file before changing the model.
  SafetensorsFile optim = read_safetensors(optim_path);
  const auto& meta = optim.metadata;
  TrainingState s;
  s.step = parse_number<int64_t>(required(meta, "step", optim_path), "step", optim_path);
  s.elapsed_seconds = parse_number<double>(required(meta, "elapsed_seconds", optim_path), "elapsed_seconds", optim_path);
  s.config_json = required(meta, "config", optim_path);
  s.train_batcher = datasets::BatcherState::from_json(required(meta, "train_batcher", optim_path));
  s.dropout_seed = parse_number<uint64_t>(required(meta, "dropout_rng_seed", optim_path), "dropout_rng_seed", optim_path);
  s.dropout_offset =
      parse_number<uint64_t>(required(meta, "dropout_rng_offset", optim_path), "dropout_rng_offset", optim_path);

  const std::string model_step = required(load_safetensors_metadata(path), "step", path);
  LOOM_CHECK(model_step == std::to_string(s.step), path, " is at step ", model_step, " but ", optim_path, " is at step ",
             s.step, " (a save was interrupted?)");
  load_model(path, model);
  try {
    optimizer.load_state_tensors(optim.tensors);
  } catch (const Error& e) {
    throw Error(optim_path + ": " + e.what());
  }
  return s;
}

}  // namespace loom::models
