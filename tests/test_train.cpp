// test_train.cpp: the training loop (models/programs/trainer.h): it learns, an
// interrupted and resumed run retraces the uninterrupted one, sampling feeds
// each token once, and bad settings are refused with a clear message.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <thread>
#include <nlohmann/json.hpp>

#include "autodiff/grad_mode.h"
#include "engine/comm/comm.h"
#include "model_test_utils.h"
#include "models/programs/checkpoint.h"
#include "models/families/fast_weights.h"
#include "models/programs/generate.h"
#include "models/blocks/layers.h"
#include "models/programs/trainer.h"

namespace loom::test {

using models::ModelConfig;
using models::TrainConfig;

namespace {

// A deterministic text with structure to learn: words from a small list,
// picked by a linear congruential generator, with line breaks.
std::string synthetic_text(size_t length) {
  const char* words[] = {"the", "king", "is", "dead", "long", "live", "queen", "and", "her", "court"};
  std::string text;
  uint64_t state = 12345;
  int on_line = 0;
  while (text.size() < length) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    text += words[(state >> 33) % 10];
    text += ++on_line % 8 == 0 ? "\n" : " ";
  }
  text.resize(length);
  return text;
}

// A small model with dropout (so the dropout RNG must be restored on resume)
// that counts what decode() is fed: logits = head(dropout(tanh(embed(token)))).
struct TestLM : models::LanguageModel {
  Generator init;
  models::Embedding embed;
  models::Linear head;
  int64_t decode_calls = 0, decoded_tokens = 0;

  explicit TestLM(const ModelConfig& c)
      : LanguageModel(c), init(c.seed), embed(c.vocab, c.d_model, init), head(c.d_model, c.vocab, true, init) {
    register_module("embed", embed);
    register_module("head", head);
  }
  Tensor forward(const Tensor& tokens) override {
    return head.forward(dropout(tanh(embed.forward(tokens)), config_.dropout, dropout_gen_, training()));
  }
  std::unique_ptr<models::DecodeState> start_decoding(int64_t) const override {
    return std::make_unique<models::DecodeState>();
  }
  Tensor decode(models::DecodeState&, const Tensor& tokens) override {
    decode_calls += 1;
    decoded_tokens += tokens.numel();
    return forward(tokens);
  }
  double training_flops_per_token(int64_t) const override { return 6.0 * config_.d_model * config_.vocab; }
};

TrainConfig small_config(const std::string& out_dir, int64_t steps) {
  TrainConfig c = models::parse_train_config(R"({
    "model": {"family": "bigram", "d_model": 16, "seed": 3},
    "data": {"seq_len": 16, "batch_size": 4, "seed": 5},
    "optimizer": {"kind": "noam", "lr": 1.0, "warmup": 10},
    "training": {"log_interval": 1, "eval_interval": 10, "eval_batches": 2, "checkpoint_interval": 0},
    "sample": {"prompt": "the ", "length": 8}
  })");
  c.model.dropout = 0.2;  // TestLM reads it (the bigram family itself has no dropout)
  c.training.steps = steps;
  c.training.out_dir = out_dir;
  return c;
}

// The metrics log as (step, key) -> value for the numeric entries.
std::map<std::pair<int64_t, std::string>, double> read_metrics(const std::string& path) {
  std::map<std::pair<int64_t, std::string>, double> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    for (const char* key : {"loss", "grad_norm", "lr", "valid_loss", "valid_acc"})
      if (entry.contains(key)) out[{entry["step"].get<int64_t>(), key}] = entry[key].get<double>();
  }
  return out;
}

// Runs `steps` steps of a fresh TestLM (resuming from `resume` when given).
void train_test_model(TrainConfig config, const std::string& text, const std::string& resume = "") {
  datasets::TextDataset data = datasets::TextDataset::from_text(text);
  models::resolve_vocab(config, data.tokenizer);
  TestLM model(config.model);
  models::Trainer trainer(config, model, std::move(data));
  if (!resume.empty()) trainer.resume(resume);
  models::RunOptions quiet;
  quiet.progress = false;
  trainer.run(quiet);
}

}  // namespace

