#include "models/programs/checkpoint.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <map>
#include <sstream>

#include "autodiff/grad_mode.h"
#include "engine/error.h"
#include "engine/file_io.h"
#include "engine/json.h"
#include "engine/ops.h"
#include "engine/safetensors.h"

namespace loom::models {

namespace fs = std::filesystem;

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
  LOOM_FAIL(path, ": metadata \"", key, "\" should be a number, got \"", text.substr(0, 40),
            text.size() > 40 ? "...\"" : "\"");
}

std::string number_text(double x) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.17g", x);  // exact round trip
  return buffer;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// The model file's metadata entry holding the checksum of vocab.json (checksum_text).
constexpr const char* kVocabChecksumKey = "vocab_checksum";

// A checkpoint written before loom stored checksums loads as it is, with one line saying so.
void note_if_unchecked(const std::string& checkpoint_dir, bool checksummed) {
  if (!checksummed)
    std::fprintf(stderr, "note: checkpoint %s carries no checksums (written before loom stored them), so damage to "
                 "its files cannot be detected\n", checkpoint_dir.c_str());
}

// Names of the carried state (TrainingState::carried_state) among the Adam tensors.
constexpr const char* kCarriedStatePrefix = "carried_state.";

// ".checkpoint-40.tmp-XXXXXX" (a directory being written) and "checkpoint.tmp-XXXXXX"
// (a link being renamed into place): what an interrupted save leaves.
bool is_temporary(const std::string& name) {
  return (starts_with(name, ".checkpoint-") || starts_with(name, std::string(kCheckpointLink) + ".tmp-")) &&
         name.find(".tmp-") != std::string::npos;
}

bool is_checkpoint_directory_name(const std::string& name) { return starts_with(name, "checkpoint-"); }

// The name the link points at ("checkpoint-40"), or "" without a link.
std::string link_target(const std::string& out_dir) {
  std::error_code ec;
  const fs::path link = fs::path(out_dir) / kCheckpointLink;
  if (!fs::is_symlink(fs::symlink_status(link, ec))) return "";
  return fs::read_symlink(link, ec).filename().string();
}

}  // namespace

// ---- models ---------------------------------------------------------------------------------

void save_model(const std::string& path, const Module& model, const std::map<std::string, std::string>& metadata) {
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  LOOM_CHECK(!ec, "save_model: cannot create the directory '", parent.string(), "': ", ec.message());
  save_safetensors(path, model_tensors(model), metadata);
}

void check_finite(const NamedTensors& tensors, const std::string& what) {
  for (const auto& [name, tensor] : tensors) {
    if (tensor.dtype() == DType::i64 || tensor.numel() == 0) continue;
    const Tensor t = tensor.to(Device::cpu).to(DType::f64).contiguous();
    const std::vector<double> v = t.to_vector<double>();
    int64_t bad = 0, first = -1;
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(v[i])) bad += 1, first = first < 0 ? static_cast<int64_t>(i) : first;
    LOOM_CHECK(bad == 0, what, ": tensor '", name, "' holds ", bad, " non-finite value", bad > 1 ? "s" : "",
               " (the first, at flat index ", first, ", is ", v[static_cast<size_t>(std::max<int64_t>(first, 0))], ")");
  }
}

namespace {

// load_model, returning the file without its tensors: the metadata and whether it was checksummed.
SafetensorsFile load_model_file(const std::string& path, Module& model) {
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
  // A model with NaN or infinite weights computes nothing useful: refuse it here
  // rather than print garbage.
  check_finite(file.tensors, "checkpoint " + path);

  NoGradGuard no_grad;  // copy_ refuses parameters while recording
  for (const auto& [name, t] : wanted) copy_(t, stored.at(name).to(t.device()));
  file.tensors.clear();
  return file;
}

}  // namespace

std::map<std::string, std::string> load_model(const std::string& path, Module& model) {
  return load_model_file(path, model).metadata;
}

// ---- checkpoint directories -----------------------------------------------------------------

