// test_crash_safety.cpp: nothing is lost when a save fails or the process dies, and
// a second run never reads a run directory another run is writing.
//
// Tests against models/programs/checkpoint.h (and the chart of models/programs/charts.h, written the same way):
//  - every file system call of a save (open, write, fsync, close, rename, mkdir,
//    symlink; engine/file_io.h's seam) is made to fail in turn: the save throws,
//    the newest complete checkpoint still loads and resumes, nothing temporary is
//    left, and the next save works;
//  - the real `train` program is killed with SIGKILL at random moments: after
//    each kill the run's checkpoint loads, and resuming to the end gives weights
//    bit-identical to an uninterrupted run, with nothing left behind.
// Against the out_dir lock (io::DirectoryLock):
//  - while a `train` saves at every step, a second `train` (--resume, --resume DIR,
//    --overwrite or fresh) started at random moments always gets the "in use by
//    process N" error and nothing else;
//  - with out_dir locked and holding a checkpoint link to nothing, `train --resume`,
//    `algorithmic` and `retrieval` say it is in use: they lock before they read.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "engine/file_io.h"
#include "engine/safetensors.h"
#include "model_test_utils.h"
#include "models/programs/charts.h"
#include "models/programs/checkpoint.h"
#include "models/programs/config.h"
#include "models/families/language_model.h"

namespace loom::test {

namespace fs = std::filesystem;

namespace {

// The real file system, except that call number `fail_at` (counting from 1) fails
// with EIO. Records the kind of every call.
struct FaultyFileSystem : io::FileSystem {
  int calls = 0, fail_at = 0;
  std::vector<std::string> kinds;

  bool fail(const char* kind) {
    kinds.push_back(kind);
    if (++calls != fail_at) return false;
    errno = EIO;
    return true;
  }
  std::set<int> directories;  // descriptors opened with O_DIRECTORY (to fsync a directory)

  int open(const char* path, int flags, mode_t mode) override {
    if (fail("open")) return -1;
    const int fd = FileSystem::open(path, flags, mode);
    if (fd >= 0 && (flags & O_DIRECTORY)) directories.insert(fd);
    return fd;
  }
  ssize_t write(int fd, const void* data, size_t bytes) override {
    return fail("write") ? -1 : FileSystem::write(fd, data, bytes);
  }
  int fsync(int fd) override { return fail("fsync") ? -1 : FileSystem::fsync(fd); }
  int close(int fd) override {
    const bool failed = fail(directories.erase(fd) ? "close of a directory" : "close");
    const int result = FileSystem::close(fd);  // the descriptor is gone either way, as with close(2)
    return failed ? -1 : result;
  }
  int rename(const char* from, const char* to) override { return fail("rename") ? -1 : FileSystem::rename(from, to); }
  int mkdir(const char* path, mode_t mode) override { return fail("mkdir") ? -1 : FileSystem::mkdir(path, mode); }
  int symlink(const char* target, const char* link) override {
    return fail("symlink") ? -1 : FileSystem::symlink(target, link);
  }
};

models::TrainingState state_at(int64_t step) {
  models::TrainingState s;
  s.step = step;
  s.config_json = R"({"model": {"family": "bigram"}})";
  s.train_batcher = {1, 0, step};
  s.vocab = "abc";
  return s;
}

void take_adam_step(TinyModule& model, models::Adam& adam, double g) {
  for (const Tensor& p : model.parameters()) p.set_grad(Tensor::full(p.shape(), g));
  adam.step();
  adam.zero_grad();
}

// Names in `dir` that an interrupted save could leave behind.
std::vector<std::string> temporaries(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp-") != std::string::npos) found.push_back(e.path().string());
  }
  return found;
}

std::vector<std::string> checkpoint_directories(const std::string& run) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(run))
    if (e.path().filename().string().rfind("checkpoint-", 0) == 0) found.push_back(e.path().filename().string());
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