TEST_CASE("train: the bigram family learns a structured text") {
  TempDir dir("train-learns");
  TrainConfig config = models::parse_train_config(R"({"model": {"family": "bigram"},
      "data": {"seq_len": 32, "batch_size": 8}, "training": {"steps": 150}, "sample": {"prompt": "the "}})");
  config.training.out_dir = dir.file("run");
  datasets::TextDataset data = datasets::TextDataset::from_text(synthetic_text(20000));
  models::resolve_vocab(config, data.tokenizer);
  CHECK(config.model.vocab == data.tokenizer.vocab_size());
  std::unique_ptr<models::LanguageModel> model = models::make_model(config.model);
  models::Trainer trainer(config, *model, std::move(data));

  const double first = trainer.train_step().loss;
  double last = 0;
  for (int i = 1; i < 150; ++i) last = trainer.train_step().loss;
  // Uniform guessing over the vocabulary costs log(V), about where a fresh model
  // starts; the text's bigram structure allows much less.
  const double uniform = std::log(static_cast<double>(config.model.vocab));
  CHECK(first == relative(uniform, 0.25));
  CHECK(last < 0.6 * uniform);
  const models::EvalResult e = trainer.evaluate();
  CHECK(e.loss < 0.6 * uniform);
  CHECK(e.accuracy > 0.3);
  CHECK(e.sample.size() == 25);
  CHECK(trainer.step() == 150);
}

TEST_CASE("train: k steps, save, load into a fresh model, k more steps == 2k uninterrupted steps") {
  TempDir dir("train-resume");
  const std::string text = synthetic_text(30000);
  const int64_t k = 20;

  train_test_model(small_config(dir.file("whole"), 2 * k), text);
  train_test_model(small_config(dir.file("split"), k), text);
  // A fresh process would start here: a new model with other initial weights.
  TrainConfig resumed = small_config(dir.file("split"), 2 * k);
  resumed.model.seed = 99;  // the checkpoint must overwrite everything...
  CHECK(contains(error_of([&] { train_test_model(resumed, text, dir.file("split")); }),
                 "model.seed is 3 there, 99 here"));  // ...but a different model config is refused
  train_test_model(small_config(dir.file("split"), 2 * k), text, dir.file("split"));

  const auto whole = read_metrics(dir.file("whole/metrics.jsonl"));
  const auto split = read_metrics(dir.file("split/metrics.jsonl"));
  int64_t losses = 0;
  for (const auto& item : whole) {
    const auto& key = item.first;
    const auto& value = item.second;
    INFO("step ", key.first, " ", key.second);
    REQUIRE(split.count(key));
    CHECK(split.at(key) == relative(value, 1e-6));
    losses += key.second == "loss";
  }
  CHECK(losses == 2 * k);
  CHECK(split.size() == whole.size());  // the resumed log holds each step once
  // Dropout was on, so the runs also agree on the RNG; the final weights agree too.
  const NamedTensors a = load_safetensors(dir.file("whole/checkpoint/model.safetensors"));
  const NamedTensors b = load_safetensors(dir.file("split/checkpoint/model.safetensors"));
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    const std::vector<float> va = a[i].second.to_vector<float>(), vb = b[i].second.to_vector<float>();
    for (size_t j = 0; j < va.size(); ++j) CHECK(vb[j] == relative(va[j], 1e-6));
  }
  CHECK(load_safetensors_metadata(dir.file("split/checkpoint/model.safetensors")).at("step") == std::to_string(2 * k));
}

TEST_CASE("train: each log line gives the tokens per second of CPU time, within the CPU time the run took") {
  TempDir dir("train-cpu-rate");
  TrainConfig c = small_config(dir.file("run"), 40);
  c.training.log_interval = 5;
  c.training.threads = 1;  // one thread: its CPU time can be no more than the wall time
  c.model.d_model = 64;
  c.data.seq_len = 64;
  c.data.batch_size = 16;
  const int threads_before = num_threads();
  // An earlier test's OpenMP threads keep spinning for a while after their last
  // parallel region (LLVM's libomp: 200 ms by default, KMP_BLOCKTIME), and that
  // CPU time is the process's. Wait until they sleep, so that it is not counted here.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  timespec before{}, after{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &before);
  train_test_model(c, synthetic_text(20000));
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &after);
  set_num_threads(threads_before);
  const double run_cpu = static_cast<double>(after.tv_sec - before.tv_sec) + 1e-9 * static_cast<double>(after.tv_nsec - before.tv_nsec);

  double steps_cpu = 0;
  int lines = 0;
  std::ifstream log(dir.file("run/metrics.jsonl"));
  for (std::string line; std::getline(log, line);) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    if (!entry.contains("tokens_per_s")) continue;
    const double per_cpu = entry.at("tokens_per_cpu_s").get<double>(), per_wall = entry.at("tokens_per_s").get<double>();
    INFO("step ", entry.at("step").get<int64_t>());
    CHECK(std::isfinite(per_cpu));
    CHECK(per_cpu > 0);
    CHECK(per_cpu >= 0.9 * per_wall);
    steps_cpu += 5 * 64 * 16 / per_cpu;  // 5 steps of 64 x 16 tokens
    ++lines;
  }
  CHECK(lines == 8);
  CHECK(steps_cpu <= run_cpu * 1.001);  // the steps are a part of the run
  CHECK(steps_cpu > 0);
}

