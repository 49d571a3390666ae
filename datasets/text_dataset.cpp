#include "datasets/text_dataset.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/error.h"

extern char** environ;

namespace loom::datasets {

namespace {

namespace fs = std::filesystem;

// Runs curl and returns "" on success, otherwise the reason it failed
// (curl's own one-line message when it printed one).
std::string run_curl(const std::string& url, const std::string& output) {
  int err_pipe[2];
  if (::pipe(err_pipe) != 0) return detail::concat("cannot create a pipe: ", std::strerror(errno));

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addclose(&actions, err_pipe[0]);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, err_pipe[1]);

  // --fail turns HTTP errors into a non-zero exit; -sS keeps only the error line.
  std::vector<std::string> args = {"curl",           "--fail", "--silent", "--show-error", "--location",
                                   "--connect-timeout", "30",  "--max-time", "600",        "--output",
                                   output,           url};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = 0;
  const int spawn_error = ::posix_spawnp(&pid, "curl", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(err_pipe[1]);
  if (spawn_error != 0) {
    ::close(err_pipe[0]);
    return spawn_error == ENOENT ? std::string("the curl command-line tool is not installed (or not on PATH)")
                                 : detail::concat("cannot run curl: ", std::strerror(spawn_error));
  }

  // Read stderr to the end before waiting, so curl never blocks on a full pipe.
  std::string message;
  char buffer[512];
  for (;;) {
    const ssize_t n = ::read(err_pipe[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    message.append(buffer, static_cast<size_t>(n));
  }
  ::close(err_pipe[0]);

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) message.pop_back();
  if (!message.empty()) return message;
  if (WIFEXITED(status)) return detail::concat("curl exited with status ", WEXITSTATUS(status));
  return "curl was killed by a signal";
}

}  // namespace

void download_file(const std::string& url, const std::string& path) {
  auto fail = [&](const std::string& reason) {
    LOOM_FAIL("could not download ", url, ": ", reason, "; place the file at ", path, " by hand");
  };
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) fail(detail::concat("cannot create the directory ", parent.string(), ": ", ec.message()));

  // A temporary name next to the target: an interrupted download never looks like a complete file.
  std::string tmp = path + ".download-XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) fail(detail::concat("cannot create a temporary file next to it: ", std::strerror(errno)));
  ::close(fd);

  const std::string reason = run_curl(url, tmp);
  if (!reason.empty()) {
    fs::remove(tmp, ec);
    fail(reason);
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    fail(detail::concat("cannot move the download into place: ", ec.message()));
  }
}

std::string read_text_file(const std::string& path, const std::string& url) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    LOOM_CHECK(!url.empty(), "text dataset: file ", path, " not found (and no download URL was given)");
    download_file(url, path);
  }
  LOOM_CHECK(!fs::is_directory(path, ec), "text dataset: ", path, " is a directory, not a text file");
  std::ifstream in(path, std::ios::binary);
  LOOM_CHECK(in.is_open(), "text dataset: cannot open ", path, ": ", std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  LOOM_CHECK(!in.bad(), "text dataset: cannot read ", path);
  return text.str();
}

TextDataset TextDataset::from_text(std::string text, std::optional<CharTokenizer> tokenizer, double train_fraction) {
  LOOM_CHECK(train_fraction >= 0.0 && train_fraction <= 1.0, "text dataset: train_fraction ", train_fraction,
             " is outside [0, 1]");
  TextDataset d;
  d.tokenizer = tokenizer ? std::move(*tokenizer) : CharTokenizer::from_text(text);
  // The same double arithmetic and truncation as Python's int(0.9 * len(text)).
  d.train_chars = static_cast<int64_t>(train_fraction * static_cast<double>(text.size()));
  const std::string_view all(text);
  int64_t dropped_train = 0, dropped_valid = 0;
  d.train_ids = d.tokenizer.encode(all.substr(0, static_cast<size_t>(d.train_chars)), &dropped_train);
  d.valid_ids = d.tokenizer.encode(all.substr(static_cast<size_t>(d.train_chars)), &dropped_valid);
  d.dropped = dropped_train + dropped_valid;
  d.text = std::move(text);
  return d;
}

TextDataset TextDataset::load(const std::string& path, const std::string& url, std::optional<CharTokenizer> tokenizer,
                              double train_fraction) {
  return from_text(read_text_file(path, url), std::move(tokenizer), train_fraction);
}

}  // namespace loom::datasets