TEST_CASE("crash safety: every write, fsync and rename of a save failing in turn loses nothing") {
  TempDir dir("crash-faults");
  const std::string run = dir.file("run");
  fs::create_directories(run);
  TinyModule model(Generator(1));
  models::Adam adam(model.named_parameters(), models::AdamOptions{}, models::LrSchedule::constant(0.1));
  take_adam_step(model, adam, 0.5);
  models::save_checkpoint(run, model, adam, state_at(1));
  const std::vector<float> weight_at_1 = model.weight.to_vector<float>();
  take_adam_step(model, adam, -0.25);
  const std::vector<float> weight_at_2 = model.weight.to_vector<float>();

  // A save that succeeds, counted: the calls every run below fails one of.
  FaultyFileSystem counting;
  {
    TempDir scratch("crash-faults-count");
    io::ScopedFileSystem use(counting);
    models::save_checkpoint(scratch.path.string(), model, adam, state_at(2));
  }
  const int total = counting.calls;
  for (const char* kind : {"open", "write", "fsync", "close", "rename", "mkdir", "symlink"})
    CHECK_MESSAGE(std::count(counting.kinds.begin(), counting.kinds.end(), kind) > 0, kind, " is not exercised");
  REQUIRE(total > 20);

  for (int k = 1; k <= total; ++k) {
    INFO("call ", k, " of ", total, " fails: ", counting.kinds[k - 1]);
    FaultyFileSystem faulty;
    faulty.fail_at = k;
    // Closing a directory after its fsync may fail harmlessly: the fsync told.
    const bool harmless = counting.kinds[k - 1] == "close of a directory";
    {
      io::ScopedFileSystem use(faulty);
      const std::string message = error_of([&] { models::save_checkpoint(run, model, adam, state_at(2)); });
      CHECK(harmless ? message.empty() : contains(message, "Input/output error"));
    }
    // Nothing temporary is left; the link names a complete checkpoint, the old one
    // unless only the final directory sync failed (the link had already moved).
    CHECK(temporaries(run).empty());
    const int64_t newest = models::latest_checkpoint_step(run);
    CHECK((newest == 1 || (newest == 2 && (harmless || k >= total - 2))));
    const std::vector<std::string> dirs = checkpoint_directories(run);
    CHECK(dirs.size() <= 2);
    CHECK(std::count(dirs.begin(), dirs.end(), "checkpoint-" + std::to_string(newest)) == 1);

    TinyModule loaded(Generator(9));
    models::Adam loaded_adam(loaded.named_parameters(), models::AdamOptions{}, models::LrSchedule::constant(0.1));
    const models::TrainingState back = models::load_checkpoint(run, loaded, loaded_adam);
    CHECK(back.step == newest);
    CHECK(back.vocab == "abc");
    CHECK(loaded.weight.to_vector<float>() == (newest == 1 ? weight_at_1 : weight_at_2));
    CHECK(loaded_adam.steps_taken() == newest);

    // Back to the state of step 1 on disk, for the next round.
    if (newest == 2) {
      TinyModule one(Generator(1));
      models::Adam one_adam(one.named_parameters(), models::AdamOptions{}, models::LrSchedule::constant(0.1));
      take_adam_step(one, one_adam, 0.5);
      models::remove_all_checkpoints(run);
      models::save_checkpoint(run, one, one_adam, state_at(1));
    }
  }
  // And a save after all those failures works and leaves exactly one checkpoint.
  models::save_checkpoint(run, model, adam, state_at(2));
  CHECK(checkpoint_directories(run) == std::vector<std::string>{"checkpoint-2"});
  CHECK(temporaries(run).empty());
}

