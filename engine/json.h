// json.h: reading JSON that comes from outside (configs, safetensors headers,
// vocabularies) without trusting its shape.
//
// nlohmann::json would accept a million nested brackets and then exhaust the
// stack writing or destroying them, and silently keep the last of two equal keys.
// parse_json_strictly checks the nesting depth with a scan of the text before
// the parser sees it, and refuses duplicate keys, naming the object's key path.
// json_excerpt quotes a value in a message, cut to a readable length.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace loom {

// Deeper than any file loom reads needs (a config nests 3 levels).
inline constexpr int kMaxJsonDepth = 64;

// Throws loom::Error starting with `where` when brackets nest deeper than max_depth.
void check_json_depth(const std::string& text, const std::string& where, int max_depth = kMaxJsonDepth);

// Parses `text` or throws loom::Error starting with `where` ("run.json: ").
nlohmann::ordered_json parse_json_strictly(const std::string& text, const std::string& where,
                                           int max_depth = kMaxJsonDepth);

// value.dump(), cut to at most `max_chars` characters with "..." and the full size.
std::string json_excerpt(const nlohmann::ordered_json& value, size_t max_chars = 60);
std::string json_excerpt(const nlohmann::json& value, size_t max_chars = 60);

// `text` in quotes, cut the same way.
std::string quote_excerpt(const std::string& text, size_t max_chars = 60);

}  // namespace loom
