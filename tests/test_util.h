// test_util.h: small helpers shared by the test files.
#pragma once

#include <doctest/doctest.h>

#include <initializer_list>
#include <string>

#include "engine/error.h"

namespace loom::test {

// The message of the loom::Error that fn throws, or "" when it throws none.
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Checks that an error message was produced and names every part.
inline void check_mentions(const std::string& message, std::initializer_list<const char*> parts) {
  INFO("message: ", message);
  REQUIRE(!message.empty());
  for (const char* p : parts) CHECK_MESSAGE(contains(message, p), "missing '", std::string(p), "'");
}

}  // namespace loom::test