TEST_CASE("crash safety: a chart write failing at any call leaves the previous chart whole") {
  TempDir dir("crash-chart");
  const std::string chart = dir.file("curves.svg");
  models::TrainingCurves before, after;
  before.train_loss = {{1, 4.0}, {2, 3.5}};
  after = before;
  after.train_loss.emplace_back(3, 3.25);
  after.valid_loss = {{3, 3.4}};
  models::write_training_chart(chart, before, "run");
  const auto read = [&] {
    std::ifstream in(chart);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string old_text = read();
  const std::string new_text = models::chart_svg(models::training_chart(after, "run"));
  REQUIRE(old_text != new_text);

  FaultyFileSystem counting;
  {
    TempDir scratch("crash-chart-count");
    io::ScopedFileSystem use(counting);
    models::write_training_chart(scratch.file("curves.svg"), after, "run");
  }
  const int total = counting.calls;
  const auto rename_call = std::find(counting.kinds.begin(), counting.kinds.end(), "rename");
  REQUIRE(rename_call != counting.kinds.end());
  const int renamed_at = static_cast<int>(rename_call - counting.kinds.begin()) + 1;
  for (int k = 1; k <= total; ++k) {
    INFO("call ", k, " of ", total, " fails: ", counting.kinds[k - 1]);
    FaultyFileSystem faulty;
    faulty.fail_at = k;
    {
      io::ScopedFileSystem use(faulty);
      const std::string message = error_of([&] { models::write_training_chart(chart, after, "run"); });
      CHECK((counting.kinds[k - 1] == "close of a directory" || contains(message, "Input/output error")));
    }
    // One whole chart: the old one, or the new one once the rename has happened; nothing temporary.
    CHECK(read() == (k > renamed_at ? new_text : old_text));
    CHECK(temporaries(dir.path.string()).empty());
    models::write_training_chart(chart, before, "run");  // back to the old chart
  }
}

TEST_CASE("crash safety: leftovers of a killed save are removed by the next save") {
  TempDir dir("crash-leftovers");
  const std::string run = dir.file("run");
  fs::create_directories(run);
  TinyModule model(Generator(1));
  models::Adam adam(model.named_parameters(), models::AdamOptions{}, models::LrSchedule::constant(0.1));
  models::save_checkpoint(run, model, adam, state_at(1));
  // What a SIGKILL at various moments leaves: a half-written directory, a link not
  // yet renamed, a complete directory the link never reached.
  fs::create_directories(run + "/.checkpoint-2.tmp-abc123");
  std::ofstream(run + "/.checkpoint-2.tmp-abc123/model.safetensors.tmp-xyz789") << "half";
  fs::create_symlink("checkpoint-2", run + "/checkpoint.tmp-q1w2e3");
  fs::create_directories(run + "/checkpoint-2");
  CHECK(models::latest_checkpoint_step(run) == 1);  // the link still names the complete one
  CHECK(models::remove_stale_checkpoints(run) == 3);
  CHECK(checkpoint_directories(run) == std::vector<std::string>{"checkpoint-1"});
  CHECK(temporaries(run).empty());
}

TEST_CASE("crash safety: an atomic write's leftovers are removed, and nothing else") {
  TempDir dir("crash-atomic-leftovers");
  const std::string target = dir.file("curves.svg");
  // What a SIGKILL between creating the temporary and renaming it leaves, twice.
  std::ofstream(target + ".tmp-abc123") << "<svg";
  std::ofstream(target + ".tmp-9z8y7x") << "";
  // Not leftovers of this target: another file's, a name of another form, the target.
  const std::vector<std::string> kept = {dir.file("metrics.jsonl.tmp-abc123"), target + ".tmp-abc1234",
                                         target + ".tmp-ABC123", target + ".tmp-abc12", target};
  for (const std::string& file : kept) std::ofstream(file) << "keep";
  CHECK(io::remove_atomic_leftovers(target) == 2);
  CHECK(!fs::exists(target + ".tmp-abc123"));
  CHECK(!fs::exists(target + ".tmp-9z8y7x"));
  for (const std::string& file : kept) CHECK_MESSAGE(fs::exists(file), file);
  CHECK(io::remove_atomic_leftovers(dir.file("missing/curves.svg")) == 0);  // no directory: nothing to do
}

// ---- the real program, killed --------------------------------------------------------------

namespace {

std::string program(const char* name) { return std::string(LOOM_BUILD_ROOT) + "/examples/" + name; }

// Starts `args` with stdout and stderr going to `log`; returns the pid.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) ::dup2(fd, 1), ::dup2(fd, 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// The exit status, or 128 + the signal.
int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string text_for_training() {
  const char* words[] = {"the", "king", "is", "dead", "long", "live", "queen"};
  std::string text;
  uint64_t state = 7;
  while (text.size() < 20000) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    text += words[(state >> 33) % 7];
    text += (state >> 20) % 9 == 0 ? "\n" : " ";
  }
  return text;
}

// A config for a run of `steps` bigram steps, a checkpoint after every step.
std::string write_config(const TempDir& dir, const std::string& name, int steps) {
  const std::string path = dir.file(name + ".json");
  std::ofstream(path) << R"({"model": {"family": "bigram", "d_model": 16, "seed": 2},
    "data": {"path": ")" << dir.file("text.txt") << R"(", "url": "", "seq_len": 16, "batch_size": 4},
    "training": {"steps": )" << steps << R"(, "log_interval": 1, "eval_interval": 10, "eval_batches": 1,
                 "checkpoint_interval": 1, "out_dir": ")" << dir.file(name) << R"(", "threads": 1},
    "sample": {"prompt": "the ", "length": 4}})";
  return path;
}

