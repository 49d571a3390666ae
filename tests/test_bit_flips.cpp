// test_bit_flips.cpp: a checkpoint with one flipped bit is refused, naming what is
// damaged; it never loads other weights, and nothing crashes.
//
// For each model family (fast_weights, feedback, primer_ez, transformer; tiny
// models) a real checkpoint is written with save_checkpoint, then single bits are
// flipped, one at a time, in every region of each of its files:
//   model.safetensors, optimizer.safetensors: the 8-byte header length, the
//     metadata object, the tensor entries, the header's padding, the tensor data;
//   vocab.json: every bit.
// After each flip the checkpoint is loaded both ways loom loads one (load_checkpoint,
// as a resume does, and load_trained_model, as generate does). Each load must either
// throw a loom::Error naming the damaged file (and, for a flip in tensor data, the
// tensor; for a header that still parses, saying the file is damaged) or return
// exactly the saved weights, optimizer state and training state: a harmless flip.
// With the checksums no flip is harmless, which the test checks too: CRC-32C
// catches every single-bit error; a flip in the header's padding makes either
// invalid JSON or a NUL byte (a space with bit 5 flipped), which the JSON parser
// would take for the end of its input and which the reader therefore refuses. Then the checkpoint written before checksums existed: it loads, with
// one line saying so.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "autodiff/grad_mode.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/programs/checkpoint.h"
#include "models/programs/config.h"
#include "models/families/language_model.h"
#include "tests/fused_check.h"
#include "tests/test_util.h"

namespace loom::test {

namespace fs = std::filesystem;

namespace {

// The vocabulary of the tiny models: five characters in byte order.
constexpr const char* kVocab = " abcd";

models::TrainConfig tiny_config(const std::string& family) {
  std::string model = R"("family": ")" + family + R"(", "d_model": 8, "heads": 2, "d_ff": 16, "layers": 2, "vocab": 5)";
  if (family == "fast_weights") model += R"(, "feature_map": "dpfp", "dpfp_nu": 1, "update_rule": "delta")";
  return models::parse_train_config("{\"model\": {" + model + "}, \"data\": {\"seq_len\": 8, \"batch_size\": 2}}");
}

// Bit-exact equality of two tensor lists (names, dtypes, shapes, bytes).
bool identical(const NamedTensors& a, const NamedTensors& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const Tensor &x = a[i].second, &y = b[i].second;
    if (a[i].first != b[i].first || x.shape() != y.shape() || !same_bits(x, y)) return false;
  }
  return true;
}

NamedTensors model_state(const models::LanguageModel& model) {
  NamedTensors all = model.named_parameters();
  for (auto& entry : model.named_buffers()) all.push_back(entry);
  return all;
}

// A family's model, trained one Adam step so that the optimizer holds moments, and
// saved as a checkpoint in `run`; what was saved is kept for the comparisons.
struct SavedCheckpoint {
  models::TrainConfig config;
  std::unique_ptr<models::LanguageModel> model;
  std::unique_ptr<models::Adam> adam;
  models::TrainingState state;
  NamedTensors weights, adam_state;
  std::string dir;  // the checkpoint directory

