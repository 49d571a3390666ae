// text_dataset.h: a text file, its character vocabulary and the train/valid split.
//
// As labml does: the vocabulary comes from the whole text, and the text is
// split by character index, train = text[: int(0.9 * len)], valid = the rest.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "datasets/char_tokenizer.h"

namespace loom::datasets {

inline constexpr const char* kTinyShakespeareUrl =
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";
// The path configs name it by (data.path's default, models/programs/config.h).
inline constexpr const char* kTinyShakespearePath = "data/tinyshakespeare.txt";
// The SHA-256 of the 1,115,394 bytes of Tiny Shakespeare.
inline constexpr const char* kTinyShakespeareSha256 =
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed";

// Tiny Shakespeare ships with loom as datasets/tinyshakespeare.txt. The build
// compiles in where the source tree is, so this path holds from any working
// directory, as long as the source tree stays where it was built.
std::string shipped_tiny_shakespeare_path();

// The shipped copy, checked against kTinyShakespeareSha256 (see read_checked_file).
std::string read_shipped_tiny_shakespeare();

// The bytes of the file at `path` when their SHA-256 is `sha256` (64 lowercase hex
// digits); otherwise an error naming the path, both digests and the size, so an
// edited, truncated or line-ending-converted copy never trains silently.
std::string read_checked_file(const std::string& path, const std::string& sha256);

// Reads the file at `path`. When it is missing:
//  - Tiny Shakespeare (`url` is kTinyShakespeareUrl or `path` is
//    kTinyShakespearePath) is read from the shipped copy: nothing is downloaded
//    or written, so the default config works offline;
//  - any other non-empty `url` is first downloaded to `path` (see download_file);
//  - otherwise it throws naming the path.
// `source`, when given, receives the path actually read.
std::string read_text_file(const std::string& path, const std::string& url = "", std::string* source = nullptr);

// Downloads `url` to `path` with the `curl` command-line tool: loom needs no
// HTTP/TLS library for a one-time download, and curl is on nearly every machine.
// The bytes go to a temporary file next to `path` that is renamed into place
// only when complete. Throws "could not download <url>: <reason>; place the file
// at <path> by hand" when offline, on an HTTP error, or when curl is missing.
void download_file(const std::string& url, const std::string& path);

struct TextDataset {
  std::string text;         // the whole file
  std::string source;       // the file it came from (the shipped copy of Tiny Shakespeare, or data.path); "" from text
  CharTokenizer tokenizer;  // from the whole text, unless one was given
  std::vector<int64_t> train_ids;
  std::vector<int64_t> valid_ids;
  int64_t train_chars = 0;  // length of the train part of the text, before encoding
  int64_t dropped = 0;      // characters missing from a given tokenizer (see CharTokenizer::encode)

  // Splits at int(train_fraction * len) characters. A given `tokenizer` (e.g.
  // the one a checkpoint carries) replaces the one built from the text.
  static TextDataset from_text(std::string text, std::optional<CharTokenizer> tokenizer = std::nullopt,
                               double train_fraction = 0.9);
  // read_text_file(path, url), then from_text.
  static TextDataset load(const std::string& path, const std::string& url = "",
                          std::optional<CharTokenizer> tokenizer = std::nullopt, double train_fraction = 0.9);
};

}  // namespace loom::datasets