std::vector<std::string> train_args(const std::string& config, std::vector<std::string> extra) {
  std::vector<std::string> args = {program("train"), config, "--peak-gflops", "1"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

NamedTensors newest_model(const std::string& run) {
  return load_safetensors(models::find_checkpoint(run) + "/" + models::kModelFile);
}

// Loads the run's checkpoint the way a resume does, into a fresh model.
int64_t load_run(const std::string& run) {
  const std::string dir = models::find_checkpoint(run);
  const auto meta = load_safetensors_metadata(dir + "/" + models::kModelFile);
  const models::TrainConfig config = models::parse_train_config(meta.at("config"));
  std::unique_ptr<models::LanguageModel> model = models::make_model(config.model);
  models::Adam adam(model->named_parameters(), models::AdamOptions{}, models::LrSchedule::constant(1));
  return models::load_checkpoint(run, *model, adam).step;
}

}  // namespace

TEST_CASE("crash safety: train killed with SIGKILL at random moments resumes to the uninterrupted result") {
  REQUIRE_MESSAGE(fs::exists(program("train")), program("train"), " is not built (meson test builds it)");
  TempDir dir("crash-kill");
  std::ofstream(dir.file("text.txt")) << text_for_training();
  const int steps = 40;

  // The uninterrupted run, timed: kills land anywhere in a run of this length.
  const std::string whole_config = write_config(dir, "whole", steps);
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(wait_for(spawn(train_args(whole_config, {}), dir.file("whole.log"))) == 0);
  const double run_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  const std::string config = write_config(dir, "killed", steps);
  const std::string run = dir.file("killed");
  std::mt19937 random(20261130);  // fixed: the same kill moments in every CI run
  int64_t newest = -1;
  const int kills = 12;
  for (int i = 0; i < kills; ++i) {
    INFO("kill ", i + 1);
    // The first run starts fresh; later ones resume, or start over when no checkpoint was made yet.
    std::vector<std::string> mode;
    if (newest >= 0) mode = {"--resume"};
    else if (fs::exists(run)) mode = {"--overwrite"};
    const pid_t pid = spawn(train_args(config, mode), dir.file("killed.log"));
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(
        std::uniform_real_distribution<double>(0.0, 0.8 * run_ms)(random)));
    ::kill(pid, SIGKILL);
    const int status = wait_for(pid);
    CHECK((status == 128 + SIGKILL || status == 0));
    if (!fs::exists(run + "/" + models::kCheckpointLink)) continue;
    const int64_t step = load_run(run);  // the newest checkpoint always loads
    CHECK(step >= newest);               // and never goes back
    newest = step;
  }
  // Resumed to the end: exit 0, the uninterrupted weights bit for bit, nothing left behind.
  const std::vector<std::string> finish = newest >= 0 ? std::vector<std::string>{"--resume"}
                                                      : std::vector<std::string>{"--overwrite"};
  REQUIRE(wait_for(spawn(train_args(config, finish), dir.file("killed.log"))) == 0);
  CHECK(load_run(run) == steps);
  const NamedTensors a = newest_model(dir.file("whole")), b = newest_model(run);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    CHECK(a[i].second.to_vector<float>() == b[i].second.to_vector<float>());
  }
  CHECK(temporaries(run).empty());
  CHECK(checkpoint_directories(run) == std::vector<std::string>{"checkpoint-" + std::to_string(steps)});
}