// RunOptions::probe_peak_gflops runs at each evaluation, and the MFU of every later
// log line is against the best reading so far: a lower one leaves it.
TEST_CASE("train: MFU is against the best of the peak probes so far") {
  TempDir dir("train-peak-probes");
  TrainConfig c = small_config(dir.file("run"), 6);
  c.training.eval_interval = 2;  // evaluations (and probes) after the log lines of steps 2, 4 and 6
  datasets::TextDataset data = datasets::TextDataset::from_text(synthetic_text(20000));
  models::resolve_vocab(c, data.tokenizer);
  TestLM model(c.model);
  models::Trainer trainer(c, model, std::move(data));
  const std::vector<double> readings{2000, 500, 4000};
  size_t probes = 0;
  models::RunOptions options;
  options.progress = false;
  options.peak_gflops = 1000;
  options.probe_peak_gflops = [&] { return readings.at(probes++); };
  trainer.run(options);
  CHECK(probes == 3);
  // The peak each log line's MFU used, from its tokens/s.
  const double flops_per_token = model.training_flops_per_token(c.data.seq_len);
  std::map<int64_t, double> peaks;
  std::ifstream log(dir.file("run/metrics.jsonl"));
  for (std::string line; std::getline(log, line);) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    if (entry.contains("mfu"))
      peaks[entry.at("step").get<int64_t>()] =
          flops_per_token * entry.at("tokens_per_s").get<double>() / (entry.at("mfu").get<double>() * 1e9);
  }
  const std::map<int64_t, double> expected{{1, 1000}, {2, 1000}, {3, 2000}, {4, 2000}, {5, 2000}, {6, 2000}};
  REQUIRE(peaks.size() == expected.size());
  for (const auto& entry : expected) {
    const int64_t step = entry.first;  // not a structured binding: INFO captures it, which clang refuses
    INFO("step ", step);
    CHECK(peaks.at(step) == doctest::Approx(entry.second).epsilon(1e-9));
  }
}

TEST_CASE("generate: the prompt is fed once, then one token per call") {
  ModelConfig c;
  c.vocab = 5;
  c.d_model = 4;
  TestLM model(c);
  model.eval();
  Generator gen(1);
  const std::vector<int64_t> out = models::generate_tokens(model, {1, 2, 3, 4, 0}, 25, {}, gen);
  CHECK(out.size() == 25);
  CHECK(model.decode_calls == 25);          // 1 for the prompt + 24 single tokens
  CHECK(model.decoded_tokens == 5 + 24);    // nothing fed twice
  // Greedy: each token is the argmax after the previous one (a bigram model's
  // next token depends on the current one only), independently recomputed here.
  NoGradGuard no_grad;
  int64_t current = 0;
  for (int64_t id : out) {
    const std::vector<float> logits =
        model.forward(Tensor::from_vector<int64_t>({current}, {1, 1})).reshape({-1}).to_vector<float>();
    CHECK(id == std::max_element(logits.begin(), logits.end()) - logits.begin());
    current = id;
  }
}

