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
//
// Checksums. The format has none of its own, so loom keeps them in the metadata,
// which stays a map of strings that every reader accepts:
//
//   "checksum.<tensor>"   "crc32c:1a2b3c4d"   the CRC-32C (engine/crc32c.h) of the tensor's bytes
//   "checksum_of_header"  "crc32c:..."        of the header itself: its compact JSON (as
//                                             nlohmann::ordered_json dumps it) without this entry
//
// The header checksum covers every name, dtype, shape, offset and metadata value,
// the tensor checksums every data byte, so a flipped bit anywhere in the file is
// found (CRC-32C catches every single-bit error) or makes the file unreadable.
// save_safetensors writes them; read_safetensors checks them and refuses a
// mismatch, naming the file and the tensor, before returning anything. Files
// without them (written by other programs, or by loom before it stored them) load
// unchecked: SafetensorsFile::checksummed tells which. Metadata keys starting with
// "checksum" are reserved for these entries.
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
//
// With `checksums` (always, but for tests and measurements of files without them)
// the checksum entries described above are added to the metadata.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {}, bool checksums = true);

struct SafetensorsFile {
  NamedTensors tensors;                          // CPU, contiguous, in header order
  std::map<std::string, std::string> metadata;  // the "__metadata__" object without the checksums (may be empty)
  bool checksummed = false;                      // the file carried checksums, and they matched
};

// Reads a whole file. Everything is validated (header length, JSON, dtypes,
// shapes against byte ranges, ranges against the data section, duplicate
// names, the checksums when the file has them); a bad file throws loom::Error
// naming the file and the tensor.
SafetensorsFile read_safetensors(const std::string& path);

// The tensors of read_safetensors(path), in header order.
NamedTensors load_safetensors(const std::string& path);

// Only the metadata (without the checksums); reads and validates the header, and
// checks it against its checksum, but not the tensor data.
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

// The checksum text loom stores for `bytes` bytes at `data`: "crc32c:" and 8 hex digits.
std::string checksum_text(const void* data, size_t bytes);

}  // namespace loom
