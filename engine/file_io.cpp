#include "engine/file_io.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <vector>

#include "engine/error.h"

namespace loom::io {

// ---- the seam -----------------------------------------------------------------------------

int FileSystem::open(const char* path, int flags, mode_t mode) { return ::open(path, flags | O_CLOEXEC, mode); }
ssize_t FileSystem::write(int fd, const void* data, size_t bytes) { return ::write(fd, data, bytes); }
int FileSystem::fsync(int fd) { return ::fsync(fd); }
int FileSystem::close(int fd) { return ::close(fd); }
int FileSystem::rename(const char* from, const char* to) { return ::rename(from, to); }
int FileSystem::mkdir(const char* path, mode_t mode) { return ::mkdir(path, mode); }
int FileSystem::symlink(const char* target, const char* link) { return ::symlink(target, link); }

namespace {

FileSystem* current_file_system() {
  static FileSystem real;
  return &real;
}
FileSystem* installed = nullptr;

// A temporary's suffix: kSuffixLength digits of base 36 (remove_atomic_leftovers
// recognises exactly this form).
constexpr int kSuffixLength = 6;
constexpr std::string_view kSuffixDigits = "0123456789abcdefghijklmnopqrstuvwxyz";

bool is_suffix_digit(char c) { return kSuffixDigits.find(c) != std::string_view::npos; }

// A suffix unlikely to be taken: the pid, a counter and the clock, in base 36.
std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  uint64_t x = static_cast<uint64_t>(::getpid()) * 1000003u ^ counter.fetch_add(1) * 7919u ^
               static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  const uint64_t base = kSuffixDigits.size();
  std::string s;
  for (int i = 0; i < kSuffixLength; ++i, x /= base) s.push_back(kSuffixDigits[x % base]);
  return s;
}

std::string parent_directory(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

}  // namespace

FileSystem& file_system() { return installed ? *installed : *current_file_system(); }

ScopedFileSystem::ScopedFileSystem(FileSystem& replacement) : previous_(installed) { installed = &replacement; }
ScopedFileSystem::~ScopedFileSystem() { installed = previous_; }

std::string system_error_text() { return std::strerror(errno); }

// ---- helpers ------------------------------------------------------------------------------

AtomicFile::AtomicFile(std::string target) : target_(std::move(target)) {
  for (int attempt = 0; fd_ < 0; ++attempt) {
    path_ = target_ + ".tmp-" + unique_suffix();
    fd_ = file_system().open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd_ < 0 && (errno != EEXIST || attempt == 100))
      LOOM_FAIL("'", target_, "': cannot create a temporary file: ", system_error_text());
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) file_system().close(fd_);
  if (!committed_) ::unlink(path_.c_str());
}

void AtomicFile::write(const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = file_system().write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    LOOM_CHECK(n > 0, "'", target_, "': writing '", path_, "' failed: ", system_error_text());
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  // The data must be on disk before the new name points at it.
  LOOM_CHECK(file_system().fsync(fd_) == 0, "'", target_, "': fsync failed: ", system_error_text());
  const int fd = fd_;
  fd_ = -1;
  LOOM_CHECK(file_system().close(fd) == 0, "'", target_, "': close failed: ", system_error_text());
  LOOM_CHECK(file_system().rename(path_.c_str(), target_.c_str()) == 0, "'", target_,
             "': cannot rename the temporary file over it: ", system_error_text());
  committed_ = true;
  sync_directory(parent_directory(target_));
}

void write_file_atomically(const std::string& path, std::string_view contents) {
  AtomicFile file(path);
  file.write(contents);
  file.commit();
}

int remove_atomic_leftovers(const std::string& target) {
  namespace fs = std::filesystem;
  const fs::path path(target);
  const std::string prefix = path.filename().string() + ".tmp-";
  auto is_leftover = [&](const std::string& name) {
    if (name.size() != prefix.size() + kSuffixLength || name.compare(0, prefix.size(), prefix) != 0) return false;
    return std::all_of(name.begin() + static_cast<std::ptrdiff_t>(prefix.size()), name.end(), is_suffix_digit);
  };
  std::error_code ec;
  std::vector<fs::path> leftovers;
  for (const auto& entry : fs::directory_iterator(parent_directory(target), ec))
    if (entry.is_regular_file(ec) && is_leftover(entry.path().filename().string())) leftovers.push_back(entry.path());
  int removed = 0;
  for (const fs::path& p : leftovers) removed += fs::remove(p, ec) ? 1 : 0;
  return removed;
}

std::string make_temporary_directory(const std::string& prefix) {
  for (int attempt = 0;; ++attempt) {
    const std::string path = prefix + unique_suffix();
    if (file_system().mkdir(path.c_str(), 0755) == 0) return path;
    if (errno != EEXIST || attempt == 100)
      LOOM_FAIL("'", path, "': cannot create a temporary directory: ", system_error_text());
  }
}

void sync_directory(const std::string& path) {
  const int fd = file_system().open(path.c_str(), O_RDONLY | O_DIRECTORY, 0);
  LOOM_CHECK(fd >= 0, "'", path, "': cannot open the directory to sync it: ", system_error_text());
  const bool synced = file_system().fsync(fd) == 0;
  const std::string reason = synced ? "" : system_error_text();
  file_system().close(fd);
  LOOM_CHECK(synced, "'", path, "': fsync of the directory failed: ", reason);
}

void rename_path(const std::string& from, const std::string& to) {
  LOOM_CHECK(file_system().rename(from.c_str(), to.c_str()) == 0, "cannot rename '", from, "' to '", to,
             "': ", system_error_text());
}

void replace_symlink(const std::string& link, const std::string& target) {
  const std::string temporary = link + ".tmp-" + unique_suffix();
  LOOM_CHECK(file_system().symlink(target.c_str(), temporary.c_str()) == 0, "'", link,
             "': cannot create a symbolic link: ", system_error_text());
  if (file_system().rename(temporary.c_str(), link.c_str()) != 0) {
    const std::string reason = system_error_text();
    ::unlink(temporary.c_str());
    LOOM_FAIL("'", link, "': cannot rename the new link over it: ", reason);
  }
  sync_directory(parent_directory(link));
}

// ---- the directory lock -------------------------------------------------------------------

DirectoryLock::DirectoryLock(const std::string& dir, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  LOOM_CHECK(!ec, what, " '", dir, "': cannot create the directory: ", ec.message());
  LOOM_CHECK(fs::is_directory(dir, ec), what, " '", dir, "' is not a directory");

  const std::string lock_path = (fs::path(dir) / kLockFile).string();
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  LOOM_CHECK(fd >= 0, what, " '", dir, "' is not writable: cannot create ", lock_path, ": ", system_error_text());
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    LOOM_FAIL(what, " '", dir, "' is in use by another run",
              n > 0 ? detail::concat(" (process ", std::string(pid, static_cast<size_t>(n)), ")") : std::string(),
              "; give this run its own ", what);
  }
  const std::string me = std::to_string(::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    const std::string reason = system_error_text();
    ::close(fd);
    LOOM_FAIL(what, " '", dir, "' is not writable: cannot write ", lock_path, ": ", reason);
  }
  fd_ = fd;
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

DirectoryLock::DirectoryLock(DirectoryLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

DirectoryLock& DirectoryLock::operator=(DirectoryLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

}  // namespace loom::io