TEST_CASE("sample_token: greedy, top-k and temperature") {
  const Tensor logits = Tensor::from_vector<float>({1.0f, 3.0f, 2.0f, 3.0f, -1.0f}, {5});
  Generator gen(7);
  CHECK(models::sample_token(logits, {}, gen) == 1);            // argmax, first of the ties
  CHECK(models::sample_token(logits, {5.0, 1}, gen) == 1);      // top-1 is greedy at any temperature
  // Top-2 keeps ids 1 and 3 (equal logits): each about half the time, nothing else.
  // Temperature 1 over all five: frequencies follow softmax(logits).
  std::map<int64_t, int> top2, full;
  const int draws = 4000;
  for (int i = 0; i < draws; ++i) {
    top2[models::sample_token(logits, {1.0, 2}, gen)]++;
    full[models::sample_token(logits, {1.0, 0}, gen)]++;
  }
  // Counts within 4 binomial standard deviations of n·p.
  auto plausible = [&](int count, double p) { return std::abs(count - draws * p) < 4 * std::sqrt(draws * p * (1 - p)); };
  CHECK(top2.size() == 2);
  CHECK(plausible(top2[1], 0.5));
  const std::vector<double> x = {1, 3, 2, 3, -1};
  double z = 0;
  for (double v : x) z += std::exp(v);
  for (int64_t id = 0; id < 5; ++id) {
    INFO("id ", id);
    CHECK(plausible(full[id], std::exp(x[id]) / z));
  }
  // The same seed gives the same draws.
  Generator g1(11), g2(11);
  for (int i = 0; i < 20; ++i) CHECK(models::sample_token(logits, {0.8, 3}, g1) == models::sample_token(logits, {0.8, 3}, g2));
}

TEST_CASE("train: vocabulary, prompt and device problems are refused with a message") {
  const datasets::TextDataset data = datasets::TextDataset::from_text(synthetic_text(5000));
  TrainConfig c = models::parse_train_config(R"({"model": {"family": "bigram", "vocab": 40}})");
  CHECK(contains(error_of([&] { models::resolve_vocab(c, data.tokenizer); }),
                 "model.vocab: the config says 40 but the text has " + std::to_string(data.tokenizer.vocab_size()) +
                     " distinct characters"));

  TrainConfig q = models::parse_train_config(R"({"model": {"family": "bigram"}, "sample": {"prompt": "It is"}})");
  models::resolve_vocab(q, data.tokenizer);
  TestLM model(q.model);
  models::Trainer trainer(q, model, data);
  CHECK(contains(error_of([&] { trainer.sample(); }), "the prompt's character 'I' (byte 73 at position 0) is not in the vocabulary"));

  if (!cuda_available()) {
    TrainConfig g = q;
    g.training.device = "cuda";
    CHECK(contains(error_of([&] { models::Trainer t(g, model, data); }), "training.device is \"cuda\" but"));
  }
}

// ---- early stopping (training.patience) ------------------------------------------------------------

namespace {

// A model whose validation loss the test dictates. In eval mode its logits are 0
// except `height(step)` on one token the valid split never holds, so every valid
// position costs ln(e^height + V - 1): the validation loss rises with the height the
// script gives for the trainer's step. Training itself runs a real model (TestLM's).
struct ScriptedValidLM : TestLM {
  const models::Trainer* trainer = nullptr;
  std::map<int64_t, double> height_at_step;  // the script; steps it does not name get 0
  int64_t absent_token = 0;

  using TestLM::TestLM;
  Tensor forward(const Tensor& tokens) override {
    if (training()) return TestLM::forward(tokens);
    const int64_t vocab = config_.vocab;
    const auto it = height_at_step.find(trainer ? trainer->step() : 0);
    const double height = it == height_at_step.end() ? 0.0 : it->second;
    std::vector<float> logits(static_cast<size_t>(tokens.numel() * vocab), 0.0f);
    for (int64_t i = 0; i < tokens.numel(); ++i) logits[i * vocab + absent_token] = static_cast<float>(height);
    return Tensor::from_vector(logits, {tokens.size(0), tokens.size(1), vocab});
  }
};

// A world of one rank, enough for Trainer::distribute's checks (nothing here communicates).
struct OneRank : comm::Communicator {
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "one rank"; }
  Device device() const override { return Device::cpu; }
  void all_reduce_sum(const Tensor&) override {}
  void broadcast(const Tensor&, int) override {}
  void barrier() override {}
  std::vector<std::string> all_gather_text(const std::string& text) override { return {text}; }
  [[noreturn]] void abort(int) override { std::abort(); }
};

// 'Z' opens the text and appears nowhere else: it is in the vocabulary and the
// train split, never in the valid split.
const std::string& scripted_text() {
  static const std::string text = "Z" + synthetic_text(20000);
  return text;
}

TrainConfig patience_config(const std::string& out_dir, int64_t steps, int64_t patience) {
  TrainConfig c = small_config(out_dir, steps);
  c.training.eval_interval = 2;
  c.training.patience = patience;
  c.sample.length = 0;
  return c;
}

