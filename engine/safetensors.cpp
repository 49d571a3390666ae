#include "engine/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/crc32c.h"
#include "engine/error.h"
#include "engine/file_io.h"
#include "engine/json.h"
#include "engine/record.h"

namespace loom {

// The file stores little-endian bytes and loom copies them verbatim.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

// ordered_json keeps the header's key order, so tensors load in file order.
using Json = nlohmann::ordered_json;

constexpr const char* kMetadataKey = "__metadata__";
// The checksum entries of the metadata (safetensors.h).
constexpr const char* kChecksumPrefix = "checksum";           // reserved for them
constexpr const char* kTensorChecksumPrefix = "checksum.";    // + the tensor's name
constexpr const char* kHeaderChecksumKey = "checksum_of_header";
constexpr const char* kChecksumKind = "crc32c:";
// The reference implementation refuses headers above 100 MB; so do we, rather
// than allocate whatever a corrupt length field asks for.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i64: return "I64";
  }
  return "?";
}

bool parse_dtype(const std::string& name, DType* out) {
  if (name == "F32") *out = DType::f32;
  else if (name == "F64") *out = DType::f64;
  else if (name == "I64") *out = DType::i64;
  else return false;
  return true;
}

std::string errno_text() { return std::strerror(errno); }

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// A name as messages show it: a header may hold names megabytes long.
std::string shown(const std::string& name) { return name.size() <= 80 ? name : name.substr(0, 80) + "..."; }

// ---- reading ------------------------------------------------------------------------------

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;  // within the data section
};

struct Header {
  std::vector<Entry> entries;  // header order
  std::map<std::string, std::string> metadata;  // without the checksum entries
  bool checksummed = false;
  std::map<std::string, std::string> tensor_checksums;  // name -> "crc32c:..."
  uint64_t data_start = 0;  // 8 + N
  uint64_t data_size = 0;
};

// Parses JSON while refusing duplicate keys, which a plain parse would
// silently resolve by keeping the last one.
Json parse_json_without_duplicates(const std::string& text, const std::string& where) {
  std::vector<std::set<std::string>> open_objects;
  std::string entry;    // the top-level key being parsed
  std::string problem;  // the first duplicate seen
  auto on_event = [&](int, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (event == Json::parse_event_t::key && problem.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (open_objects.size() == 1) entry = key;
      if (!open_objects.back().insert(key).second)
        problem = open_objects.size() == 1 ? detail::concat("duplicate tensor name '", shown(key), "'")
                                           : detail::concat("entry '", shown(entry), "': duplicate key '", shown(key), "'");
    }
    return true;
  };
  check_json_depth(text, where);  // a tensor entry nests 2 levels; nothing needs 64
  Json header;
  try {
    header = Json::parse(text, on_event);
  } catch (const Json::exception& e) {
    LOOM_FAIL(where, "the header is not valid JSON: ", quote_excerpt(e.what(), 200));
  }
  LOOM_CHECK(problem.empty(), where, problem);
  return header;
}

uint64_t require_count(const Json& value, const std::string& where, const char* what) {
  LOOM_CHECK(value.is_number_unsigned(), where, what, " must be non-negative integers, got ", json_excerpt(value));
  return value.get<uint64_t>();
}

Entry parse_entry(const std::string& name, const Json& info, const std::string& file) {
  const std::string where = detail::concat(file, "tensor '", shown(name), "': ");
  LOOM_CHECK(info.is_object(), where, "expected an object with dtype, shape and data_offsets, got ", json_excerpt(info));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    LOOM_CHECK(info.contains(key), where, "missing \"", key, "\"");

  Entry e;
  e.name = name;
  const Json& dtype = info["dtype"];
  LOOM_CHECK(dtype.is_string(), where, "dtype must be a string, got ", json_excerpt(dtype));
  LOOM_CHECK(parse_dtype(dtype.get<std::string>(), &e.dtype), where, "unknown or unsupported dtype ",
             json_excerpt(dtype), " (loom reads F32, F64 and I64)");

  const Json& shape = info["shape"];
  LOOM_CHECK(shape.is_array(), where, "shape must be a list, got ", json_excerpt(shape));
  uint64_t numel = 1;
  for (const Json& d : shape) {
    const uint64_t dim = require_count(d, where, "shape entries");
    LOOM_CHECK(dim <= static_cast<uint64_t>(INT64_MAX) && !__builtin_mul_overflow(numel, dim, &numel), where,
               "shape ", json_excerpt(shape), " has too many elements");
    e.shape.push_back(static_cast<int64_t>(dim));
  }

  const Json& offsets = info["data_offsets"];
  LOOM_CHECK(offsets.is_array() && offsets.size() == 2, where, "data_offsets must be [begin, end], got ",
             json_excerpt(offsets));
  e.begin = require_count(offsets[0], where, "data_offsets");
  e.end = require_count(offsets[1], where, "data_offsets");
  LOOM_CHECK(e.begin <= e.end, where, "data_offsets ", json_excerpt(offsets), " end before they begin");

  uint64_t bytes = 0;
  LOOM_CHECK(!__builtin_mul_overflow(numel, dtype_size(e.dtype), &bytes), where, "shape ", json_excerpt(shape),
             " has too many elements");
  LOOM_CHECK(bytes == e.end - e.begin, where, "shape ", json_excerpt(shape), " of ", dtype.get<std::string>(), " needs ",
             bytes, " bytes but data_offsets ", json_excerpt(offsets), " span ", e.end - e.begin);
  return e;
}