namespace {

size_t count_of(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// A run's output when `dir` was in use by process `holder`: that error and no other.
void check_only_in_use(const std::string& log, const std::string& setting, const std::string& dir, pid_t holder) {
  INFO("output:\n", log);
  CHECK(contains(log, "error: " + setting + " '" + dir + "' is in use by another run (process " +
                          std::to_string(holder) + ")"));
  CHECK(count_of(log, "error") == 1);
  CHECK(!contains(log, "resumed from"));
}

}  // namespace

TEST_CASE("crash safety: train and the sweep programs remove the temporaries a killed run left") {
  // A kill while the chart is being redrawn leaves curves.svg.tmp-XXXXXX; the
  // next train in that out_dir removes it (the random kills above can land there).
  REQUIRE(fs::exists(program("train")));
  TempDir dir("crash-chart-leftover");
  std::ofstream(dir.file("text.txt")) << text_for_training();
  const std::string config = write_config(dir, "run", 2);
  const std::string run = dir.file("run");
  REQUIRE(wait_for(spawn(train_args(config, {}), dir.file("first.log"))) == 0);
  std::ofstream(run + "/curves.svg.tmp-k1ll3d") << "<svg";
  REQUIRE(wait_for(spawn(train_args(config, {"--resume"}), dir.file("resumed.log"))) == 0);
  CHECK(temporaries(run).empty());
  CHECK(fs::exists(run + "/curves.svg"));

  // algorithmic the same for its run's files and its sweep chart; a CSV's
  // temporary stays, since another sweep may be writing that CSV (--csv).
  const std::string out = dir.file("sweep");
  fs::create_directories(out + "/lstm-seed1");
  for (const std::string& leftover : {out + "/lstm-seed1/run_state.safetensors.tmp-k1ll3d",
                                      out + "/lstm-seed1/metrics.jsonl.tmp-k1ll3d", out + "/valid_accuracy.svg.tmp-k1ll3d"})
    std::ofstream(leftover) << "half";
  std::ofstream(out + "/results.csv.tmp-0th3r5") << "layer";
  const std::string quick = std::string(LOOM_SOURCE_ROOT) + "/examples/configs/code_execution_quick.json";
  REQUIRE(fs::exists(program("algorithmic")));
  // Exit 1 is the config's "expect" failing after two steps; the files are what count.
  wait_for(spawn({program("algorithmic"), quick, "--out", out, "--steps", "2", "--threads", "1"}, dir.file("alg.log")));
  CHECK(fs::exists(out + "/lstm-seed1/run_state.safetensors"));
  CHECK(temporaries(out) == std::vector<std::string>{out + "/results.csv.tmp-0th3r5"});

  // retrieval too: its CSV is its own (out_dir/results.csv, locked), so that goes as well.
  const std::string sweep = dir.file("retrieval");
  fs::create_directories(sweep);
  for (const std::string& leftover : {sweep + "/results.csv.tmp-k1ll3d", sweep + "/setting1.svg.tmp-k1ll3d"})
    std::ofstream(leftover) << "half";
  const std::string tiny = dir.file("retrieval.json");
  std::ofstream(tiny) << R"({"out_dir": ")" << sweep << R"(", "seed": 1, "hidden": 8,
    "protocol": {"batch_size": 2, "lr": 0.001, "eval_interval": 1, "eval_sequences": 1, "eval_max_queries": 4,
                 "eval_length": "num_keys", "stop_loss": 0.001, "patience": 1, "max_steps": 2},
    "sweeps": [{"setting": 1, "keys": [4], "models": ["linear/sum"]}]})";
  REQUIRE(fs::exists(program("retrieval")));
  CHECK(wait_for(spawn({program("retrieval"), tiny, "--threads", "1"}, dir.file("retrieval.log"))) == 0);
  CHECK(fs::exists(sweep + "/results.csv"));
  CHECK(temporaries(sweep).empty());
}

TEST_CASE("crash safety: train with a bad LOOM_GEMM says so and writes nothing") {
  REQUIRE_MESSAGE(fs::exists(program("train")), program("train"), " is not built (meson test builds it)");
  TempDir dir("bad-gemm");
  std::ofstream(dir.file("text.txt")) << text_for_training();
  const std::string config = write_config(dir, "run", 2);
  // The child inherits the variable; this process chose its library long ago.
  ::setenv("LOOM_GEMM", "mkl", 1);
  const int status = wait_for(spawn(train_args(config, {}), dir.file("log.txt")));
  ::unsetenv("LOOM_GEMM");
  CHECK(status == 1);
  check_mentions(read_bytes(dir.file("log.txt")), {"LOOM_GEMM=mkl", "eigen, openblas or auto"});
  CHECK_FALSE(fs::exists(dir.file("run")));
}