struct PatienceRun {
  int64_t step = 0, best_step = -1;
  double best_loss = 0;
  bool stopped_early = false;
};

// Validation k (at step 2k) gets heights[k - 1]. Trains (resuming from `resume` when
// given) and reports where the trainer ended.
PatienceRun run_scripted(const TrainConfig& config, const std::vector<double>& heights, const std::string& resume = "",
                         const std::atomic<bool>* stop = nullptr) {
  TrainConfig c = config;
  datasets::TextDataset data = datasets::TextDataset::from_text(scripted_text());
  models::resolve_vocab(c, data.tokenizer);
  ScriptedValidLM model(c.model);
  model.absent_token = data.tokenizer.encode("Z").at(0);
  for (size_t k = 0; k < heights.size(); ++k) model.height_at_step[2 * static_cast<int64_t>(k + 1)] = heights[k];
  models::Trainer trainer(c, model, std::move(data));
  model.trainer = &trainer;
  if (!resume.empty()) trainer.resume(resume);
  models::RunOptions quiet;
  quiet.progress = false;
  quiet.stop = stop;
  trainer.run(quiet);
  return {trainer.step(), trainer.best_valid_step(), trainer.best_valid_loss(), trainer.stopped_early()};
}

// The validation loss of a height, written from the definition of cross-entropy.
double scripted_loss(double height, int64_t vocab) { return std::log(std::exp(height) + static_cast<double>(vocab - 1)); }

// Heights of validations 1, 2, ...: lower is better. With patience 2 the run stops at
// validation 4 (validations 3 and 4 do not go below validation 2's: equal is no
// progress); with patience 3 at validation 8 (validation 5 is a new best; 7 and 8
// improve on 6 but not on 5).
const std::vector<double> kHeights = {3, 2, 2.5, 2, 1, 1.5, 1.2, 1.1, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0};

}  // namespace

TEST_CASE("train: training.patience stops after that many validations in a row without a lower valid loss") {
  TempDir dir("train-patience");
  const int64_t vocab = datasets::TextDataset::from_text(scripted_text()).tokenizer.vocab_size();

  const PatienceRun two = run_scripted(patience_config(dir.file("two"), 30, 2), kHeights);
  CHECK(two.stopped_early);
  CHECK(two.step == 8);
  CHECK(two.best_step == 4);
  CHECK(two.best_loss == relative(scripted_loss(2, vocab), 1e-6));
  // The stop is saved: the newest checkpoint is of step 8, and the log says where and why.
  CHECK(load_safetensors_metadata(dir.file("two/checkpoint/model.safetensors")).at("step") == "8");
  std::string last_line;
  std::ifstream log(dir.file("two/metrics.jsonl"));
  for (std::string line; std::getline(log, line);) last_line = line;
  const nlohmann::json last = nlohmann::json::parse(last_line);
  CHECK(last.value("stopped_early_at_step", -1) == 8);
  CHECK(last.value("best_valid_step", -1) == 4);

  const PatienceRun three = run_scripted(patience_config(dir.file("three"), 30, 3), kHeights);
  CHECK(three.stopped_early);
  CHECK(three.step == 16);
  CHECK(three.best_step == 10);
  CHECK(three.best_loss == relative(scripted_loss(1, vocab), 1e-6));

  // Off (0, the default): every step runs, and the best is still reported.
  const PatienceRun off = run_scripted(patience_config(dir.file("off"), 30, 0), kHeights);
  CHECK(!off.stopped_early);
  CHECK(off.step == 30);
  CHECK(off.best_step == 10);

  // Data-parallel training refuses it: only rank 0 would know when to stop.
  CHECK(contains(error_of([&] {
                   TrainConfig c = patience_config(dir.file("mpi"), 30, 2);
                   datasets::TextDataset data = datasets::TextDataset::from_text(scripted_text());
                   models::resolve_vocab(c, data.tokenizer);
                   TestLM model(c.model);
                   models::Trainer trainer(c, model, std::move(data));
                   OneRank solo;
                   trainer.distribute(solo);
                 }),
                 "training.patience is not supported with data-parallel training"));
}