// The byte ranges must tile the data section exactly, as the format requires.
void check_ranges(const Header& h, const std::string& file) {
  for (const Entry& e : h.entries)
    LOOM_CHECK(e.end <= h.data_size, file, "tensor '", shown(e.name), "': data_offsets [", e.begin, ", ", e.end,
               "] run past the end of the data section (", h.data_size, " bytes)");
  std::vector<const Entry*> sorted;
  for (const Entry& e : h.entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry* e : sorted) {
    LOOM_CHECK(e->begin >= covered, file, "tensor '", shown(e->name), "': data_offsets [", e->begin, ", ", e->end,
               "] overlap tensor '", previous ? shown(previous->name) : "", "'");
    LOOM_CHECK(e->begin == covered, file, "bytes [", covered, ", ", e->begin,
               ") of the data section belong to no tensor (gap before tensor '", shown(e->name), "')");
    covered = e->end;
    previous = e;
  }
  LOOM_CHECK(covered == h.data_size, file, "the data section has ", h.data_size, " bytes but the tensors cover only ",
             covered, " (", h.data_size - covered, " trailing bytes belong to no tensor)");
}

// The checksum entries of the header's metadata (none: an unchecked file). The header
// is checked against its own checksum before anything else in it is believed, so a
// damaged name, shape or offset is reported as damage rather than as whatever it
// happens to look like.
void check_header_checksum(const Json& json, Header& h, const std::string& path) {
  const std::string file = detail::concat("load_safetensors: '", path, "' is damaged: ");
  const auto meta = json.find(kMetadataKey);
  if (meta == json.end() || !meta->is_object()) return;
  for (const auto& [key, value] : meta->items()) {
    if (!starts_with(key, kChecksumPrefix)) continue;
    h.checksummed = true;
    LOOM_CHECK(value.is_string() && starts_with(value.get<std::string>(), kChecksumKind), file, "its checksum entry '",
               shown(key), "' is ", json_excerpt(value), ", not \"", kChecksumKind, "<8 hex digits>\"");
    if (starts_with(key, kTensorChecksumPrefix))
      h.tensor_checksums[key.substr(std::strlen(kTensorChecksumPrefix))] = value.get<std::string>();
    else
      LOOM_CHECK(key == kHeaderChecksumKey, file, "metadata '", shown(key), "' is no checksum entry loom knows");
  }
  if (!h.checksummed) return;
  const auto stored = meta->find(kHeaderChecksumKey);
  LOOM_CHECK(stored != meta->end(), file, "it carries checksums but none of its header");
  Json unsigned_header = json;
  unsigned_header[kMetadataKey].erase(kHeaderChecksumKey);
  const std::string text = unsigned_header.dump();
  const std::string actual = checksum_text(text.data(), text.size());
  LOOM_CHECK(actual == stored->get<std::string>(), file, "its header (tensor names, dtypes, shapes, offsets or ",
             "metadata) does not match its checksum (", stored->get<std::string>(), " stored, ", actual, " read)");
}

Header read_header(std::ifstream& in, const std::string& path) {
  const std::string file = detail::concat("load_safetensors: '", path, "': ");
  LOOM_CHECK(in.is_open(), file, "cannot open: ", errno_text());
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  LOOM_CHECK(!ec, file, "cannot read the size: ", ec.message());
  LOOM_CHECK(file_size >= 8, file, "file too short (", file_size, " bytes) to hold the 8-byte header length");

  unsigned char length_bytes[8];
  in.read(reinterpret_cast<char*>(length_bytes), 8);
  LOOM_CHECK(in.good(), file, "cannot read the header length");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | length_bytes[i];
  LOOM_CHECK(header_size <= file_size - 8, file, "header length ", header_size, " runs past the end of the file (",
             file_size, " bytes)");
  LOOM_CHECK(header_size <= kMaxHeaderBytes, file, "header length ", header_size, " exceeds the limit of ",
             kMaxHeaderBytes, " bytes");

  std::string text(header_size, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_size));
  LOOM_CHECK(in.good(), file, "cannot read the ", header_size, "-byte header");
  // The JSON parser would stop at a NUL byte and ignore the rest, but JSON holds none
  // (strings escape control characters) and the padding is spaces: it is damage.
  const size_t nul = text.find('\0');
  LOOM_CHECK(nul == std::string::npos, file, "the header holds a NUL byte at offset ", 8 + nul,
             " (JSON and its padding hold none): the file is damaged");
  const Json json = parse_json_without_duplicates(text, file);
  LOOM_CHECK(json.is_object(), file, "the header must be a JSON object, got ", json.type_name());

  Header h;
  h.data_start = 8 + header_size;
  h.data_size = file_size - h.data_start;
  check_header_checksum(json, h, path);
  for (const auto& [key, value] : json.items()) {
    if (key == kMetadataKey) {
      LOOM_CHECK(value.is_object(), file, "__metadata__ must be an object, got ", json_excerpt(value));
      for (const auto& [mkey, mvalue] : value.items()) {
        LOOM_CHECK(mvalue.is_string(), file, "__metadata__ value of '", shown(mkey), "' must be a string, got ",
                   json_excerpt(mvalue));
        if (!starts_with(mkey, kChecksumPrefix)) h.metadata[mkey] = mvalue.get<std::string>();
      }
    } else {
      h.entries.push_back(parse_entry(key, value, file));
    }
  }
  check_ranges(h, file);
  if (h.checksummed) {
    std::set<std::string> names;
    for (const Entry& e : h.entries) {
      names.insert(e.name);
      LOOM_CHECK(h.tensor_checksums.count(e.name), file, "tensor '", shown(e.name),
                 "' has no checksum, though the file carries checksums");
    }
    for (const auto& [name, checksum] : h.tensor_checksums)
      LOOM_CHECK(names.count(name), file, "metadata '", kTensorChecksumPrefix, shown(name), "' names no tensor");
  }
  return h;
}

}  // namespace