  SavedCheckpoint(const std::string& family, const std::string& run) : config(tiny_config(family)) {
    model = models::make_model(config.model);
    adam = std::make_unique<models::Adam>(model->named_parameters(), models::AdamOptions{},
                                          models::LrSchedule::constant(0.01));
    Generator gen(7);
    for (const Tensor& p : model->parameters()) p.set_grad(normal(p.shape(), 0, 1, gen));
    adam->step();
    adam->zero_grad();
    state.step = 1;
    state.config_json = models::to_json(config);
    state.train_batcher = {5, 0, 1};
    state.dropout_seed = 11;
    state.dropout_offset = 3;
    state.vocab = kVocab;
    fs::create_directories(run);
    dir = models::save_checkpoint(run, *model, *adam, state);
    weights = model_state(*model);
    for (auto& [name, t] : weights) t = t.clone();
    adam_state = adam->state_tensors();
    for (auto& [name, t] : adam_state) t = t.clone();
  }
};

// Loads the checkpoint at `dir` both ways. Returns "" when both loads gave exactly
// what was saved, the first error's message when one refused, and a description of
// the difference when one loaded something else (which the caller fails on).
std::string load_both_ways(const SavedCheckpoint& saved, const std::string& dir, bool* loaded_other) {
  *loaded_other = false;
  std::unique_ptr<models::LanguageModel> model = models::make_model(saved.config.model);
  models::Adam adam(model->named_parameters(), models::AdamOptions{}, models::LrSchedule::constant(0.01));
  models::TrainingState state;
  std::string error = error_of([&] { state = models::load_checkpoint(dir, *model, adam); });
  if (!error.empty()) return error;
  const bool same_state = state.step == saved.state.step && state.config_json == saved.state.config_json &&
                          state.train_batcher == saved.state.train_batcher &&
                          state.dropout_seed == saved.state.dropout_seed &&
                          state.dropout_offset == saved.state.dropout_offset && state.vocab == saved.state.vocab &&
                          state.carried_state.empty();
  if (!identical(model_state(*model), saved.weights) || !identical(adam.state_tensors(), saved.adam_state) ||
      !same_state) {
    *loaded_other = true;
    return "load_checkpoint loaded something other than what was saved";
  }
  models::TrainedModel trained;
  error = error_of([&] { trained = models::load_trained_model(dir); });
  if (!error.empty()) return error;
  if (!identical(model_state(*trained.model), saved.weights) || trained.tokenizer.chars() != kVocab ||
      models::to_json(trained.config) != saved.state.config_json) {
    *loaded_other = true;
    return "load_trained_model loaded something other than what was saved";
  }
  return "";
}

// A region of a file, [begin, end), where bits are flipped.
struct Region {
  std::string name;
  size_t begin, end;
};

// The regions of a safetensors file written by loom: the header's JSON is
// {"__metadata__":{...},"tensor":{...},...} followed by padding spaces.
std::vector<Region> safetensors_regions(const std::string& bytes) {
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<unsigned char>(bytes[i]);
  const size_t json_end = bytes.find_last_not_of(' ', 8 + header_size - 1) + 1;
  // The metadata object ends where the first tensor entry begins: at "},\"" after it;
  // the metadata's strings escape their quotes, so the first unescaped "}," + quote closes it.
  const size_t metadata_begin = bytes.find("{\"__metadata__\":") + 16;
  size_t metadata_end = metadata_begin;
  for (bool in_string = false, escaped = false;; ++metadata_end) {
    const char c = bytes[metadata_end];
    if (escaped) escaped = false;
    else if (c == '\\') escaped = true;
    else if (c == '"') in_string = !in_string;
    else if (!in_string && c == '}') break;
  }
  return {{"header length", 0, 8},
          {"metadata", metadata_begin, metadata_end + 1},
          {"tensor entries", metadata_end + 1, json_end},
          {"header padding", json_end, 8 + header_size},
          {"tensor data", 8 + header_size, bytes.size()}};
}

// The tensor whose bytes hold data byte `offset` (header order, back to back).
std::string tensor_at(const NamedTensors& tensors, size_t offset) {
  size_t end = 0;
  for (const auto& [name, t] : tensors) {
    end += static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
    if (offset < end) return name;
  }
  return "?";
}

// Flips bits at `flips` random positions of every region of the file `name` in the
// checkpoint (all bits of regions up to 16 bytes) and checks each load.
void flip_bits_of(const SavedCheckpoint& saved, const std::string& name, int flips, std::mt19937_64& random) {
  const std::string path = saved.dir + "/" + name;
  const std::string good = read_bytes(path);
  const bool is_vocab = name == models::kVocabFile;
  const std::vector<Region> regions =
      is_vocab ? std::vector<Region>{{"vocabulary", 0, good.size()}} : safetensors_regions(good);
  const NamedTensors tensors = is_vocab ? NamedTensors{} : load_safetensors(path);
  uint64_t header_size = 0;
  for (int i = 7; !is_vocab && i >= 0; --i) header_size = header_size << 8 | static_cast<unsigned char>(good[i]);

  for (const Region& region : regions) {
    if (region.begin == region.end) continue;  // no padding when the JSON fills whole words
    std::vector<size_t> bits;  // positions in bits from the file's start
    const size_t region_bits = 8 * (region.end - region.begin);
    if (region.end - region.begin <= 16 || is_vocab) {
      for (size_t b = 0; b < region_bits; ++b) bits.push_back(8 * region.begin + b);
    } else {
      for (int i = 0; i < flips; ++i) bits.push_back(8 * region.begin + random() % region_bits);
    }
    int refused = 0;
    for (size_t bit : bits) {
      const size_t byte = bit / 8;
      std::string damaged = good;
      damaged[byte] = static_cast<char>(damaged[byte] ^ (1 << (bit % 8)));
      write_bytes(path, damaged);
      bool loaded_other = false;
      const std::string message = load_both_ways(saved, saved.dir, &loaded_other);
      INFO(saved.config.model.family, ": ", name, ", ", region.name, ", byte ", byte, " bit ", bit % 8, ": ", message);
      REQUIRE_FALSE(loaded_other);  // never different weights, silently
      // No flip is harmless: each one is refused, naming the damaged file.
      REQUIRE_FALSE(message.empty());
      refused += 1;
      CHECK(contains(message, path));
      if (is_vocab) {
        CHECK(contains(message, "is damaged"));
      } else if (region.name == "tensor data") {
        const std::string tensor = tensor_at(tensors, byte - 8 - header_size);
        CHECK(contains(message, "is damaged"));
        CHECK(contains(message, "tensor '" + tensor + "'"));
      } else if (region.name != "header length" && nlohmann::json::accept(damaged.substr(8, header_size))) {
        // A header that still parses as JSON: its checksum tells, unless the flip made
        // two keys equal, which the reader refuses before it gets to the checksum.
        CHECK((contains(message, "is damaged") || contains(message, "duplicate key")));
      }
    }
    CHECK(refused == static_cast<int>(bits.size()));
  }
  write_bytes(path, good);
  bool loaded_other = false;
  REQUIRE(load_both_ways(saved, saved.dir, &loaded_other).empty());  // restored: loads again
}

// Everything written to stderr (fd 2) while `fn` runs.
template <class Fn>
std::string stderr_of(Fn&& fn) {
  std::fflush(stderr);
  char name[] = "/tmp/loom-test-stderr-XXXXXX";
  const int capture = ::mkstemp(name);
  REQUIRE(capture >= 0);
  const int saved = ::dup(2);
  ::dup2(capture, 2);
  fn();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  ::close(capture);
  const std::string text = read_bytes(name);
  ::unlink(name);
  return text;
}

}  // namespace

