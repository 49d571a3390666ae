// fuzz_vocab.cpp: libFuzzer target for the vocabulary reader (models::parse_vocab,
// which reads a checkpoint's vocab.json).
//
// Any input must parse or throw loom::Error; a vocabulary that parses must write
// back (CharTokenizer::to_json) to one that parses to the same characters.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/error.h"
#include "models/programs/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const loom::datasets::CharTokenizer tokenizer = loom::models::parse_vocab(text, "fuzz: ");
    if (loom::models::parse_vocab(tokenizer.to_json(), "round trip: ").chars() != tokenizer.chars()) std::abort();
  } catch (const loom::Error&) {
  }
  return 0;
}
