// char_tokenizer.h: labml's character-level tokenizer.
//
// The vocabulary is the sorted set of characters in a text; a character's id is
// its rank in that set. For Tiny Shakespeare that gives 65 tokens: '\n' = 0,
// ' ' = 1, '!' = 2, ..., 'A'..'Z' = 13..38, 'a'..'z' = 39..64.
//
// loom works on bytes, not Unicode code points. For ASCII text (Tiny
// Shakespeare) the two coincide; for other UTF-8 text every byte of a
// multi-byte character becomes its own token.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tensor.h"

namespace loom::datasets {

class CharTokenizer {
 public:
  CharTokenizer() : CharTokenizer(std::string()) {}  // empty vocabulary
  // Ids are positions in `chars`, which must not repeat a byte.
  explicit CharTokenizer(std::string chars);
  // The sorted set of bytes in `text` (labml's vocabulary order).
  static CharTokenizer from_text(std::string_view text);

  int64_t vocab_size() const { return static_cast<int64_t>(chars_.size()); }
  const std::string& chars() const { return chars_; }  // id -> byte
  bool contains(char c) const { return id_of_[static_cast<unsigned char>(c)] >= 0; }

  // Bytes not in the vocabulary are dropped, as labml's text_to_i does; their
  // number goes to *dropped (when given) so a caller can warn about them.
  std::vector<int64_t> encode(std::string_view text, int64_t* dropped = nullptr) const;
  // Throws on an id outside [0, vocab_size).
  std::string decode(const std::vector<int64_t>& ids) const;
  std::string decode(const Tensor& ids) const;  // int64, any shape, row-major order

  // The vocabulary as a JSON list of one-character strings, id order, e.g.
  // ["\n", " ", "!", ...], so a checkpoint can carry it (safetensors metadata
  // holds strings). A byte >= 0x80 is written as the code point of the same
  // value (U+0080..U+00FF), since a lone such byte is not valid UTF-8.
  std::string to_json() const;
  static CharTokenizer from_json(const std::string& json);
  void save(const std::string& path) const;
  static CharTokenizer load(const std::string& path);

 private:
  std::string chars_;
  int16_t id_of_[256];  // byte -> id, -1 when absent
};

}  // namespace loom::datasets
