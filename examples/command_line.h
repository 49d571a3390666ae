// command_line.h: argument parsing the example programs share.
#pragma once

#include <cstdint>
#include <exception>
#include <string>

#include "engine/error.h"

namespace loom::examples {

// `text` as a positive integer, or an error "<program>: <flag> expects a positive
// integer, got '<text>'" (trailing characters, signs and overflow included).
inline int64_t positive_integer(const char* program, const std::string& flag, const std::string& text) {
  size_t used = 0;
  int64_t n = 0;
  try {
    n = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  LOOM_CHECK(used == text.size() && n >= 1, program, ": ", flag, " expects a positive integer, got '", text, "'");
  return n;
}

}  // namespace loom::examples
