// fuzz_safetensors.cpp: libFuzzer target for the safetensors reader (engine/safetensors.h).
//
// The input is the file. Any input must load or throw loom::Error; a file that
// loads must write back and load again to the same tensors and metadata.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/error.h"
#include "engine/file_io.h"
#include "engine/safetensors.h"

namespace {

// An in-memory file (no disk traffic per input), opened by its /proc path.
struct MemoryFile {
  int fd = ::memfd_create("fuzz-safetensors", 0);
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  void set(const uint8_t* data, size_t size) {
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
  }
};

// Writes without fsync: durability is not what is fuzzed, and a sync per input is slow.
struct NoSyncFileSystem : loom::io::FileSystem {
  int fsync(int) override { return 0; }
};

bool same(const loom::SafetensorsFile& a, const loom::SafetensorsFile& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const loom::Tensor &x = a.tensors[i].second, &y = b.tensors[i].second;
    if (a.tensors[i].first != b.tensors[i].first || x.shape() != y.shape() || x.dtype() != y.dtype()) return false;
    const size_t bytes = static_cast<size_t>(x.numel()) * loom::dtype_size(x.dtype());
    if (bytes > 0 && std::memcmp(x.raw_data(), y.raw_data(), bytes) != 0) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static MemoryFile file;
  static NoSyncFileSystem no_sync;
  static loom::io::ScopedFileSystem use(no_sync);
  static const std::string copy = (::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") +
                                  std::string("/loom-fuzz-safetensors-") + std::to_string(::getpid());
  file.set(data, size);
  loom::SafetensorsFile loaded;
  try {
    loaded = loom::read_safetensors(file.path);
  } catch (const loom::Error&) {
    return 0;
  }
  try {
    loom::save_safetensors(copy, loaded.tensors, loaded.metadata);
  } catch (const loom::Error&) {
    return 0;  // e.g. a name that is not valid UTF-8 cannot be written back
  }
  if (!same(loaded, loom::read_safetensors(copy))) std::abort();
  return 0;
}