// One thread: the models are tiny, and thousands of loads would mostly wait on each other.
struct OneThread {
  int before = num_threads();
  OneThread() { set_num_threads(1); }
  ~OneThread() { set_num_threads(before); }
};

TEST_CASE("bit flips: every single-bit flip in any file of a checkpoint is refused, naming the damage") {
  const OneThread one_thread;
  std::mt19937_64 random(20261205);  // fixed: the same positions in every run
  for (const char* family : {"fast_weights", "feedback", "primer_ez", "transformer"}) {
    TempDir dir(std::string("bit-flips-") + family);
    const SavedCheckpoint saved(family, dir.file("run"));
    bool loaded_other = false;
    REQUIRE(load_both_ways(saved, saved.dir, &loaded_other).empty());  // the intact checkpoint loads
    for (const char* file : {models::kModelFile, models::kOptimizerFile, models::kVocabFile})
      flip_bits_of(saved, file, 40, random);
  }
}

TEST_CASE("bit flips: a checkpoint written before checksums existed loads, with one line saying so") {
  TempDir dir("bit-flips-unchecked");
  const SavedCheckpoint saved("primer_ez", dir.file("run"));
  // What loom wrote before it stored checksums: the same files without the checksum
  // entries and without the vocabulary's.
  for (const char* file : {models::kModelFile, models::kOptimizerFile}) {
    const std::string path = saved.dir + "/" + file;
    SafetensorsFile contents = read_safetensors(path);
    contents.metadata.erase("vocab_checksum");
    save_safetensors(path, contents.tensors, contents.metadata, /*checksums=*/false);
    REQUIRE_FALSE(read_safetensors(path).checksummed);
  }
  bool loaded_other = false;
  std::string message = "not run";
  const std::string printed = stderr_of([&] {
    std::unique_ptr<models::LanguageModel> model = models::make_model(saved.config.model);
    models::Adam adam(model->named_parameters(), models::AdamOptions{}, models::LrSchedule::constant(0.01));
    models::load_checkpoint(saved.dir, *model, adam);
  });
  INFO("printed: ", printed);
  CHECK(printed == "note: checkpoint " + saved.dir +
                       " carries no checksums (written before loom stored them), so damage to its files cannot be "
                       "detected\n");
  const std::string printed_twice = stderr_of([&] { message = load_both_ways(saved, saved.dir, &loaded_other); });
  CHECK(message.empty());
  CHECK(printed_twice == printed + printed);  // as a resume, then as generate loads it
  CHECK_FALSE(loaded_other);

  // The same checkpoint with its checksums prints nothing.
  const SavedCheckpoint checked("primer_ez", dir.file("checked"));
  CHECK(stderr_of([&] {
          std::unique_ptr<models::LanguageModel> model = models::make_model(checked.config.model);
          models::Adam adam(model->named_parameters(), models::AdamOptions{}, models::LrSchedule::constant(0.01));
          models::load_checkpoint(checked.dir, *model, adam);
        }).empty());
}

}  // namespace loom::test