TEST_CASE("crash safety: a second train against a run saving at every step is told, every time, that it is in use") {
  REQUIRE(fs::exists(program("train")));
  TempDir dir("crash-second-run");
  std::ofstream(dir.file("text.txt")) << text_for_training();
  const std::string config = write_config(dir, "run", 1000000);
  const std::string run = dir.file("run");
  const pid_t first = spawn(train_args(config, {"--threads", "1"}), dir.file("first.log"));
  for (int i = 0; i < 600 && !fs::exists(run + "/" + models::kCheckpointLink); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(fs::exists(run + "/" + models::kCheckpointLink));

  // Each mode in turn, at random moments of the first run's saves.
  const std::vector<std::vector<std::string>> modes = {{"--resume"}, {"--resume", run}, {"--overwrite"}, {}};
  std::mt19937 random(20261205);
  const int attempts = 16;
  for (int i = 0; i < attempts; ++i) {
    std::this_thread::sleep_for(
        std::chrono::duration<double, std::milli>(std::uniform_real_distribution<double>(0.0, 60.0)(random)));
    const std::string log = dir.file("second-" + std::to_string(i) + ".log");
    std::vector<std::string> args = modes[i % modes.size()];
    args.insert(args.end(), {"--threads", "1"});
    INFO("attempt ", i, " with ", args.front());
    CHECK(wait_for(spawn(train_args(config, args), log)) == 1);
    check_only_in_use(read_bytes(log), "training.out_dir", run, first);
  }
  // The first run never noticed: it stops on request, its checkpoint loads.
  ::kill(first, SIGTERM);
  CHECK(wait_for(first) == 128 + SIGTERM);
  CHECK(load_run(run) >= 1);
  CHECK(temporaries(run).empty());
}

TEST_CASE("crash safety: train --resume, algorithmic and retrieval lock out_dir before they read anything there") {
  REQUIRE(fs::exists(program("train")));
  TempDir dir("crash-lock-first");
  std::ofstream(dir.file("text.txt")) << text_for_training();
  const std::string config = write_config(dir, "run", 4);
  const std::string run = dir.file("run");
  // The lock held by this process, and a link to a checkpoint that is not there: a
  // program that reads before it locks reports the missing checkpoint instead.
  const io::DirectoryLock held(run, "test");
  fs::create_symlink("checkpoint-4", run + "/" + models::kCheckpointLink);

  for (const std::vector<std::string>& mode : std::vector<std::vector<std::string>>{{"--resume"}, {"--resume", run}}) {
    const std::string log = dir.file("train" + std::to_string(mode.size()) + ".log");
    CHECK(wait_for(spawn(train_args(config, mode), log)) == 1);
    check_only_in_use(read_bytes(log), "training.out_dir", run, ::getpid());
  }
  const std::string configs = std::string(LOOM_SOURCE_ROOT) + "/examples/configs/";
  // Plain names instead of structured bindings: clang 14 cannot capture bindings in doctest's lambdas.
  for (const auto& program_and_config : {std::pair<std::string, std::string>{"algorithmic", "code_execution_quick.json"},
                                         {"retrieval", "retrieval_quick.json"}}) {
    const std::string& name = program_and_config.first;
    const std::string& config_file = program_and_config.second;
    REQUIRE_MESSAGE(fs::exists(program(name.c_str())), program(name.c_str()), " is not built (meson test builds it)");
    const std::string log = dir.file(name + ".log");
    CHECK(wait_for(spawn({program(name.c_str()), configs + config_file, "--out", run, "--threads", "1"}, log)) == 1);
    check_only_in_use(read_bytes(log), "out_dir", run, ::getpid());
  }
  CHECK(!fs::exists(run + "/results.csv"));
}

TEST_CASE("crash safety: SIGTERM finishes the step, saves and exits 143; --resume takes an optional path") {
  REQUIRE(fs::exists(program("train")));
  TempDir dir("crash-signal");
  std::ofstream(dir.file("text.txt")) << text_for_training();
  const std::string config = write_config(dir, "run", 1000000);
  const std::string run = dir.file("run"), log = dir.file("run.log");

  // "--resume --threads 1": --resume without a path, then another flag.
  REQUIRE(wait_for(spawn(train_args(config, {"--resume", "--threads", "1"}), log)) == 1);
  std::ifstream first(log);
  const std::string refused(std::istreambuf_iterator<char>(first), {});
  CHECK(contains(refused, "--resume: training.out_dir '" + run + "' holds no checkpoint to resume"));
  CHECK(!contains(refused, "unknown or incomplete argument"));

  const pid_t pid = spawn(train_args(config, {"--threads", "1"}), log);
  // Wait until it has saved once (a checkpoint after every step), then ask it to stop.
  for (int i = 0; i < 600 && !fs::exists(run + "/" + models::kCheckpointLink); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ::kill(pid, SIGTERM);
  CHECK(wait_for(pid) == 128 + SIGTERM);
  const int64_t step = load_run(run);
  CHECK(step >= 1);
  std::ifstream output(log);
  const std::string text(std::istreambuf_iterator<char>(output), {});
  CHECK(contains(text, "stopped at step " + std::to_string(step) + " of 1000000; continue with --resume"));
  CHECK(contains(text, "terminated (SIGTERM)"));
  CHECK(temporaries(run).empty());
}

}  // namespace loom::test