std::string find_checkpoint(const std::string& path) {
  std::error_code ec;
  fs::path p(path);
  LOOM_CHECK(fs::exists(p, ec), "checkpoint '", path, "' does not exist",
             fs::is_symlink(fs::symlink_status(p, ec)) ? " (a link to nothing)" : "");
  if (fs::is_regular_file(p, ec)) {
    LOOM_CHECK(p.filename() == kModelFile, "'", path, "' is not a checkpoint: expected a run directory, a checkpoint ",
               "directory or the ", kModelFile, " inside one");
    p = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  } else if (!fs::exists(p / kModelFile, ec) && fs::exists(p / kCheckpointLink, ec)) {
    p /= kCheckpointLink;  // a run directory
  }
  const fs::path dir = fs::canonical(p, ec);
  LOOM_CHECK(!ec && fs::is_regular_file(dir / kModelFile, ec), "'", path, "' holds no checkpoint: expected a run ",
             "directory with a '", kCheckpointLink, "' link, a checkpoint directory with ", kModelFile, ", or that ",
             kModelFile);
  return dir.string();
}

std::string save_checkpoint(const std::string& out_dir, const Module& model, const Adam& optimizer,
                            const TrainingState& state) {
  const std::string step = std::to_string(state.step);
  const std::string where = "checkpoint of step " + step;
  // Non-finite values never reach the disk: the previous checkpoint stays the newest.
  const NamedTensors model_state = model_tensors(model);
  NamedTensors optimizer_state = optimizer.state_tensors();
  for (const auto& [name, t] : state.carried_state) optimizer_state.push_back({kCarriedStatePrefix + name, t});
  check_finite(model_state, "cannot save the " + where + ": the model");
  check_finite(optimizer_state, "cannot save the " + where + ": the optimizer state");
  const std::string vocab_json = datasets::CharTokenizer(state.vocab).to_json() + "\n";
  const std::string vocab_checksum = checksum_text(vocab_json.data(), vocab_json.size());

  // 1. Everything into a temporary directory (each file written, fsynced and renamed into it).
  const fs::path run(out_dir);
  const std::string temporary = io::make_temporary_directory((run / (".checkpoint-" + step + ".tmp-")).string());
  std::string name = "checkpoint-" + step;
  std::error_code ec;
  for (int n = 2; fs::exists(run / name, ec); ++n) name = "checkpoint-" + step + "-" + std::to_string(n);
  const fs::path final_dir = run / name;
  std::map<std::string, std::string> optimizer_metadata = {
      {"format", "loom"},
      {"step", step},
      {"elapsed_seconds", number_text(state.elapsed_seconds)},
      {"config", state.config_json},
      {"train_batcher", state.train_batcher.to_json()},
      {"dropout_rng_seed", std::to_string(state.dropout_seed)},
      {"dropout_rng_offset", std::to_string(state.dropout_offset)}};
  if (state.best_valid_step >= 0) {
    optimizer_metadata["best_valid_loss"] = number_text(state.best_valid_loss);
    optimizer_metadata["best_valid_step"] = std::to_string(state.best_valid_step);
    optimizer_metadata["evaluations_since_best"] = std::to_string(state.evaluations_since_best);
  }
  try {
    save_model((fs::path(temporary) / kModelFile).string(), model,
               {{"format", "loom"}, {"step", step}, {"config", state.config_json}, {kVocabChecksumKey, vocab_checksum}});
    save_safetensors((fs::path(temporary) / kOptimizerFile).string(), optimizer_state, optimizer_metadata);
    io::write_file_atomically((fs::path(temporary) / kVocabFile).string(), vocab_json);
    // 2. Complete and durable: give it its name.
    io::rename_path(temporary, final_dir.string());
  } catch (...) {
    std::error_code ec;
    fs::remove_all(temporary, ec);
    throw;
  }
  // 3. Point the link at it. Until the link's rename, the old checkpoint is the newest.
  try {
    io::sync_directory(out_dir);
    io::replace_symlink((run / kCheckpointLink).string(), name);
  } catch (...) {
    std::error_code ec;
    if (link_target(out_dir) != name) fs::remove_all(final_dir, ec);
    throw;
  }
  // 4. The new one is durable: the old one and any leftovers can go.
  remove_stale_checkpoints(out_dir);
  return final_dir.string();
}

