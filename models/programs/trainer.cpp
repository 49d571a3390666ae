#include "models/programs/trainer.h"

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autodiff/grad_mode.h"
#include "engine/cpu_peak.h"
#include "engine/error.h"
#include "engine/file_io.h"
#include "engine/ops.h"
#include "models/programs/charts.h"
#include "models/programs/checkpoint.h"
#include "models/programs/generate.h"

namespace loom::models {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

void resolve_vocab(TrainConfig& config, const datasets::CharTokenizer& tokenizer) {
  if (config.vocab_from_data) {
    config.model.vocab = tokenizer.vocab_size();
    config.vocab_from_data = false;
  } else {
    LOOM_CHECK(config.model.vocab == tokenizer.vocab_size(), "model.vocab: the config says ", config.model.vocab,
               " but the text has ", tokenizer.vocab_size(), " distinct characters (leave model.vocab out to use the text's)");
  }
}

namespace {

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  LOOM_CHECK(cuda_available(), "training.device is \"cuda\" but this build has no CUDA backend or no GPU is visible");
  return Device::cuda;
}

// A split must hold one window of seq_len + 1 tokens; the message names the split and the file.
const std::vector<int64_t>& long_enough(const std::vector<int64_t>& ids, const char* split, const TrainConfig& c) {
  const auto n = static_cast<int64_t>(ids.size());
  LOOM_CHECK(n > c.data.seq_len, "data: the ", split, " split of ", c.data.path, " has ", n, n == 1 ? " token" : " tokens",
             ", too few for data.seq_len ", c.data.seq_len, " (one window needs ", c.data.seq_len + 1,
             "); use a longer text or a smaller data.seq_len");
  return ids;
}

// data.carry_over needs every batch row to continue the row before it.
datasets::BatchOrder batch_order(const TrainConfig& c) {
  return c.data.carry_over ? datasets::BatchOrder::streams : datasets::BatchOrder::shuffled;
}

// Restores train mode when an evaluation or sample ends, even by an exception.
struct EvalMode {
  Module& model;
  explicit EvalMode(Module& m) : model(m) { model.eval(); }
  ~EvalMode() { model.train(); }
};

std::string duration_text(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buffer[32];
  if (s >= 3600) std::snprintf(buffer, sizeof buffer, "%lldh%02lldm", (long long)(s / 3600), (long long)(s / 60 % 60));
  else if (s >= 60) std::snprintf(buffer, sizeof buffer, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else std::snprintf(buffer, sizeof buffer, "%llds", (long long)s);
  return buffer;
}

std::string rate_text(double tokens_per_s) {
  char buffer[32];
  if (tokens_per_s >= 1e6) std::snprintf(buffer, sizeof buffer, "%.2fM", tokens_per_s / 1e6);
  else if (tokens_per_s >= 1e3) std::snprintf(buffer, sizeof buffer, "%.1fk", tokens_per_s / 1e3);
  else std::snprintf(buffer, sizeof buffer, "%.0f", tokens_per_s);
  return buffer;
}

// CPU time of the whole process (every thread). On one thread it is what a step
// costs however busy the machine is, where the wall clock also counts the waiting.
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// A sample as one printable line: newlines shown as \n.
std::string one_line(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '\n' ? std::string("\\n") : std::string(1, c);
  return out;
}

}  // namespace

Trainer::Trainer(TrainConfig config, LanguageModel& model, datasets::TextDataset data)
    : config_(std::move(config)),
      model_(model),
      data_(std::move(data)),
      device_(parse_device(config_.training.device)),
      train_batches_(long_enough(data_.train_ids, "train", config_), config_.data.seq_len, config_.data.batch_size,
                     config_.data.seed, batch_order(config_)),
      // The valid split has its own stream (seed + 1); see evaluate().
      valid_batches_(long_enough(data_.valid_ids, "valid", config_), config_.data.seq_len, config_.data.batch_size,
                     config_.data.seed + 1, batch_order(config_)) {
  LOOM_CHECK(!config_.vocab_from_data, "Trainer: call resolve_vocab on the config first");
  LOOM_CHECK(model_.config().vocab == data_.tokenizer.vocab_size(), "Trainer: the model has a vocabulary of ",
             model_.config().vocab, " but the tokenizer has ", data_.tokenizer.vocab_size(), " tokens");
  if (config_.training.threads > 0) set_num_threads(static_cast<int>(config_.training.threads));
  if (device_ != Device::cpu) model_.to(device_);

  const OptimizerConfig& o = config_.optimizer;
  AdamOptions options;
  options.form = o.form == "pytorch" ? AdamForm::pytorch : AdamForm::labml;
  options.beta1 = o.beta1;
  options.beta2 = o.beta2;
  options.eps = o.eps;
  options.weight_decay = o.weight_decay;
  const LrSchedule schedule =
      o.kind == "noam" ? LrSchedule::noam(o.lr, config_.model.d_model, o.warmup) : LrSchedule::constant(o.lr);
  optimizer_ = std::make_unique<Adam>(model_.named_parameters(), options, schedule);
  model_.train();
}

int64_t Trainer::total_steps() const { return config_.total_steps(train_batches_.batches_per_epoch()); }

Trainer::~Trainer() = default;

std::string Trainer::chart_path() const {
  if (config_.training.log.empty()) return "";
  return (std::filesystem::path(config_.training.out_dir) / "curves.svg").string();
}

std::string Trainer::checkpoint_path() const {
  return (std::filesystem::path(config_.training.out_dir) / kCheckpointLink).string();
}

datasets::Batch Trainer::to_device(datasets::Batch batch) const {
  if (device_ != Device::cpu) {
    batch.input = batch.input.to(device_);
    batch.target = batch.target.to(device_);
  }
  return batch;
}

// data.carry_over: the batch continues the previous one row by row, so the model
// starts from the states the previous step left (decode() keeps them detached: the
// gradient stays inside this batch); a new epoch starts the streams, and the states, over.
Tensor Trainer::forward_carried(const Tensor& input, bool epoch_start) {
  if (epoch_start || !carried_) carried_ = model_.start_decoding(input.size(1));
  return model_.decode(*carried_, input);
}

StepResult Trainer::train_step() {
  const bool epoch_start = train_batches_.at_epoch_start();
  const datasets::Batch whole = train_batches_.next();
  // Under data parallelism this rank's columns of the batch (distributed.h).
  const datasets::Batch batch = to_device(parallel_ ? parallel_->slice(whole) : whole);
  StepResult r;
  const int64_t positions = batch.input.numel();
  if (positions > 0) {
    const Tensor logits =
        config_.data.carry_over ? forward_carried(batch.input, epoch_start) : model_.forward(batch.input);
    const int64_t vocab = logits.size(-1);
    const Tensor loss = cross_entropy(logits.reshape({-1, vocab}), batch.target.reshape({-1}));
    r.loss = loss.item();
    if (!parallel_) check_loss(r.loss, step_ + 1, "the loss");  // before the weights change
    last_batch_ = batch;
    loss.backward();
  }
  if (parallel_) {
    const bool stop = stop_flag_ && stop_flag_->load();
    const ReducedStep reduced =
        parallel_->all_reduce_gradients(r.loss, positions, whole.input.numel(), stop, model_.dropout_generator());
    r.loss = reduced.loss;
    stop_agreed_ = reduced.stop;
    check_loss(r.loss, step_ + 1, "the loss");  // on every rank alike, before the weights change
  }

  // No clipping is clipping at infinity: the norm is still measured for the log.
  const double max_norm = config_.optimizer.clip > 0 ? config_.optimizer.clip : std::numeric_limits<double>::infinity();
  r.grad_norm = clip_grad_norm(model_.parameters(), max_norm);
  optimizer_->step();
  optimizer_->zero_grad();
  ++step_;
  r.lr = optimizer_->current_lr();
  r.tokens = whole.input.numel();
  return r;
}

void Trainer::distribute(comm::Communicator& comm) {
  LOOM_CHECK(!parallel_ && !prepared_, "Trainer::distribute: call it once, before prepare()");
  // A checkpoint holds one carried state (rank 0's): the other ranks' streams could not resume.
  LOOM_CHECK(!config_.data.carry_over, "data.carry_over is not supported with data-parallel training (mpirun): ",
             "a checkpoint would hold only rank 0's carried states; train it in one process");
  // Only rank 0 validates, so only it would know when to stop.
  LOOM_CHECK(config_.training.patience == 0, "training.patience is not supported with data-parallel training (mpirun): ",
             "only rank 0 validates; train it in one process or set training.patience to 0");
  parallel_ = std::make_unique<DataParallel>(comm, model_.parameters());
  Generator& dropout = model_.dropout_generator();
  dropout.set_state(dropout_seed_for_rank(dropout.seed(), parallel_->rank()), dropout.offset());
}

// A non-finite or exploding loss stops training before the weights change again.
void Trainer::check_loss(double loss, int64_t step, const char* what) const {
  const double limit = kExplodingLossFactor * std::log(std::max<double>(2, data_.tokenizer.vocab_size()));
  if (std::isfinite(loss) && loss <= limit) return;
  const std::string kept = saved_step_ >= 0 ? "the checkpoint of step " + std::to_string(saved_step_) + " is kept"
                                            : "no checkpoint was saved";
  LOOM_FAIL("step ", step, ": ", what, " is ", loss,
            std::isfinite(loss) ? detail::concat(", over ", kExplodingLossFactor, " x ln(vocab) = ", limit) : "",
            ": training diverged (try a lower optimizer.lr or clipping); stopped, ", kept);
}

bool Trainer::stopped_early() const {
  return config_.training.patience > 0 && evaluations_since_best_ >= config_.training.patience;
}

// Strictly lower counts as better: a validation loss that only equals the best is no progress.
void Trainer::record_validation(double loss) {
  if (best_valid_step_ < 0 || loss < best_valid_loss_) {
    best_valid_loss_ = loss;
    best_valid_step_ = step_;
    evaluations_since_best_ = 0;
  } else {
    evaluations_since_best_ += 1;
  }
}

EvalResult Trainer::evaluate() {
  EvalResult r;
  {
    NoGradGuard no_grad;
    EvalMode eval(model_);
    double loss_sum = 0;
    int64_t positions = 0, correct = 0;
    // The same batches every time (the first eval_batches of the valid stream):
    // evaluations are comparable with each other, and when they happen never
    // changes what they measure, so an interrupted run logs what an uninterrupted one does.
    valid_batches_.set_state({config_.data.seed + 1, 0, 0});
    // With carry-over the valid batches are consecutive segments of B streams, each
    // read with the states the previous segment left (from zeros at the first).
    std::unique_ptr<DecodeState> carried =
        config_.data.carry_over ? model_.start_decoding(config_.data.batch_size) : nullptr;
    for (int64_t i = 0; i < config_.training.eval_batches; ++i) {
      if (valid_batches_.at_epoch_start() && carried) carried = model_.start_decoding(config_.data.batch_size);
      const datasets::Batch batch = to_device(valid_batches_.next());
      const Tensor logits = carried ? model_.decode(*carried, batch.input) : model_.forward(batch.input);
      const int64_t vocab = logits.size(-1), n = batch.target.numel();
      loss_sum += cross_entropy(logits.reshape({-1, vocab}), batch.target.reshape({-1})).item() * n;
      const std::vector<int64_t> predicted = argmax(logits, -1).to(Device::cpu).to_vector<int64_t>();
      const std::vector<int64_t> target = batch.target.to(Device::cpu).to_vector<int64_t>();
      for (int64_t j = 0; j < n; ++j) correct += predicted[j] == target[j];
      positions += n;
    }
    r.loss = loss_sum / positions;
    r.accuracy = static_cast<double>(correct) / positions;
  }
  r.sample = sample();
  return r;
}

std::string Trainer::sample() {
  if (config_.sample.length == 0) return "";
  EvalMode eval(model_);
  Generator unused(0);  // greedy decoding draws nothing
  return generate_text(model_, data_.tokenizer, config_.sample.prompt, config_.sample.length, SamplingOptions{}, unused);
}

std::string Trainer::save() {
  // The weights of the last step have not met a batch yet: one forward pass (eval
  // mode, no RNG draws) on the batch just trained tells a diverged step before it
  // reaches the disk.
  if (last_batch_.input.defined()) {
    NoGradGuard no_grad;
    EvalMode eval(model_);
    const Tensor logits = model_.forward(last_batch_.input);
    const int64_t vocab = logits.size(-1);
    const double loss = cross_entropy(logits.reshape({-1, vocab}), last_batch_.target.reshape({-1})).item();
    check_loss(loss, step_, "the loss of the weights it made, on its batch,");
  }
  TrainingState s;
  s.step = step_;
  s.elapsed_seconds = elapsed_;
  s.config_json = to_json(config_);
  s.train_batcher = train_batches_.state();
  s.dropout_seed = model_.dropout_generator().seed();
  s.dropout_offset = model_.dropout_generator().offset();
  s.vocab = data_.tokenizer.chars();
  if (carried_ && !train_batches_.at_epoch_start()) s.carried_state = carried_->tensors();  // else: zeros next
  s.best_valid_loss = best_valid_loss_;
  s.best_valid_step = best_valid_step_;
  s.evaluations_since_best = evaluations_since_best_;
  const std::string dir = save_checkpoint(config_.training.out_dir, model_, *optimizer_, s);
  saved_step_ = step_;
  return dir;
}

void Trainer::resume(const std::string& path) {
  // out_dir is taken before anything is read: a run still saving there would otherwise
  // replace the files under this reader.
  with_out_dir_locked([&] { resume_locked(path); });
}

void Trainer::resume_locked(const std::string& path) {
  const std::string dir = find_checkpoint(path);
  const std::string model_file = (std::filesystem::path(dir) / kModelFile).string();
  // The checkpoint must describe the same model on the same data windows.
  const std::map<std::string, std::string> meta = load_safetensors_metadata(model_file);
  const auto config_entry = meta.find("config");
  LOOM_CHECK(config_entry != meta.end(), model_file, ": metadata has no \"config\" (not a loom training checkpoint?)");
  const Json saved = Json::parse(to_json(parse_train_config(config_entry->second, model_file + " (config)")));
  const Json current = Json::parse(to_json(config_));
  std::vector<std::string> differences;
  for (const auto& [key, value] : current["model"].items())
    if (saved["model"][key] != value)
      differences.push_back("model." + key + " is " + saved["model"][key].dump() + " there, " + value.dump() + " here");
  for (const char* key : {"seq_len", "batch_size", "seed", "carry_over"})
    if (saved["data"][key] != current["data"][key])
      differences.push_back(std::string("data.") + key + " is " + saved["data"][key].dump() + " there, " +
                            current["data"][key].dump() + " here");
  if (!differences.empty()) {
    std::string message = "cannot resume from " + path + ": its config differs from this one:";
    for (const std::string& d : differences) message += "\n  " + d;
    throw Error(message);
  }
  LOOM_CHECK(load_checkpoint_vocab(dir).chars() == data_.tokenizer.chars(), "cannot resume from ", path,
             ": the text's vocabulary differs from the one in ", (std::filesystem::path(dir) / kVocabFile).string());

  const TrainingState s = load_checkpoint(dir, model_, *optimizer_);
  step_ = s.step;
  elapsed_ = s.elapsed_seconds;
  train_batches_.set_state(s.train_batcher);
  // The checkpoint holds rank 0's key (the model's own); other ranks derive theirs.
  model_.dropout_generator().set_state(parallel_ ? dropout_seed_for_rank(s.dropout_seed, parallel_->rank()) : s.dropout_seed,
                                       s.dropout_offset);
  best_valid_loss_ = s.best_valid_loss;
  best_valid_step_ = s.best_valid_step;
  evaluations_since_best_ = s.evaluations_since_best;
  carried_.reset();
  if (!s.carried_state.empty()) {
    LOOM_CHECK(config_.data.carry_over, "cannot resume from ", path, ": it holds a carried state but data.carry_over is off");
    NamedTensors on_device = s.carried_state;
    for (auto& entry : on_device) entry.second = entry.second.to(device_);
    carried_ = model_.start_decoding(config_.data.batch_size);
    carried_->load_tensors(on_device);
  }
  resumed_ = true;
}

namespace {

// The first component of `path` below `dir`, or "" when path is not inside dir.
std::string first_component_below(const std::filesystem::path& dir, const std::filesystem::path& path) {
  const std::filesystem::path relative = std::filesystem::weakly_canonical(path).lexically_relative(
      std::filesystem::weakly_canonical(dir));
  if (relative.empty() || *relative.begin() == "..") return "";
  return relative.begin()->string();
}

}  // namespace

void Trainer::lock_out_dir() {
  if (!is_writer() || lock_.held()) return;  // rank 0 alone owns out_dir
  lock_ = io::DirectoryLock(config_.training.out_dir, "training.out_dir");
}

void Trainer::with_out_dir_locked(const std::function<void()>& work) {
  lock_out_dir();
  try {
    work();
  } catch (...) {
    lock_ = {};  // a refused run leaves the directory free
    throw;
  }
}

void Trainer::prepare(bool overwrite) {
  if (prepared_) return;
  // The sample is taken at the first evaluation: a prompt it cannot encode would
  // end the run there, after steps that were never saved.
  if (config_.sample.length > 0) {
    try {
      check_prompt(data_.tokenizer, config_.sample.prompt);
    } catch (const Error& e) {
      LOOM_FAIL("sample.prompt \"", config_.sample.prompt.substr(0, 40), "\": ", e.what());
    }
  }
  if (!is_writer()) {
    prepared_ = true;
    return;
  }
  with_out_dir_locked([&] { prepare_locked(overwrite); });
  prepared_ = true;
}

void Trainer::prepare_locked(bool overwrite) {
  namespace fs = std::filesystem;
  const std::string& out_dir = config_.training.out_dir;
  std::error_code ec;

  // The log lives beside the checkpoints, never in their place.
  fs::path log_path;
  if (!config_.training.log.empty()) {
    log_path = fs::path(out_dir) / config_.training.log;
    const std::string first = first_component_below(out_dir, log_path);
    LOOM_CHECK(first != kCheckpointLink && first.rfind("checkpoint-", 0) != 0 && first.rfind(".checkpoint", 0) != 0 &&
                   first != io::kLockFile && first != "curves.svg",
               "training.log '", config_.training.log, "' would be written among the checkpoints (", log_path.string(),
               "); choose another name");
    LOOM_CHECK(!fs::is_directory(log_path), "training.log '", log_path.string(), "' is a directory");
  }

  // A used out_dir is resumed or, when asked, started over; never silently replaced.
  const int64_t latest = latest_checkpoint_step(out_dir);
  const bool has_log = !log_path.empty() && fs::exists(log_path, ec) && fs::file_size(log_path, ec) > 0;
  if (!resumed_ && (latest >= 0 || has_log)) {
    LOOM_CHECK(overwrite, "training.out_dir '", out_dir, "' already holds a run (",
               latest >= 0 ? "a checkpoint at step " + std::to_string(latest) : std::string("a metrics log"),
               "): continue it with --resume, start it over with --overwrite, or set another training.out_dir");
    remove_all_checkpoints(out_dir);
    if (has_log) fs::remove(log_path, ec);
    fs::remove(chart_path(), ec);
  }
  remove_stale_checkpoints(out_dir);  // what a killed save left
  io::remove_atomic_leftovers(chart_path());  // and a killed redraw of the chart
  saved_step_ = latest_checkpoint_step(out_dir);

  // The log is appended to, never truncated: a resumed run first notes where it
  // resumed, and readers drop earlier lines of later steps (plot_metrics.py does).
  if (!log_path.empty()) {
    fs::create_directories(log_path.parent_path(), ec);
    metrics_path_ = log_path.string();
    metrics_.open(log_path, std::ios::app);
    LOOM_CHECK(metrics_.good(), "training.log: cannot write '", log_path.string(), "'");
    if (resumed_) write_metrics(Json{{"resumed_at_step", step_}});
  }
}

void Trainer::write_metrics(const Json& entry) {
  if (!metrics_.is_open()) return;
  // One object per line; a byte that is not UTF-8 (a sample of a non-ASCII text) becomes U+FFFD.
  metrics_ << entry.dump(-1, ' ', false, Json::error_handler_t::replace) << '\n';
  metrics_.flush();
}

// The chart is a view of the log: drawn from the whole log, so a resumed run
// continues it. A chart that cannot be written costs a warning, never the run.
void Trainer::draw_chart() {
  if (metrics_path_.empty()) return;
  try {
    write_training_chart(metrics_path_, chart_path(),
                         config_.model.family + ", " + config_.training.out_dir + ": training curves");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nwarning: the chart %s was not updated: %s\n", chart_path().c_str(), e.what());
  }
}

bool Trainer::run(const RunOptions& options) {
  const int64_t total = total_steps();
  const TrainingConfig& t = config_.training;
  prepare(options.overwrite);
  stop_flag_ = options.stop;
  if (parallel_ && !parameters_synced_) {
    // Every rank starts from rank 0's weights, fresh or resumed, whatever N.
    parallel_->broadcast_from_rank0(model_);
    parameters_synced_ = true;
  }
  const bool writer = is_writer();
  const bool tty = writer && options.progress && ::isatty(::fileno(stderr));
  const double flops_per_token = model_.training_flops_per_token(config_.data.seq_len);

  // Accumulated since the last log line.
  double interval_loss = 0, interval_seconds = 0, interval_cpu_seconds = 0;
  int64_t interval_steps = 0, interval_tokens = 0;
  double seconds_per_step = 0;
  auto last_draw = Clock::now() - std::chrono::seconds(1);

  double peak_gflops = options.peak_gflops;  // the best probe so far (RunOptions)
  bool warned_above_peak = false;
  auto progress_text = [&](const StepResult& r, double tokens_per_s) {
    char buffer[256];
    std::snprintf(buffer, sizeof buffer, "step %lld/%lld | loss %.4f | lr %.3g | %s tok/s",
                  (long long)step_, (long long)total, r.loss, r.lr, rate_text(tokens_per_s).c_str());
    std::string line = buffer;
    if (peak_gflops > 0) {
      // Never above 100%: a rate over the peak means the peak or the FLOP count is wrong.
      const double gflops = flops_per_token * tokens_per_s * 1e-9;
      line += " | MFU " + share_of_peak(gflops, peak_gflops);
      if (exceeds_peak(gflops, peak_gflops) && !warned_above_peak) {
        std::fprintf(stderr,
                     "\n!!! WARNING: training runs at %.1f GFLOP/s, above the peak of %.1f GFLOP/s: the peak "
                     "(--peak-gflops or the FMA probe) or the model's FLOP count is wrong; MFU is not shown\n",
                     gflops, peak_gflops);
        warned_above_peak = true;
      }
    }
    line += " | " + duration_text(elapsed_) + " elapsed, ETA " + duration_text(seconds_per_step * (total - step_));
    return line;
  };
  auto clear_line = [&] {
    if (tty) std::fputs("\r\033[K", stderr);
  };

  auto report_early_stop = [&] {
    if (writer && options.progress)
      std::fprintf(stderr, "stopped early at step %lld: %lld validations without a loss below %.4f (step %lld)\n",
                   (long long)step_, (long long)config_.training.patience, best_valid_loss_, (long long)best_valid_step_);
  };
  if (stopped_early()) {  // a resumed run that had already stopped
    report_early_stop();
    return true;
  }
  if (writer && options.progress && step_ >= total)
    std::fprintf(stderr, "already at step %lld of %lld: nothing to do\n", (long long)step_, (long long)total);
  while (step_ < total) {
    const auto start = Clock::now();
    const double cpu_start = process_cpu_seconds();
    const StepResult r = train_step();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    interval_cpu_seconds += process_cpu_seconds() - cpu_start;
    elapsed_ += seconds;
    interval_loss += r.loss;
    interval_seconds += seconds;
    interval_steps += 1;
    interval_tokens += r.tokens;
    seconds_per_step = interval_seconds / interval_steps;
    const double tokens_per_s = interval_tokens / std::max(interval_seconds, 1e-9);

    if (tty && Clock::now() - last_draw > std::chrono::milliseconds(100)) {
      std::fprintf(stderr, "\r\033[K%s", progress_text(r, tokens_per_s).c_str());
      std::fflush(stderr);
      last_draw = Clock::now();
    }

    const bool last = step_ == total;
    if (step_ % t.log_interval == 0 || last) {
      StepResult mean = r;
      mean.loss = interval_loss / interval_steps;
      if (writer && options.progress && !tty)
        std::fprintf(stderr, "%s\n", progress_text(mean, tokens_per_s).c_str());
      Json entry = {{"step", step_}, {"loss", mean.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm},
                    {"tokens_per_s", tokens_per_s},
                    {"tokens_per_cpu_s", interval_tokens / std::max(interval_cpu_seconds, 1e-9)},
                    {"elapsed", elapsed_}};
      if (peak_gflops > 0) entry["mfu"] = flops_per_token * tokens_per_s / (peak_gflops * 1e9);
      write_metrics(entry);
      interval_loss = interval_seconds = interval_cpu_seconds = 0;
      interval_steps = interval_tokens = 0;
    }

    if (writer && ((t.eval_interval > 0 && step_ % t.eval_interval == 0) || last)) {
      const auto eval_start = Clock::now();
      if (options.probe_peak_gflops) peak_gflops = std::max(peak_gflops, options.probe_peak_gflops());
      const EvalResult e = evaluate();
      elapsed_ += std::chrono::duration<double>(Clock::now() - eval_start).count();
      if (options.progress) {
        clear_line();
        std::printf("step %lld | valid loss %.4f | valid acc %.4f", (long long)step_, e.loss, e.accuracy);
        if (config_.sample.length > 0) std::printf(" | %s", one_line(config_.sample.prompt + e.sample).c_str());
        std::printf("\n");
        std::fflush(stdout);
      }
      record_validation(e.loss);
      write_metrics(Json{{"step", step_},
                         {"valid_loss", e.loss},
                         {"valid_acc", e.accuracy},
                         {"best_valid_loss", best_valid_loss_},
                         {"best_valid_step", best_valid_step_},
                         {"sample", config_.sample.prompt + e.sample}});
      draw_chart();
    }
    const bool early = stopped_early();

    // Under data parallelism the request of any rank, agreed in the step: all stop after the same one.
    const bool stop = parallel_ ? stop_agreed_ : options.stop && options.stop->load();
    if (writer && ((t.checkpoint_interval > 0 && step_ % t.checkpoint_interval == 0) || last || stop || early) &&
        step_ != saved_step_) {
      const std::string dir = save();
      if (options.progress) {
        clear_line();
        std::fprintf(stderr, "step %lld: saved %s\n", (long long)step_, dir.c_str());
      }
    }
    if (early) {
      clear_line();
      write_metrics(Json{{"stopped_early_at_step", step_},
                         {"best_valid_loss", best_valid_loss_},
                         {"best_valid_step", best_valid_step_}});
      report_early_stop();
      return true;
    }
    if (stop && !last) {
      clear_line();
      if (writer && options.progress)
        std::fprintf(stderr, "stopped at step %lld of %lld; continue with --resume %s\n", (long long)step_,
                     (long long)total, t.out_dir.c_str());
      return false;
    }
  }
  clear_line();
  return true;
}

}  // namespace loom::models
