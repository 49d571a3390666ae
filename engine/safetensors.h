// safetensors.h: reading and writing named tensors in the safetensors format.
//
// safetensors (https://github.com/huggingface/safetensors) is the checkpoint
// format loom shares with PyTorch (`safetensors.torch.load_file`). A file is:
//
//   8 bytes    N, the header length, unsigned little-endian
//   N bytes    a JSON object, padded with spaces to a multiple of 8:
//                {"__metadata__": {"key": "value", ...},
//                 "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//   the rest   the raw little-endian tensor bytes; each tensor owns the byte range
//              [begin, end) of this data section, row-major, and together the
//              ranges cover the section exactly, without gaps or overlaps.
//
// loom reads and writes the dtypes it has: F32, F64 and I64.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace loom {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes `tensors` (in this order) and the string metadata to `path`.
// Tensors may live on any device and have any layout; the file holds
// contiguous copies. Names must be unique and must not be "__metadata__".
//
// The write is atomic: the bytes go to a temporary file next to `path`, which
// is flushed to disk and then renamed over `path`. On any failure the temporary
// file is removed and loom::Error is thrown, so `path` holds either its old
// contents or the complete new file, never a partial one.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  NamedTensors tensors;                          // CPU, contiguous, in header order
  std::map<std::string, std::string> metadata;  // the "__metadata__" object (may be empty)
};

// Reads a whole file. Everything is validated (header length, JSON, dtypes,
// shapes against byte ranges, ranges against the data section, duplicate
// names); a bad file throws loom::Error naming the file and the tensor.
SafetensorsFile read_safetensors(const std::string& path);

// The tensors of read_safetensors(path), in header order.
NamedTensors load_safetensors(const std::string& path);

// Only the metadata; reads and validates the header but not the tensor data.
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

}  // namespace loom