datasets::CharTokenizer parse_vocab(const std::string& text, const std::string& where) {
  // A list of strings nests one level; the check keeps a deeply nested file from
  // reaching the recursive parts of the JSON library.
  check_json_depth(text, where, 2);
  datasets::CharTokenizer tokenizer;
  try {
    tokenizer = datasets::CharTokenizer::from_json(text);
  } catch (const Error& e) {
    LOOM_FAIL(where, e.what());
  }
  // Every vocabulary train writes is the sorted set of the text's bytes; any other
  // order maps ids to the wrong characters and prints plausible-looking garbage.
  const std::string& chars = tokenizer.chars();
  for (size_t i = 1; i < chars.size(); ++i)
    LOOM_CHECK(static_cast<unsigned char>(chars[i - 1]) < static_cast<unsigned char>(chars[i]), where,
               "the characters are not in ascending byte order (entry ", i, " comes before entry ", i - 1,
               "), so ids would decode to the wrong characters; a vocabulary is the sorted set of its text's bytes");
  return tokenizer;
}

datasets::CharTokenizer load_checkpoint_vocab(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / kVocabFile).string();
  std::ifstream in(path, std::ios::binary);
  LOOM_CHECK(in.is_open(), "cannot open the vocabulary '", path, "': ", io::system_error_text());
  std::stringstream read;
  read << in.rdbuf();
  const std::string text = read.str();
  // Its checksum is in the model file, whose header checksum vouches for it; a checkpoint
  // written before loom stored checksums has none.
  const auto metadata = load_safetensors_metadata((fs::path(checkpoint_dir) / kModelFile).string());
  const auto stored = metadata.find(kVocabChecksumKey);
  if (stored != metadata.end()) {
    const std::string actual = checksum_text(text.data(), text.size());
    LOOM_CHECK(actual == stored->second, "the vocabulary '", path, "' is damaged: it does not match the checksum ",
               "that ", kModelFile, " records for it (", stored->second, " stored, ", actual, " read)");
  }
  return parse_vocab(text, "'" + path + "': ");
}

TrainedModel load_trained_model(const std::string& path) {
  TrainedModel t;
  t.checkpoint_dir = find_checkpoint(path);
  const std::string model_file = (fs::path(t.checkpoint_dir) / kModelFile).string();
  const auto metadata = load_safetensors_metadata(model_file);
  const auto config_entry = metadata.find("config");
  LOOM_CHECK(config_entry != metadata.end(), model_file,
             ": metadata has no \"config\", so the model cannot be rebuilt (was it written by train?)");
  t.config = parse_train_config(config_entry->second, model_file + " (config)");
  t.tokenizer = load_checkpoint_vocab(t.checkpoint_dir);
  LOOM_CHECK(t.tokenizer.vocab_size() == t.config.model.vocab, t.checkpoint_dir, "/", kVocabFile, " has ",
             t.tokenizer.vocab_size(), " tokens but the model was trained with ", t.config.model.vocab);
  t.model = make_model(t.config.model);
  const bool checksummed = load_model_file(model_file, *t.model).checksummed;  // refuses non-finite weights
  note_if_unchecked(t.checkpoint_dir, checksummed);
  const auto step = metadata.find("step");
  t.step = step != metadata.end() ? step->second : "?";
  return t;
}

