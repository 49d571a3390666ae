#include "engine/json.h"

#include <set>
#include <vector>

#include "engine/error.h"

namespace loom {

namespace {

// The deepest bracket nesting of `text`, ignoring brackets inside strings; stops
// at the first byte past `limit`, returning its offset in *where.
int nesting_depth(const std::string& text, int limit, size_t* where) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (depth > limit) {
        *where = i;
        return depth;
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

std::string cut(const std::string& text, size_t max_chars) {
  if (text.size() <= max_chars) return text;
  return text.substr(0, max_chars) + "... (" + std::to_string(text.size()) + " characters)";
}

template <class Json>
std::string excerpt(const Json& value, size_t max_chars) {
  return cut(value.dump(-1, ' ', false, Json::error_handler_t::replace), max_chars);
}

}  // namespace

void check_json_depth(const std::string& text, const std::string& where, int max_depth) {
  size_t offset = 0;
  LOOM_CHECK(nesting_depth(text, max_depth, &offset) <= max_depth, where, "JSON nested deeper than ", max_depth,
             " levels (at byte ", offset, ")");
}

nlohmann::ordered_json parse_json_strictly(const std::string& text, const std::string& where, int max_depth) {
  using Json = nlohmann::ordered_json;
  check_json_depth(text, where, max_depth);

  // Keys seen per open object, and the path of keys leading to it, for the message.
  std::vector<std::set<std::string>> open_objects;
  std::vector<std::string> path;
  std::string last_key, problem;
  auto on_event = [&](int, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      // Arrays hold no keys; they get a (never filled) key set too, so that
      // depths pair up with the path of keys.
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (!open_objects.empty()) path.push_back(last_key);
        open_objects.emplace_back();
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        open_objects.pop_back();
        if (!path.empty() && open_objects.size() == path.size()) path.pop_back();
        break;
      case Json::parse_event_t::key:
        last_key = parsed.get<std::string>();
        if (problem.empty() && !open_objects.back().insert(last_key).second) {
          std::string at;
          for (const std::string& p : path) at += p + ".";
          problem = "duplicate key \"" + cut(at + last_key, 80) + "\" (JSON keeps only one; give it once)";
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json value;
  try {
    value = Json::parse(text, on_event);
  } catch (const Json::exception& e) {
    LOOM_FAIL(where, "not valid JSON: ", cut(e.what(), 200));
  }
  LOOM_CHECK(problem.empty(), where, problem);
  return value;
}

std::string json_excerpt(const nlohmann::ordered_json& value, size_t max_chars) { return excerpt(value, max_chars); }
std::string json_excerpt(const nlohmann::json& value, size_t max_chars) { return excerpt(value, max_chars); }
std::string quote_excerpt(const std::string& text, size_t max_chars) { return "\"" + cut(text, max_chars) + "\""; }

}  // namespace loom
