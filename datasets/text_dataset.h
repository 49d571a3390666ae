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

// Reads the file at `path`. When it is missing and `url` is not empty, first
// downloads it there (see download_file); otherwise throws naming the path.
std::string read_text_file(const std::string& path, const std::string& url = "");

// Downloads `url` to `path` with the `curl` command-line tool: loom needs no
// HTTP/TLS library for a one-time download, and curl is on nearly every machine.
// The bytes go to a temporary file next to `path` that is renamed into place
// only when complete. Throws "could not download <url>: <reason>; place the file
// at <path> by hand" when offline, on an HTTP error, or when curl is missing.
void download_file(const std::string& url, const std::string& path);

struct TextDataset {
  std::string text;         // the whole file
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