TrainingState load_checkpoint(const std::string& path, Module& model, Adam& optimizer) {
  const std::string dir = find_checkpoint(path);
  const std::string model_path = (fs::path(dir) / kModelFile).string();
  const std::string optim_path = (fs::path(dir) / kOptimizerFile).string();
  std::error_code ec;
  LOOM_CHECK(fs::exists(optim_path, ec), "cannot resume from ", path, ": the optimizer state ", optim_path,
             " is missing");
  // Read and check everything before changing the model.
  SafetensorsFile optim = read_safetensors(optim_path);
  const auto& meta = optim.metadata;
  TrainingState s;
  s.step = parse_number<int64_t>(required(meta, "step", optim_path), "step", optim_path);
  s.elapsed_seconds = parse_number<double>(required(meta, "elapsed_seconds", optim_path), "elapsed_seconds", optim_path);
  s.config_json = required(meta, "config", optim_path);
  const std::string& batcher = required(meta, "train_batcher", optim_path);
  check_json_depth(batcher, optim_path + ": metadata \"train_batcher\": ", 1);
  try {
    s.train_batcher = datasets::BatcherState::from_json(batcher);
  } catch (const std::exception& e) {
    LOOM_FAIL(optim_path, ": metadata \"train_batcher\" ", quote_excerpt(batcher), " is not a batcher state: ", e.what());
  }
  s.dropout_seed = parse_number<uint64_t>(required(meta, "dropout_rng_seed", optim_path), "dropout_rng_seed", optim_path);
  s.dropout_offset =
      parse_number<uint64_t>(required(meta, "dropout_rng_offset", optim_path), "dropout_rng_offset", optim_path);
  // Early stopping's record: all three keys or none (a checkpoint from before it existed).
  if (meta.count("best_valid_step")) {
    s.best_valid_loss = parse_number<double>(required(meta, "best_valid_loss", optim_path), "best_valid_loss", optim_path);
    s.best_valid_step = parse_number<int64_t>(meta.at("best_valid_step"), "best_valid_step", optim_path);
    s.evaluations_since_best = parse_number<int64_t>(required(meta, "evaluations_since_best", optim_path),
                                                     "evaluations_since_best", optim_path);
    LOOM_CHECK(s.best_valid_step >= 0 && s.best_valid_step <= s.step && s.evaluations_since_best >= 0 &&
                   std::isfinite(s.best_valid_loss),
               optim_path, ": metadata best_valid_step ", s.best_valid_step, ", evaluations_since_best ",
               s.evaluations_since_best, ", best_valid_loss ", s.best_valid_loss, " do not describe validations up to step ",
               s.step);
  }
  s.vocab = load_checkpoint_vocab(dir).chars();
  check_finite(optim.tensors, "checkpoint " + optim_path);
  NamedTensors adam_state;
  for (auto& [name, t] : optim.tensors) {
    if (starts_with(name, kCarriedStatePrefix)) s.carried_state.push_back({name.substr(std::strlen(kCarriedStatePrefix)), t});
    else adam_state.push_back({name, t});
  }

  const std::string model_step = required(load_safetensors_metadata(model_path), "step", model_path);
  LOOM_CHECK(model_step == std::to_string(s.step), model_path, " is at step ", model_step, " but ", optim_path,
             " is at step ", s.step, " (the files come from different saves)");
  const bool model_checksummed = load_model_file(model_path, model).checksummed;
  try {
    optimizer.load_state_tensors(adam_state);
  } catch (const Error& e) {
    throw Error(optim_path + ": " + e.what());
  }
  note_if_unchecked(dir, model_checksummed && optim.checksummed);
  return s;
}

int64_t latest_checkpoint_step(const std::string& out_dir) {
  if (link_target(out_dir).empty()) return -1;
  const std::string model_path = (fs::path(out_dir) / kCheckpointLink / kModelFile).string();
  return parse_number<int64_t>(required(load_safetensors_metadata(model_path), "step", model_path), "step", model_path);
}

int remove_stale_checkpoints(const std::string& out_dir) {
  std::error_code ec;
  const std::string current = link_target(out_dir);
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(out_dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool old_checkpoint = is_checkpoint_directory_name(name) && name != current && entry.is_directory(ec);
    if (is_temporary(name) || old_checkpoint) stale.push_back(entry.path());
  }
  for (const fs::path& p : stale) fs::remove_all(p, ec);
  return static_cast<int>(stale.size());
}

void remove_all_checkpoints(const std::string& out_dir) {
  std::error_code ec;
  fs::remove(fs::path(out_dir) / kCheckpointLink, ec);
  remove_stale_checkpoints(out_dir);
}

}  // namespace loom::models
