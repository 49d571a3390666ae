// error.h: the one exception type loom throws, and the check macro every op uses.
//
// Messages are meant for the user: they name the op and the offending shapes or
// values, e.g. "add: shapes [2, 3] and [4] cannot be broadcast".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace loom {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
}  // namespace detail

}  // namespace loom

// LOOM_CHECK(cond, "op: message ", value, ...) throws loom::Error when cond is false.
#define LOOM_CHECK(cond, ...)                                   \
  do {                                                          \
    if (!(cond)) throw ::loom::Error(::loom::detail::concat(__VA_ARGS__)); \
  } while (0)

#define LOOM_FAIL(...) throw ::loom::Error(::loom::detail::concat(__VA_ARGS__))