TEST_CASE("train: a run resumed in the middle of its patience stops where the uninterrupted run stops") {
  TempDir dir("train-patience-resume");
  const PatienceRun whole = run_scripted(patience_config(dir.file("whole"), 40, 3), kHeights);
  REQUIRE(whole.step == 16);

  // Interrupted at step 12, one validation after the best (step 10): a resume that
  // forgot the record would take step 14 for a new best and stop only at step 22.
  const PatienceRun first = run_scripted(patience_config(dir.file("split"), 12, 3), kHeights);
  CHECK(!first.stopped_early);
  CHECK(first.step == 12);
  const PatienceRun resumed = run_scripted(patience_config(dir.file("split"), 40, 3), kHeights, dir.file("split"));
  CHECK(resumed.stopped_early);
  CHECK(resumed.step == whole.step);
  CHECK(resumed.best_step == whole.best_step);
  CHECK(resumed.best_loss == whole.best_loss);

  // A finished run stays finished: resuming it again takes no step.
  const PatienceRun again = run_scripted(patience_config(dir.file("split"), 40, 3), kHeights, dir.file("split"));
  CHECK(again.stopped_early);
  CHECK(again.step == 16);

  // A checkpoint without a validation (stopped at step 1) has no early-stopping record,
  // as checkpoints from before training.patience: it resumes with none.
  std::atomic<bool> stop_now{true};
  const PatienceRun early = run_scripted(patience_config(dir.file("old"), 40, 3), kHeights, "", &stop_now);
  REQUIRE(early.step == 1);
  const auto meta = load_safetensors_metadata(dir.file("old/checkpoint/optimizer.safetensors"));
  CHECK(meta.count("best_valid_step") == 0);
  CHECK(meta.count("step") == 1);
  const PatienceRun from_old = run_scripted(patience_config(dir.file("old"), 40, 3), kHeights, dir.file("old"));
  CHECK(from_old.step == 16);
  CHECK(from_old.best_step == 10);
}

// ---- fast weights layers on Tiny Shakespeare, and carry-over --------------------------------------

namespace {

// The example config of a fast layer (examples/configs/), shrunk to seconds: the
// shipped Tiny Shakespeare, dropout on (so resuming must restore the RNG).
TrainConfig fast_layer_config(const std::string& kind, const std::string& out_dir, int64_t steps, bool carry_over) {
  const std::string file = kind == "delta_net" ? "fast_weights_small.json" : "fast_weights_" + kind + ".json";
  TrainConfig c = models::load_train_config(std::string(LOOM_SOURCE_ROOT) + "/examples/configs/" + file);
  REQUIRE(c.model.fast_layer == kind);
  c.model.d_model = 16;
  c.model.heads = 2;
  c.model.d_ff = 32;
  c.model.layers = 2;
  c.model.dropout = 0.1;
  c.data.path = std::string(LOOM_SOURCE_ROOT) + "/datasets/tinyshakespeare.txt";
  c.data.seq_len = 16;
  c.data.batch_size = 3;
  c.data.carry_over = carry_over;
  c.training.steps = steps;
  c.training.log_interval = 1;
  c.training.eval_interval = 2;  // at the split step too, so both logs hold the same evaluations
  c.training.eval_batches = 2;
  c.training.checkpoint_interval = 0;
  c.training.threads = 0;
  c.training.out_dir = out_dir;
  c.sample.length = 6;
  c.optimizer.lr = 1e-2;  // visible progress within a few steps
  return c;
}

const datasets::TextDataset& tiny_shakespeare() {
  static const datasets::TextDataset data =
      datasets::TextDataset::load(std::string(LOOM_SOURCE_ROOT) + "/datasets/tinyshakespeare.txt");
  return data;
}

void train_fast_model(TrainConfig config, const std::string& resume = "") {
  datasets::TextDataset data = tiny_shakespeare();
  models::resolve_vocab(config, data.tokenizer);
  auto model = models::make_model(config.model);
  models::Trainer trainer(config, *model, std::move(data));
  if (!resume.empty()) trainer.resume(resume);
  models::RunOptions quiet;
  quiet.progress = false;
  trainer.run(quiet);
}

}  // namespace