// ---- public API -------------------------------------------------------------------------------

std::string checksum_text(const void* data, size_t bytes) { return kChecksumKind + crc32c_hex(data, bytes); }

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata, bool checksums) {
  const std::string file = detail::concat("save_safetensors: '", path, "': ");
  LOOM_CHECK(!path.empty(), "save_safetensors: empty path");

  // Contiguous CPU copies first, so nothing touches the disk until every tensor is usable.
  GradModeGuard no_grad(false);
  std::vector<Tensor> host;
  std::set<std::string> seen;
  Json header = Json::object();
  if (!metadata.empty() || checksums) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata) {
      LOOM_CHECK(!starts_with(key, kChecksumPrefix), file, "metadata key '", shown(key), "': keys starting with \"",
                 kChecksumPrefix, "\" are reserved for the checksums");
      meta[key] = value;
    }
    header[kMetadataKey] = meta;
  }
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    LOOM_CHECK(name != kMetadataKey, file, "a tensor cannot be named \"__metadata__\"");
    LOOM_CHECK(seen.insert(name).second, file, "duplicate tensor name '", name, "'");
    LOOM_CHECK(tensor.defined(), file, "tensor '", name, "' is undefined");
    Tensor t = tensor.device() == Device::cpu ? tensor : tensor.to(Device::cpu);
    t = t.contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype());
    header[name] = Json{{"dtype", safetensors_dtype(t.dtype())},
                        {"shape", t.shape()},
                        {"data_offsets", {offset, offset + bytes}}};
    if (checksums) header[kMetadataKey][kTensorChecksumPrefix + name] = checksum_text(t.raw_data(), bytes);
    offset += bytes;
    host.push_back(std::move(t));
  }

  std::string text;
  try {
    if (checksums) {  // of the header as it stands, which is what the reader sees once it drops this entry
      const std::string unsigned_header = header.dump();
      header[kMetadataKey][kHeaderChecksumKey] = checksum_text(unsigned_header.data(), unsigned_header.size());
    }
    text = header.dump();
  } catch (const Json::exception& e) {  // e.g. a name that is not valid UTF-8
    LOOM_FAIL(file, "cannot encode the header: ", e.what());
  }
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<unsigned char>(uint64_t{text.size()} >> (8 * i));

  try {
    io::AtomicFile out(path);
    out.write(length_bytes, 8);
    out.write(text);
    for (const Tensor& t : host)
      if (t.numel() > 0) out.write(t.raw_data(), t.numel() * dtype_size(t.dtype()));
    out.commit();
  } catch (const Error& e) {
    throw Error(std::string("save_safetensors: ") + e.what());
  }
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const Header h = read_header(in, path);
  SafetensorsFile result;
  result.metadata = h.metadata;
  result.checksummed = h.checksummed;
  for (const Entry& e : h.entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    const uint64_t bytes = e.end - e.begin;
    if (bytes > 0) {
      in.seekg(static_cast<std::streamoff>(h.data_start + e.begin));
      in.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(bytes));
      LOOM_CHECK(in.good(), "load_safetensors: '", path, "': tensor '", shown(e.name), "': cannot read its ", bytes,
                 " bytes");
    }
    if (h.checksummed) {
      const std::string& stored = h.tensor_checksums.at(e.name);
      const std::string actual = checksum_text(bytes > 0 ? t.raw_data() : nullptr, bytes);
      LOOM_CHECK(actual == stored, "load_safetensors: '", path, "' is damaged: the bytes of tensor '", shown(e.name),
                 "' do not match its checksum (", stored, " stored, ", actual, " read)");
    }
    result.tensors.emplace_back(e.name, std::move(t));
  }
  return result;
}

NamedTensors load_safetensors(const std::string& path) { return read_safetensors(path).tensors; }

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return read_header(in, path).metadata;
}

}  // namespace loom
