// file_io.h: the system calls that put files on disk, behind one seam, and the
// durable-write helpers built on them.
//
// Everything loom writes that must survive a crash (safetensors files, the
// vocabulary, checkpoint directories and the link naming the newest one) goes
// through io::file_system(): open, write, fsync, close, rename, mkdir and
// symlink. Tests install a FileSystem that fails the k-th of these calls
// (ScopedFileSystem) and check that whatever was on disk before stays usable.
//
// Durability follows the usual recipe: write to a temporary name, fsync the
// file, rename it into place, fsync the directory so the rename itself
// survives a power loss. A failure anywhere removes the temporary and throws
// loom::Error naming the path and the system's reason.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

namespace loom::io {

// The calls, with POSIX meanings: -1 and errno on failure.
class FileSystem {
 public:
  virtual ~FileSystem() = default;
  virtual int open(const char* path, int flags, mode_t mode);
  virtual ssize_t write(int fd, const void* data, size_t bytes);
  virtual int fsync(int fd);
  virtual int close(int fd);
  virtual int rename(const char* from, const char* to);
  virtual int mkdir(const char* path, mode_t mode);
  virtual int symlink(const char* target, const char* link);
};

// The file system in use (the real one unless a test replaced it).
FileSystem& file_system();

// Replaces file_system() for its lifetime (tests only; not thread-safe).
class ScopedFileSystem {
 public:
  explicit ScopedFileSystem(FileSystem& replacement);
  ~ScopedFileSystem();
  ScopedFileSystem(const ScopedFileSystem&) = delete;
  ScopedFileSystem& operator=(const ScopedFileSystem&) = delete;

 private:
  FileSystem* previous_;
};

// A new file opened for writing under a fresh temporary name next to `target`
// ("<target>.tmp-XXXXXX"). commit() fsyncs it, renames it over `target` and
// fsyncs the directory; without a commit the destructor removes it.
class AtomicFile {
 public:
  explicit AtomicFile(std::string target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  void commit();
  const std::string& temporary_path() const { return path_; }

 private:
  std::string target_, path_;
  int fd_ = -1;
  bool committed_ = false;
};

// AtomicFile in one call.
void write_file_atomically(const std::string& path, std::string_view contents);

// Removes the temporaries an AtomicFile of `target` left behind ("<target>.tmp-"
// and six letters or digits): a process killed between creating one and
// committing it never runs the destructor that would. Call it only where no other
// process may be writing `target` meanwhile (a directory this process has
// locked). Returns how many it removed; missing files and directories are not
// an error.
int remove_atomic_leftovers(const std::string& target);

// Creates a new directory "<prefix>XXXXXX" (random suffix) and returns its path.
std::string make_temporary_directory(const std::string& prefix);

// fsync of a directory: makes the creation, removal or renaming of its entries durable.
void sync_directory(const std::string& path);

// rename(2), throwing loom::Error with both paths on failure.
void rename_path(const std::string& from, const std::string& to);

// Replaces (or creates) the symbolic link `link` so it points at `target`, atomically:
// a new link under a temporary name, renamed over the old one, then the directory fsynced.
void replace_symlink(const std::string& link, const std::string& target);

// One writer per output directory: an exclusive flock on "<dir>/.lock", which holds the
// owner's process id. The kernel releases a flock when its process ends, however it
// ends, so a killed run never leaves its directory locked. Every program that writes
// into a run directory takes this lock before it reads anything there, so a second
// run is refused up front instead of reading files the first is replacing.
class DirectoryLock {
 public:
  DirectoryLock() = default;  // holds nothing
  // Creates `dir` when missing and locks it. Throws loom::Error starting with `what`
  // (the setting that named the directory, e.g. "training.out_dir") when the directory
  // cannot be created or written, or when another process holds it: "... is in use by
  // another run (process N)".
  DirectoryLock(const std::string& dir, const std::string& what);
  ~DirectoryLock();
  DirectoryLock(DirectoryLock&& other) noexcept;
  DirectoryLock& operator=(DirectoryLock&& other) noexcept;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// The name of the lock file inside a locked directory.
inline constexpr const char* kLockFile = ".lock";

// "<what>: <strerror(errno)>" for messages.
std::string system_error_text();

}  // namespace loom::io