TEST_CASE("train: every fast_layer trains on Tiny Shakespeare from its config, checkpoints and resumes exactly") {
  std::vector<std::pair<std::string, bool>> runs;
  for (const char* kind : models::kFastLayers) runs.push_back({kind, true});  // carried states must resume too
  runs.push_back({"delta_net", false});
  for (const auto& run : runs) {
    // Plain names, not structured bindings: clang 14 cannot capture those in INFO.
    const std::string& kind = run.first;
    const bool carry = run.second;
    INFO("fast_layer ", kind, std::string(carry ? " with" : " without"), " carry-over");
    TempDir dir("train-fast-" + kind);
    const int64_t k = 4;
    train_fast_model(fast_layer_config(kind, dir.file("whole"), 2 * k, carry));
    train_fast_model(fast_layer_config(kind, dir.file("split"), k, carry));
    // The carried states are in the checkpoint of step k (the run continues its epoch).
    bool has_carried = false;
    for (const auto& [name, t] : load_safetensors(dir.file("split/checkpoint/optimizer.safetensors")))
      has_carried = has_carried || name.rfind("carried_state.layers.", 0) == 0;
    CHECK(has_carried == carry);
    train_fast_model(fast_layer_config(kind, dir.file("split"), 2 * k, carry), dir.file("split"));

    const auto whole = read_metrics(dir.file("whole/metrics.jsonl"));
    const auto split = read_metrics(dir.file("split/metrics.jsonl"));
    REQUIRE(whole.size() == split.size());
    for (const auto& entry : whole) {
      const auto& key = entry.first;
      const double value = entry.second;
      INFO("step ", key.first, " ", key.second);
      REQUIRE(split.count(key));
      CHECK(split.at(key) == relative(value, 1e-6));
    }
    CHECK(whole.at({2 * k, "loss"}) < whole.at({1, "loss"}) - 0.1);  // it learns from the first steps
  }
}

TEST_CASE("train: with data.carry_over, evaluation over carried segments equals one forward over their concatenation") {
  for (const char* kind : models::kFastLayers) {
    INFO("fast_layer ", std::string(kind));
    TempDir dir(std::string("carry-") + kind);
    TrainConfig config = fast_layer_config(kind, dir.file("run"), 2, true);
    config.training.eval_batches = 3;
    config.model.dropout = 0;
    datasets::TextDataset data = tiny_shakespeare();
    models::resolve_vocab(config, data.tokenizer);
    auto model = models::make_model(config.model);
    models::Trainer trainer(config, *model, data);
    trainer.train_step();  // the weights move off their initial values
    trainer.train_step();
    const double carried = trainer.evaluate().loss;

    // The same three valid segments, taken from the streams independently, as one sequence.
    const int64_t L = config.data.seq_len, B = config.data.batch_size;
    datasets::ShuffledBatcher streams(data.valid_ids, L, B, config.data.seed + 1, datasets::BatchOrder::streams);
    std::vector<Tensor> inputs, targets;
    for (int i = 0; i < 3; ++i) {
      const datasets::Batch batch = streams.next();
      if (!targets.empty())  // each row continues where it ended
        CHECK(narrow(batch.input, 0, 0, 1).to_vector<int64_t>() == narrow(targets.back(), 0, L - 1, 1).to_vector<int64_t>());
      inputs.push_back(batch.input);
      targets.push_back(batch.target);
    }
    NoGradGuard no_grad;
    model->eval();
    const Tensor logits = model->forward(concat(inputs, 0));  // [3L, B, V], from zero states
    const int64_t V = logits.size(-1);
    const double whole = cross_entropy(logits.reshape({-1, V}), concat(targets, 0).reshape({-1})).item();
    CHECK(carried == relative(whole, 1e-5));
    // Without the carried states the later segments would start from zeros: another loss.
    double restarted = 0;
    for (int i = 0; i < 3; ++i)
      restarted += cross_entropy(model->forward(inputs[i]).reshape({-1, V}), targets[i].reshape({-1})).item() / 3;
    CHECK(std::abs(restarted - whole) > 1e-4);
  }
}

TEST_CASE("train: data.carry_over is refused for families without a carried state, and on resume when it changes") {
  CHECK(contains(error_of([] { models::parse_train_config(R"({"model": {"family": "transformer"}, "data": {"carry_over": true}})"); }),
                 "data.carry_over: only the fast_weights family carries its states across batches, not transformer"));
  TempDir dir("carry-resume");
  train_fast_model(fast_layer_config("delta_net", dir.file("run"), 2, true));
  CHECK(contains(error_of([&] { train_fast_model(fast_layer_config("delta_net", dir.file("run"), 4, false), dir.file("run")); }),
                 "data.carry_over is true there, false here"));
}

}  // namespace loom::test
