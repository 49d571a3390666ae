#include "datasets/char_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"
#include "engine/json.h"

namespace loom::datasets {

namespace {

// "'a'" for printable bytes, "byte 0x0a" otherwise: readable in error messages.
std::string describe_byte(unsigned char b) {
  if (b >= 0x20 && b < 0x7f) return detail::concat("'", static_cast<char>(b), "'");
  static const char* hex = "0123456789abcdef";
  return detail::concat("byte 0x", hex[b >> 4], hex[b & 15]);
}

// One byte as a one-code-point UTF-8 string (bytes >= 0x80 as U+0080..U+00FF).
std::string byte_to_utf8(unsigned char b) {
  if (b < 0x80) return std::string(1, static_cast<char>(b));
  return {static_cast<char>(0xC0 | (b >> 6)), static_cast<char>(0x80 | (b & 0x3F))};
}

// The inverse of byte_to_utf8; false when `s` is not exactly one code point below 256.
bool utf8_to_byte(const std::string& s, unsigned char* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  if (s.size() == 1 && p[0] < 0x80) {
    *out = p[0];
    return true;
  }
  if (s.size() == 2 && (p[0] == 0xC2 || p[0] == 0xC3) && (p[1] & 0xC0) == 0x80) {
    *out = static_cast<unsigned char>((p[0] & 0x1F) << 6 | (p[1] & 0x3F));
    return true;
  }
  return false;
}

}  // namespace

CharTokenizer::CharTokenizer(std::string chars) : chars_(std::move(chars)) {
  std::fill(std::begin(id_of_), std::end(id_of_), int16_t{-1});
  for (size_t i = 0; i < chars_.size(); ++i) {
    const auto b = static_cast<unsigned char>(chars_[i]);
    LOOM_CHECK(id_of_[b] < 0, "CharTokenizer: ", describe_byte(b), " appears twice in the vocabulary (ids ",
               id_of_[b], " and ", i, ")");
    id_of_[b] = static_cast<int16_t>(i);
  }
}

CharTokenizer CharTokenizer::from_text(std::string_view text) {
  bool present[256] = {};
  for (char c : text) present[static_cast<unsigned char>(c)] = true;
  std::string chars;
  for (int b = 0; b < 256; ++b)  // ascending byte value = Python's sorted() on ASCII
    if (present[b]) chars.push_back(static_cast<char>(b));
  return CharTokenizer(std::move(chars));
}

std::vector<int64_t> CharTokenizer::encode(std::string_view text, int64_t* dropped) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  int64_t unknown = 0;
  for (char c : text) {
    const int16_t id = id_of_[static_cast<unsigned char>(c)];
    if (id >= 0) ids.push_back(id);
    else ++unknown;
  }
  if (dropped) *dropped = unknown;
  return ids;
}

std::string CharTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    LOOM_CHECK(ids[i] >= 0 && ids[i] < vocab_size(), "CharTokenizer::decode: id ", ids[i], " at position ", i,
               " is outside the vocabulary [0, ", vocab_size(), ")");
    text.push_back(chars_[static_cast<size_t>(ids[i])]);
  }
  return text;
}

std::string CharTokenizer::decode(const Tensor& ids) const { return decode(ids.to_vector<int64_t>()); }

std::string CharTokenizer::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (char c : chars_) list.push_back(byte_to_utf8(static_cast<unsigned char>(c)));
  return list.dump();
}

CharTokenizer CharTokenizer::from_json(const std::string& text) {
  nlohmann::json list;
  try {
    list = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    LOOM_FAIL("CharTokenizer: the vocabulary is not valid JSON: ", e.what());
  }
  LOOM_CHECK(list.is_array(), "CharTokenizer: the vocabulary must be a JSON list of characters, got ",
             list.type_name());
  std::string chars;
  for (size_t i = 0; i < list.size(); ++i) {
    unsigned char b = 0;
    LOOM_CHECK(list[i].is_string() && utf8_to_byte(list[i].get<std::string>(), &b), "CharTokenizer: vocabulary entry ",
               i, " must be a one-character string, got ", json_excerpt(list[i]));
    chars.push_back(static_cast<char>(b));
  }
  return CharTokenizer(std::move(chars));
}

void CharTokenizer::save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary);
  out << to_json() << '\n';
  out.close();
  LOOM_CHECK(out.good(), "CharTokenizer::save: cannot write '", path, "'");
}

CharTokenizer CharTokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LOOM_CHECK(in.is_open(), "CharTokenizer::load: cannot open '", path, "'");
  std::stringstream text;
  text << in.rdbuf();
  try {
    return from_json(text.str());
  } catch (const Error& e) {
    LOOM_FAIL("CharTokenizer::load: '", path, "': ", e.what());
  }
}

}  // namespace loom::datasets
