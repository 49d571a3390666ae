// test_safetensors.cpp: safetensors round trips, byte-exact golden files (with
// and without checksums), malformed files, damaged files, and the atomic write;
// CRC-32C against a bit-at-a-time reference.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "tests/test_util.h"
#include "engine/crc32c.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/safetensors.h"

namespace loom::test {

namespace {

namespace fs = std::filesystem;

// The 8-byte little-endian length, spelled out byte by byte.
std::string le64(uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

// A safetensors file from a header text and raw data, with the true header length.
std::string st_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

// CRC-32C one bit at a time, straight from the definition (reflected polynomial
// 0x82F63B78, initial value and final XOR 0xFFFFFFFF): the reference for engine/crc32c.
uint32_t crc32c_bitwise(const std::string& bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (crc & 1 ? 0x82F63B78u : 0);
  }
  return ~crc;
}

std::string crc_text(const std::string& bytes) {
  char text[16];
  std::snprintf(text, sizeof text, "crc32c:%08x", crc32c_bitwise(bytes));
  return text;
}

}  // namespace

TEST_CASE("crc32c: the published check values, and the instruction and the table against the definition") {
  CHECK(crc32c("123456789", 9) == 0xE3069283u);  // the catalogue's check value
  // RFC 3720 (iSCSI), appendix B.4: 32 bytes of zeros, of ones, ascending.
  std::string zeros(32, '\0'), ones(32, '\xff'), ascending;
  for (int i = 0; i < 32; ++i) ascending.push_back(static_cast<char>(i));
  CHECK(crc32c(zeros.data(), 32) == 0x8A9136AAu);
  CHECK(crc32c(ones.data(), 32) == 0x62A8AB43u);
  CHECK(crc32c(ascending.data(), 32) == 0x46DD794Eu);
  CHECK(crc32c_hex("123456789", 9) == "e3069283");

  // Every length up to 100 at every offset within a word, then a long buffer.
  std::string bytes(4096 + 8, '\0');
  uint64_t state = 12345;
  for (char& c : bytes) state = state * 6364136223846793005ull + 1442695040888963407ull, c = static_cast<char>(state >> 56);
  for (size_t offset = 0; offset < 8; ++offset)
    for (size_t n = 0; n <= 100; ++n) {
      const std::string piece = bytes.substr(offset, n);
      INFO("offset ", offset, ", ", n, " bytes");
      REQUIRE(crc32c(piece.data(), n) == crc32c_bitwise(piece));
      REQUIRE(detail::crc32c_portable(piece.data(), n) == crc32c_bitwise(piece));
    }
  CHECK(crc32c(bytes.data() + 3, 4096) == crc32c_bitwise(bytes.substr(3, 4096)));
  CHECK(detail::crc32c_portable(bytes.data() + 3, 4096) == crc32c_bitwise(bytes.substr(3, 4096)));
}

TEST_CASE("safetensors: round trip of f32, f64, i64, non-contiguous, empty and scalar tensors") {
  TempDir dir("safetensors-roundtrip");
  const std::string path = dir.file("model.safetensors");

  const Tensor f32 = Tensor::from_vector<float>({1.5f, -2.25f, 3.0e-7f, 4.0e20f, -0.0f, 6.0f}, {2, 3});
  const Tensor f64 = Tensor::from_vector<double>({3.141592653589793, -1e-300, 2.5}, {3});
  const int64_t big = std::numeric_limits<int64_t>::max(), small = std::numeric_limits<int64_t>::min();
  const Tensor i64 = Tensor::from_vector<int64_t>({big, small, -1, 0}, {2, 2});
  // A transposed view: element [i][j] of the saved tensor is base[j][i].
  const Tensor base = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  const Tensor transposed = base.transpose(0, 1);
  REQUIRE_FALSE(transposed.is_contiguous());
  const Tensor empty = Tensor::zeros({0, 3});
  const Tensor scalar = Tensor::scalar(42.0, DType::f64);

  // Names deliberately out of alphabetical order: the file keeps the given order.
  const NamedTensors saved = {{"z.weight", f32},        {"a.f64", f64},   {"m.ids", i64},
                              {"t.transposed", transposed}, {"e.empty", empty}, {"s.scalar", scalar}};
  save_safetensors(path, saved, {{"format", "pt"}, {"vocab", "[\"\\n\",\" \"]"}});

  const SafetensorsFile file = read_safetensors(path);
  REQUIRE(file.tensors.size() == saved.size());
  for (size_t i = 0; i < saved.size(); ++i) {
    INFO("tensor ", saved[i].first);
    CHECK(file.tensors[i].first == saved[i].first);
    CHECK(file.tensors[i].second.dtype() == saved[i].second.dtype());
    CHECK(file.tensors[i].second.shape() == saved[i].second.shape());
    CHECK(file.tensors[i].second.is_contiguous());
  }
  CHECK(file.tensors[0].second.to_vector<float>() == f32.to_vector<float>());
  CHECK(file.tensors[1].second.to_vector<double>() == std::vector<double>{3.141592653589793, -1e-300, 2.5});
  CHECK(file.tensors[2].second.to_vector<int64_t>() == std::vector<int64_t>{big, small, -1, 0});
  CHECK(file.tensors[3].second.to_vector<float>() == std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK(file.tensors[4].second.numel() == 0);
  CHECK(file.tensors[5].second.item() == 42.0);
  // -0.0 keeps its sign bit: the bytes are copied, not converted.
  CHECK(std::signbit(file.tensors[0].second.to_vector<float>()[4]));

  const std::map<std::string, std::string> expected_meta = {{"format", "pt"}, {"vocab", "[\"\\n\",\" \"]"}};
  CHECK(file.metadata == expected_meta);
  CHECK(load_safetensors_metadata(path) == expected_meta);
  CHECK(load_safetensors(path).size() == saved.size());
}

TEST_CASE("safetensors: the written bytes match a file built by hand from the format spec") {
  TempDir dir("safetensors-golden");
  // Header: metadata first, then the tensors in order, compact JSON, padded with
  // spaces to a multiple of 8 (138 characters + 6 spaces = 144 = 0x90).
  const std::string header =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}"
      "      ";
  REQUIRE(header.size() == 144);
  const std::string length("\x90\0\0\0\0\0\0\0", 8);
  // 1.0f = 0x3f800000 and -2.0f = 0xc0000000 (IEEE 754), then int64 7, all little-endian.
  const std::string data("\x00\x00\x80\x3f\x00\x00\x00\xc0\x07\x00\x00\x00\x00\x00\x00\x00", 16);
  const std::string golden = length + header + data;

  const std::string ours = dir.file("ours.safetensors");
  const NamedTensors tensors = {{"a", Tensor::from_vector<float>({1.0f, -2.0f}, {2})},
                                {"b", Tensor::scalar(7, DType::i64)}};
  save_safetensors(ours, tensors, {{"format", "pt"}}, /*checksums=*/false);
  CHECK(read_bytes(ours) == golden);

  const std::string theirs = dir.file("golden.safetensors");
  write_bytes(theirs, golden);
  const SafetensorsFile file = read_safetensors(theirs);
  REQUIRE(file.tensors.size() == 2);
  CHECK(file.tensors[0].first == "a");
  CHECK(file.tensors[0].second.to_vector<float>() == std::vector<float>{1.0f, -2.0f});
  CHECK(file.tensors[1].first == "b");
  CHECK(file.tensors[1].second.dim() == 0);
  CHECK(file.tensors[1].second.to_vector<int64_t>() == std::vector<int64_t>{7});
  CHECK(file.metadata.at("format") == "pt");
  CHECK(!file.checksummed);

  // No metadata: no "__metadata__" key at all; an empty file list is a valid file.
  const std::string bare = dir.file("bare.safetensors");
  save_safetensors(bare, {}, {}, /*checksums=*/false);
  CHECK(read_bytes(bare) == std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  CHECK(load_safetensors(bare).empty());
}

TEST_CASE("safetensors: the checksums are the CRC-32C of each tensor's bytes and of the header without its own") {
  TempDir dir("safetensors-golden-checksums");
  const std::string data_a("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8), data_b("\x07\0\0\0\0\0\0\0", 8);
  // The metadata as given (sorted), then a checksum per tensor in file order, then the
  // header's: the CRC of the compact header that holds everything else.
  const std::string unsigned_metadata = "{\"format\":\"pt\",\"checksum.a\":\"" + crc_text(data_a) +
                                        "\",\"checksum.b\":\"" + crc_text(data_b) + "\"";
  const std::string entries =
      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}";
  const std::string unsigned_header = "{\"__metadata__\":" + unsigned_metadata + "}," + entries;
  std::string header = "{\"__metadata__\":" + unsigned_metadata + ",\"checksum_of_header\":\"" +
                       crc_text(unsigned_header) + "\"}," + entries;
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string golden = st_file(header, data_a + data_b);

  const std::string ours = dir.file("ours.safetensors");
  save_safetensors(ours, {{"a", Tensor::from_vector<float>({1.0f, -2.0f}, {2})}, {"b", Tensor::scalar(7, DType::i64)}},
                   {{"format", "pt"}});
  CHECK(read_bytes(ours) == golden);

  const SafetensorsFile file = read_safetensors(ours);
  CHECK(file.checksummed);
  // The checksum entries are the format's business: the metadata comes back as it was given.
  CHECK(file.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(load_safetensors_metadata(ours) == file.metadata);
  // So a file read back and saved again keeps its checksums, freshly made.
  save_safetensors(ours, file.tensors, file.metadata);
  CHECK(read_bytes(ours) == golden);

  // Keys of the checksums are not the caller's to set.
  check_mentions(error_of([&] { save_safetensors(ours, {}, {{"checksum.x", "1"}}); }),
                 {"checksum.x", "reserved for the checksums"});
}

TEST_CASE("safetensors: a damaged file is refused naming the file, the tensor and the damage") {
  TempDir dir("safetensors-damaged");
  const std::string path = dir.file("model.safetensors");
  Generator gen(3);
  save_safetensors(path, {{"first", normal({4, 4}, 0, 1, gen)}, {"second.weight", normal({3}, 0, 1, gen)}},
                   {{"step", "5"}});
  const std::string good = read_bytes(path);
  const uint64_t header_size = static_cast<unsigned char>(good[0]) | static_cast<unsigned char>(good[1]) << 8;
  const size_t data_start = 8 + header_size;

  // One bit of the second tensor's bytes (64 bytes of "first", then "second.weight").
  std::string bad = good;
  bad[data_start + 64 + 5] ^= 0x10;
  write_bytes(path, bad);
  check_mentions(error_of([&] { read_safetensors(path); }),
                 {path.c_str(), "is damaged", "tensor 'second.weight'", "do not match its checksum"});
  // The header alone is sound: the metadata still reads.
  CHECK(load_safetensors_metadata(path).at("step") == "5");

  // One bit of the metadata value "5" ('5' ^ 0x01 = '4'): valid JSON, a plausible step, refused.
  bad = good;
  const size_t step = good.find("\"step\":\"5\"");
  REQUIRE(step != std::string::npos);
  bad[step + 8] ^= 0x01;
  write_bytes(path, bad);
  for (const auto& reader : {+[](const std::string& p) { read_safetensors(p); },
                             +[](const std::string& p) { load_safetensors_metadata(p); }})
    check_mentions(error_of([&] { reader(path); }), {path.c_str(), "is damaged", "its header", "checksum"});

  // A checksummed file that lost one tensor's checksum, or names a tensor it lacks,
  // was not written by loom: refused too (the header checksum is recomputed to match).
  const auto resigned = [&](const std::string& metadata) {
    const size_t entries_start = good.find("\"first\":");
    std::string unsigned_header =
        "{\"__metadata__\":" + metadata + "," + good.substr(entries_start, data_start - entries_start);
    while (unsigned_header.back() == ' ') unsigned_header.pop_back();
    std::string header = unsigned_header;
    header.insert(header.find("},\"first\":"), ",\"checksum_of_header\":\"" + crc_text(unsigned_header) + "\"");
    header.append((8 - header.size() % 8) % 8, ' ');
    return st_file(header, good.substr(data_start));
  };
  const std::string crc_first = crc_text(good.substr(data_start, 64));
  const std::string crc_second = crc_text(good.substr(data_start + 64));
  write_bytes(path, resigned("{\"step\":\"5\",\"checksum.first\":\"" + crc_first + "\",\"checksum.second.weight\":\"" +
                             crc_second + "\"}"));
  CHECK(read_safetensors(path).checksummed);  // the rebuilt header is right
  write_bytes(path, resigned("{\"step\":\"5\",\"checksum.first\":\"" + crc_first + "\"}"));
  check_mentions(error_of([&] { read_safetensors(path); }), {"tensor 'second.weight' has no checksum"});
  write_bytes(path, resigned("{\"step\":\"5\",\"checksum.first\":\"" + crc_first + "\",\"checksum.second.weight\":\"" +
                             crc_second + "\",\"checksum.third\":\"" + crc_second + "\"}"));
  check_mentions(error_of([&] { read_safetensors(path); }), {"'checksum.third' names no tensor"});
  write_bytes(path, resigned("{\"step\":\"5\",\"checksum.first\":\"sha1:00\"}"));
  check_mentions(error_of([&] { read_safetensors(path); }), {"checksum entry 'checksum.first'", "not \"crc32c:"});
}

TEST_CASE("safetensors: malformed files are rejected with a message naming the problem") {
  TempDir dir("safetensors-malformed");
  const std::string f32x2 = R"("dtype":"F32","shape":[2])";
  struct Case {
    std::string name;
    std::string bytes;
    std::vector<std::string> expected;  // parts of the message
  };
  const std::vector<Case> cases = {
      {"empty file", "", {"file too short (0 bytes)"}},
      {"five bytes", "\x01\x02\x03\x04\x05", {"file too short (5 bytes)"}},
      {"header length beyond the file", le64(1000) + "{}", {"header length 1000 runs past the end of the file (10 bytes)"}},
      {"header length near 2^64", le64(~uint64_t{0}) + "{}", {"runs past the end of the file"}},
      {"invalid JSON", st_file("{\"a\": ", ""), {"not valid JSON"}},
      {"JSON that is not an object", st_file("[1, 2]", ""), {"must be a JSON object, got array"}},
      {"unsupported dtype", st_file(R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", "abcd"),
       {"tensor 'w'", "unknown or unsupported dtype \"F16\""}},
      {"unknown dtype", st_file(R"({"w":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})", "abcd"),
       {"tensor 'w'", "unknown or unsupported dtype \"Q7\""}},
      {"shape does not match the byte range", st_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678"),
       {"tensor 'w'", "shape [3] of F32 needs 12 bytes but data_offsets [0,8] span 8"}},
      {"negative dimension", st_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "12345678"),
       {"tensor 'w'", "shape entries must be non-negative integers, got -2"}},
      {"missing data_offsets", st_file(R"({"w":{"dtype":"F32","shape":[2]}})", "12345678"),
       {"tensor 'w'", "missing \"data_offsets\""}},
      {"offsets end before they begin", st_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", "12345678"),
       {"tensor 'w'", "end before they begin"}},
      {"offsets past the data", st_file("{\"w\":{" + f32x2 + ",\"data_offsets\":[0,8]}}", "1234"),
       {"tensor 'w'", "data_offsets [0, 8] run past the end of the data section (4 bytes)"}},
      {"overlapping tensors",
       st_file("{\"a\":{" + f32x2 + ",\"data_offsets\":[0,8]},\"b\":{" + f32x2 + ",\"data_offsets\":[4,12]}}",
               "123456789012"),
       {"tensor 'b'", "overlap tensor 'a'"}},
      {"gap between tensors",
       st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
               "123456789012"),
       {"bytes [4, 8) of the data section belong to no tensor (gap before tensor 'b')"}},
      {"data not covered", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "12345678"),
       {"the data section has 8 bytes but the tensors cover only 4"}},
      {"duplicate names",
       st_file("{\"a\":{" + f32x2 + ",\"data_offsets\":[0,8]},\"a\":{" + f32x2 + ",\"data_offsets\":[8,16]}}",
               "1234567890123456"),
       {"duplicate tensor name 'a'"}},
      {"duplicate key inside an entry",
       st_file(R"({"a":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,4]}})", "1234"),
       {"entry 'a': duplicate key 'dtype'"}},
      {"metadata value not a string", st_file(R"({"__metadata__":{"step":5}})", ""),
       {"__metadata__ value of 'step' must be a string, got 5"}},
  };
  for (const Case& c : cases) {
    INFO("case: ", c.name);
    const std::string path = dir.file("bad.safetensors");
    write_bytes(path, c.bytes);
    const std::string message = error_of([&] { load_safetensors(path); });
    REQUIRE_MESSAGE(!message.empty(), "no error for a malformed file");
    INFO("message: ", message);
    CHECK(contains(message, path));
    for (const std::string& part : c.expected) CHECK(contains(message, part));
    // The metadata reader validates the same header.
    CHECK(!error_of([&] { load_safetensors_metadata(path); }).empty());
  }

  const std::string missing = dir.file("missing.safetensors");
  const std::string message = error_of([&] { load_safetensors(missing); });
  CHECK(contains(message, missing));
  CHECK(contains(message, "cannot open"));
}

TEST_CASE("safetensors: the write is atomic") {
  TempDir dir("safetensors-atomic");
  const NamedTensors small = {{"w", Tensor::from_vector<float>({1, 2, 3}, {3})}};

  SUBCASE("a missing directory fails cleanly and creates nothing") {
    const std::string path = dir.file("no/such/dir/model.safetensors");
    const std::string message = error_of([&] { save_safetensors(path, small); });
    CHECK(contains(message, path));
    CHECK(contains(message, "No such file or directory"));
    CHECK(dir.listing().empty());
  }

  SUBCASE("saving over an existing file replaces it whole") {
    const std::string path = dir.file("model.safetensors");
    // A larger old file: a non-atomic in-place write would leave its tail behind.
    save_safetensors(path, {{"big", Tensor::zeros({1000})}, {"other", Tensor::ones({7}, DType::f64)}});
    save_safetensors(path, small, {}, /*checksums=*/false);
    const NamedTensors loaded = load_safetensors(path);
    REQUIRE(loaded.size() == 1);
    CHECK(loaded[0].first == "w");
    CHECK(loaded[0].second.to_vector<float>() == std::vector<float>{1, 2, 3});
    // 8 + the 54-byte header padded to 56 + 3 floats; an in-place write would have kept the old length.
    CHECK(fs::file_size(path) == 8 + 56 + 12);
    CHECK(dir.listing() == std::vector<std::string>{"model.safetensors"});
  }

  SUBCASE("a failed rename leaves no temporary file") {
    // The target is a directory: everything is written, then the rename fails.
    const std::string path = dir.file("taken");
    fs::create_directory(path);
    const std::string message = error_of([&] { save_safetensors(path, small); });
    CHECK(contains(message, "cannot rename the temporary file over it"));
    CHECK(dir.listing() == std::vector<std::string>{"taken"});
  }

  SUBCASE("invalid input throws before the old file is touched") {
    const std::string path = dir.file("model.safetensors");
    save_safetensors(path, small);
    const std::string before = read_bytes(path);
    const Tensor t = Tensor::zeros({2});
    CHECK(contains(error_of([&] { save_safetensors(path, {{"a", t}, {"a", t}}); }), "duplicate tensor name 'a'"));
    CHECK(contains(error_of([&] { save_safetensors(path, {{"__metadata__", t}}); }), "cannot be named"));
    CHECK(contains(error_of([&] { save_safetensors(path, {{"u", Tensor()}}); }), "tensor 'u' is undefined"));
    CHECK(read_bytes(path) == before);
    CHECK(dir.listing() == std::vector<std::string>{"model.safetensors"});
  }
}

}  // namespace loom::test
