// test_datasets.cpp: the character tokenizer, text loading and splitting, and
// labml's shuffled random-offset batcher. Nothing here uses the network.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "datasets/batcher.h"
#include "datasets/char_tokenizer.h"
#include "datasets/sha256.h"
#include "datasets/text_dataset.h"
#include "tests/test_util.h"
#include "engine/error.h"

namespace loom::test {

using datasets::Batch;
using datasets::BatcherState;
using datasets::CharTokenizer;
using datasets::ShuffledBatcher;
using datasets::TextDataset;

namespace {

namespace fs = std::filesystem;

std::vector<int64_t> iota_ids(int64_t n) {
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = i;
  return ids;
}

bool curl_available() { return std::system("curl --version > /dev/null 2>&1") == 0; }

}  // namespace

// ---- tokenizer -------------------------------------------------------------------------------

TEST_CASE("tokenizer: the vocabulary is the sorted set of characters") {
  const CharTokenizer tok = CharTokenizer::from_text("ba\nab c!c");
  CHECK(tok.vocab_size() == 6);
  CHECK(tok.chars() == "\n !abc");

  // All of Tiny Shakespeare's characters, scrambled: labml's ids, models/FAMILIES.md §1.4.
  const std::string shakespeare_chars = "zyx?;:3.-,'&$! \nabcdefghijklmnopqrstuvwABCDEFGHIJKLMNOPQRSTUVWXYZ";
  const CharTokenizer s = CharTokenizer::from_text(shakespeare_chars + shakespeare_chars);
  CHECK(s.vocab_size() == 65);
  const std::vector<std::pair<char, int64_t>> expected = {{'\n', 0}, {' ', 1},  {'!', 2},  {'$', 3},  {'&', 4},
                                                         {'\'', 5}, {',', 6},  {'-', 7},  {'.', 8},  {'3', 9},
                                                         {':', 10}, {';', 11}, {'?', 12}, {'A', 13}, {'Z', 38},
                                                         {'a', 39}, {'z', 64}};
  for (const auto& item : expected) {
    const auto& c = item.first;
    const auto& id = item.second;
    INFO("character code ", int(c));
    CHECK(s.encode(std::string(1, c)) == std::vector<int64_t>{id});
  }
}

TEST_CASE("tokenizer: encode and decode round trip; unknown characters are dropped and counted") {
  const std::string text = "First Citizen:\nBefore we proceed any further, hear me speak.\n";
  const CharTokenizer tok = CharTokenizer::from_text(text);
  int64_t dropped = -1;
  const std::vector<int64_t> ids = tok.encode(text, &dropped);
  CHECK(dropped == 0);
  CHECK(ids.size() == text.size());
  CHECK(tok.decode(ids) == text);
  CHECK(tok.decode(Tensor::from_vector<int64_t>(ids, {static_cast<int64_t>(ids.size())})) == text);

  const CharTokenizer abc = CharTokenizer::from_text("cab");
  CHECK(abc.encode("abxc?a", &dropped) == std::vector<int64_t>{0, 1, 2, 0});
  CHECK(dropped == 2);
  CHECK(abc.encode("") == std::vector<int64_t>{});

  const std::string message = error_of([&] { abc.decode(std::vector<int64_t>{0, 3}); });
  CHECK(contains(message, "id 3 at position 1 is outside the vocabulary [0, 3)"));
  CHECK(!error_of([&] { abc.decode(std::vector<int64_t>{-1}); }).empty());
}

TEST_CASE("tokenizer: the vocabulary saves and loads as a JSON list") {
  const CharTokenizer tok = CharTokenizer::from_text("ba\nab c!\"");
  CHECK(tok.to_json() == R"(["\n"," ","!","\"","a","b","c"])");
  CHECK(CharTokenizer::from_json(tok.to_json()).chars() == tok.chars());

  // Bytes >= 0x80 travel as the code points U+0080..U+00FF (valid UTF-8 JSON).
  const CharTokenizer bytes = CharTokenizer::from_text(std::string("a\xe9\xff\x80", 4));
  CHECK(bytes.to_json() == "[\"a\",\"\xc2\x80\",\"\xc3\xa9\",\"\xc3\xbf\"]");
  CHECK(CharTokenizer::from_json(bytes.to_json()).chars() == bytes.chars());

  TempDir dir("tokenizer");
  tok.save(dir.file("vocab.json"));
  const CharTokenizer loaded = CharTokenizer::load(dir.file("vocab.json"));
  CHECK(loaded.chars() == tok.chars());
  CHECK(loaded.encode("abba") == tok.encode("abba"));

  CHECK(contains(error_of([] { CharTokenizer::from_json(R"(["a","bc"])"); }),
                 "vocabulary entry 1 must be a one-character string, got \"bc\""));
  CHECK(contains(error_of([] { CharTokenizer::from_json(R"(["a","a"])"); }), "'a' appears twice"));
  CHECK(contains(error_of([] { CharTokenizer::from_json("{\"a\": 1}"); }), "must be a JSON list"));
  CHECK(contains(error_of([] { CharTokenizer::from_json("[\"a\""); }), "not valid JSON"));
  const std::string missing = dir.file("missing.json");
  CHECK(contains(error_of([&] { CharTokenizer::load(missing); }), missing));
}

// ---- text dataset ----------------------------------------------------------------------------

TEST_CASE("text dataset: train/valid split at int(0.9 * len) characters") {
  // Expected train lengths are Python's int(0.9 * n).
  const std::vector<std::pair<int64_t, int64_t>> sizes = {{10, 9}, {7, 6}, {3, 2}, {1000, 900}, {1001, 900},
                                                          {123457, 111111}};
  for (const auto& item : sizes) {
    const auto& n = item.first;
    const auto& train = item.second;
    std::string text;
    for (int64_t i = 0; i < n; ++i) text.push_back("abcdefgh\n "[(i * 7) % 10]);
    const TextDataset d = TextDataset::from_text(text);
    INFO("length ", n);
    CHECK(d.train_chars == train);
    CHECK(static_cast<int64_t>(d.train_ids.size()) == train);
    CHECK(static_cast<int64_t>(d.valid_ids.size()) == n - train);
    CHECK(d.tokenizer.decode(d.train_ids) + d.tokenizer.decode(d.valid_ids) == text);
    CHECK(d.dropped == 0);
  }

  // A given tokenizer (from a checkpoint) is used as is; missing characters are counted.
  const TextDataset d = TextDataset::from_text("abcabcabcX", CharTokenizer::from_text("abc"));
  CHECK(d.tokenizer.vocab_size() == 3);
  CHECK(d.train_ids.size() == 9);
  CHECK(d.valid_ids.empty());
  CHECK(d.dropped == 1);
}

TEST_CASE("text dataset: loading from a path; a missing file is a clear error") {
  TempDir dir("text-dataset");
  const std::string path = dir.file("input.txt");
  std::ofstream(path) << "to be or not to be\n";
  const TextDataset d = TextDataset::load(path);
  CHECK(d.text == "to be or not to be\n");
  CHECK(d.tokenizer.chars() == "\n benort");

  const std::string missing = dir.file("absent/input.txt");
  const std::string message = error_of([&] { TextDataset::load(missing); });
  CHECK(contains(message, missing));
  CHECK(contains(message, "not found"));
  CHECK(!fs::exists(dir.path / "absent"));
}

TEST_CASE("text dataset: download through curl (local file:// URLs only)") {
  if (!curl_available()) {
    MESSAGE("curl is not installed: only the error path is checked");
    const std::string message = error_of([] { datasets::download_file("file:///x", "/tmp/loom-never-written"); });
    CHECK(contains(message, "curl"));
    return;
  }
  TempDir dir("download");
  const std::string source = dir.file("source.txt");
  std::ofstream(source) << "hello\nworld\n";
  const std::string target = dir.file("data/input.txt");
  // A missing file with a URL is fetched into place, creating its directory.
  CHECK(datasets::read_text_file(target, "file://" + source) == "hello\nworld\n");
  CHECK(fs::exists(target));
  CHECK(dir.listing() == std::vector<std::string>{"data", "source.txt"});

  const std::string other = dir.file("other.txt");
  const std::string message = error_of([&] { datasets::read_text_file(other, "file://" + dir.file("nope.txt")); });
  CHECK(contains(message, "could not download file://" + dir.file("nope.txt") + ": curl: "));
  CHECK(contains(message, "; place the file at " + other + " by hand"));
  CHECK(dir.listing() == std::vector<std::string>{"data", "source.txt"});  // no temporary file left
}

// ---- SHA-256 and the shipped copy of Tiny Shakespeare ---------------------------------------

TEST_CASE("sha256: FIPS 180 known answers, and messages around the padding boundaries") {
  using datasets::sha256_hex;
  // FIPS 180-2 appendix B and the NIST example values for SHA-256.
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_hex(std::string(1'000'000, 'a')) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  CHECK(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu") ==
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  // n times 'a' around the lengths where the padding needs a second block (55/56)
  // or the message fills whole blocks; digests from coreutils' sha256sum.
  const std::vector<std::pair<size_t, std::string>> lengths = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
  };
  for (const auto& length : lengths) {
    const size_t n = length.first;
    INFO(n, " bytes");
    CHECK(sha256_hex(std::string(n, 'a')) == length.second);
  }
}

TEST_CASE("text dataset: Tiny Shakespeare is read from the shipped copy, never downloaded") {
  TempDir dir("shipped");
  // A missing file under Tiny Shakespeare's URL: the shipped copy, and nothing written.
  const std::string absent = dir.file("data/tinyshakespeare.txt");
  std::string source;
  const std::string text = datasets::read_text_file(absent, datasets::kTinyShakespeareUrl, &source);
  CHECK(source == datasets::shipped_tiny_shakespeare_path());
  CHECK(text.size() == 1'115'394);
  CHECK(dir.listing().empty());
  // The default data.path, relative to whatever the working directory is, with no URL.
  if (!fs::exists(datasets::kTinyShakespearePath)) {
    const TextDataset d = TextDataset::load(datasets::kTinyShakespearePath, "");
    CHECK(d.source == datasets::shipped_tiny_shakespeare_path());
    CHECK(d.text == text);
  }
  // The check that guards the shipped copy: another file's bytes are refused,
  // naming the file and both digests.
  const std::string changed = dir.file("changed.txt");
  std::ofstream(changed) << text.substr(0, 1000);
  const std::string message = error_of([&] { datasets::read_checked_file(changed, datasets::kTinyShakespeareSha256); });
  check_mentions(message, {"changed.txt", datasets::kTinyShakespeareSha256, "1000 bytes", "git checkout"});
  CHECK(contains(message, datasets::sha256_hex(text.substr(0, 1000))));
  CHECK(datasets::read_checked_file(changed, datasets::sha256_hex(text.substr(0, 1000))) == text.substr(0, 1000));
  fs::remove(changed);

  // A file that exists is read as it is, even under Tiny Shakespeare's URL.
  const std::string own = dir.file("own.txt");
  std::ofstream(own) << "my own text\n";
  CHECK(datasets::read_text_file(own, datasets::kTinyShakespeareUrl, &source) == "my own text\n");
  CHECK(source == own);
}

// ---- batcher ---------------------------------------------------------------------------------

TEST_CASE("batcher: windows, shapes, and each item once per epoch") {
  // ids[i] = i, so a window's first input value is its start token.
  const int64_t n_tokens = 1000, L = 16, B = 7;
  ShuffledBatcher batcher(iota_ids(n_tokens), L, B, /*seed=*/1234);
  const int64_t items = (n_tokens - 1) / L;  // 62
  REQUIRE(batcher.num_items() == items);
  REQUIRE(batcher.batches_per_epoch() == 9);  // 8 full batches of 7, then 6

  std::set<int64_t> shifts;
  std::vector<int64_t> previous_order;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    CHECK(batcher.at_epoch_start());
    std::vector<int> seen(static_cast<size_t>(items), 0);
    std::vector<int64_t> order;
    for (int64_t k = 0; k < batcher.batches_per_epoch(); ++k) {
      const Batch batch = batcher.next();
      const int64_t width = k + 1 < batcher.batches_per_epoch() ? B : items - 8 * B;
      REQUIRE(batch.input.shape() == Shape{L, width});
      REQUIRE(batch.target.shape() == Shape{L, width});
      CHECK(batch.input.dtype() == DType::i64);
      const std::vector<int64_t> in = batch.input.to_vector<int64_t>(), tg = batch.target.to_vector<int64_t>();
      for (int64_t b = 0; b < width; ++b) {
        const int64_t start = in[b];
        const int64_t item = start / L;  // the shift is below L, so the item is recoverable
        const int64_t shift = start - item * L;
        INFO("epoch ", epoch, " batch ", k, " column ", b, " start ", start);
        REQUIRE(item < items);
        CHECK(shift <= std::min(L - 1, n_tokens - (item * L + L + 1)));
        for (int64_t t = 0; t < L; ++t) {
          CHECK(in[t * width + b] == start + t);
          CHECK(tg[t * width + b] == start + t + 1);
        }
        CHECK(tg[(L - 1) * width + b] < n_tokens);
        ++seen[item];
        order.push_back(item);
        shifts.insert(shift);
      }
    }
    CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
    CHECK(order != previous_order);  // a fresh permutation every epoch
    CHECK(order == batcher.item_order(epoch));
    previous_order = order;
  }
  CHECK(batcher.state().epoch == 3);
  CHECK(shifts.size() > 8);  // the offsets really are random
}

TEST_CASE("batcher: the random shift covers its inclusive range, limited near the end") {
  // 85 tokens, L = 16: 5 items; the last may shift by at most 85 - (64 + 17) = 4.
  ShuffledBatcher batcher(iota_ids(85), 16, 2, 7);
  REQUIRE(batcher.num_items() == 5);
  std::set<int64_t> last_shifts, first_shifts;
  for (int64_t epoch = 0; epoch < 300; ++epoch) {
    const std::vector<int64_t> starts = batcher.item_starts(epoch);
    first_shifts.insert(starts[0]);
    last_shifts.insert(starts[4] - 64);
  }
  CHECK(last_shifts == std::set<int64_t>{0, 1, 2, 3, 4});
  CHECK(*first_shifts.begin() == 0);
  CHECK(*first_shifts.rbegin() == 15);

  // Exactly L * k + 1 tokens: the last item cannot shift at all.
  ShuffledBatcher tight(iota_ids(81), 16, 3, 7);
  for (int64_t epoch = 0; epoch < 20; ++epoch) CHECK(tight.item_starts(epoch)[4] == 64);
}

TEST_CASE("batcher: same seed, same batches; saved state resumes exactly") {
  auto batches_equal = [](const Batch& a, const Batch& b) {
    return a.input.shape() == b.input.shape() && a.input.to_vector<int64_t>() == b.input.to_vector<int64_t>() &&
           a.target.to_vector<int64_t>() == b.target.to_vector<int64_t>();
  };
  const std::vector<int64_t> ids = iota_ids(1000);
  ShuffledBatcher a(ids, 16, 7, 99), b(ids, 16, 7, 99), other(ids, 16, 7, 100);
  CHECK(a.item_order(0) != other.item_order(0));
  for (int i = 0; i < 12; ++i) {  // into the second epoch (9 batches per epoch)
    const Batch x = a.next();
    CHECK(batches_equal(x, b.next()));
  }
  const BatcherState state = a.state();
  CHECK(state == BatcherState{99, 1, 3});
  const std::string json = state.to_json();
  CHECK(json == R"({"seed":99,"epoch":1,"position":3})");

  std::vector<Batch> expected;
  for (int i = 0; i < 10; ++i) expected.push_back(a.next());  // crosses into the third epoch

  other.set_state(BatcherState::from_json(json));  // a batcher built with another seed
  CHECK(other.state() == state);
  for (int i = 0; i < 10; ++i) {
    INFO("batch ", i, " after restoring");
    CHECK(batches_equal(other.next(), expected[i]));
  }
}

TEST_CASE("batcher: streams order gives each row one contiguous stream that the next batch continues") {
  // 103 tokens, 4 streams of S = floor(102 / 4) = 25 tokens at 0, 25, 50, 75; seq_len 6: 4 batches.
  ShuffledBatcher batcher(iota_ids(103), 6, 4, 7, datasets::BatchOrder::streams);
  REQUIRE(batcher.batches_per_epoch() == 4);
  for (int64_t epoch = 0; epoch < 2; ++epoch)
    for (int64_t i = 0; i < 4; ++i) {
      INFO("epoch ", epoch, " batch ", i);
      CHECK(batcher.at_epoch_start() == (i == 0));
      const Batch batch = batcher.next();
      REQUIRE(batch.input.shape() == (Shape{6, 4}));
      const std::vector<int64_t> input = batch.input.to_vector<int64_t>(), target = batch.target.to_vector<int64_t>();
      for (int64_t t = 0; t < 6; ++t)
        for (int64_t b = 0; b < 4; ++b) {
          CHECK(input[t * 4 + b] == b * 25 + i * 6 + t);
          CHECK(target[t * 4 + b] == b * 25 + i * 6 + t + 1);
        }
    }
  // The last target (75 + 24 = 99) stays inside the last stream; a saved state resumes.
  batcher.set_state({7, 5, 2});
  CHECK(batcher.next().input.to_vector<int64_t>()[0] == 12);
  CHECK(contains(error_of([] { ShuffledBatcher(iota_ids(40), 8, 8, 0, datasets::BatchOrder::streams); }),
                 "40 tokens cut into 8 streams (data.carry_over) give 4 tokens per stream, too few for one batch of "
                 "seq_len 8"));
}

TEST_CASE("batcher: invalid arguments and states are rejected") {
  CHECK(contains(error_of([] { ShuffledBatcher(iota_ids(16), 16, 4, 0); }),
                 "16 tokens are too few for seq_len 16 (one item needs seq_len + 1 = 17)"));
  CHECK(contains(error_of([] { ShuffledBatcher(iota_ids(100), 0, 4, 0); }), "seq_len must be positive, got 0"));
  CHECK(contains(error_of([] { ShuffledBatcher(iota_ids(100), 8, 0, 0); }), "batch_size must be positive, got 0"));
  ShuffledBatcher batcher(iota_ids(100), 8, 4, 0);  // 12 items, 3 batches
  CHECK(contains(error_of([&] { batcher.set_state({0, 0, 3}); }), "position 3 is outside the 3 batches"));
  CHECK(contains(error_of([] { BatcherState::from_json(R"({"seed":1,"epoch":-1,"position":0})"); }),
                 "\"epoch\" must be a non-negative integer, got -1"));
  CHECK(contains(error_of([] { BatcherState::from_json(R"({"seed":1,"epoch":0})"); }), "\"position\""));
}

// ---- Tiny Shakespeare ---------------------------------------------------------------------------

TEST_CASE("dataset: Tiny Shakespeare sizes match labml's") {
  const TextDataset d = TextDataset::load(datasets::shipped_tiny_shakespeare_path());
  CHECK(d.text.size() == 1'115'394);
  CHECK(datasets::sha256_hex(d.text) == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed");
  CHECK(d.tokenizer.vocab_size() == 65);
  CHECK(d.tokenizer.chars().substr(0, 13) == "\n !$&',-.3:;?");
  CHECK(d.train_ids.size() == 1'003'854);
  CHECK(d.valid_ids.size() == 111'540);
  CHECK(d.tokenizer.decode(std::vector<int64_t>(d.train_ids.begin(), d.train_ids.begin() + 13)) == "First Citizen");

  // models/FAMILIES.md §1.4: items and batches per epoch for the three experiments.
  CHECK(ShuffledBatcher(d.train_ids, 128, 16, 0).num_items() == 7'842);
  CHECK(ShuffledBatcher(d.train_ids, 128, 16, 0).batches_per_epoch() == 491);
  CHECK(ShuffledBatcher(d.valid_ids, 128, 16, 0).num_items() == 871);
  CHECK(ShuffledBatcher(d.valid_ids, 128, 16, 0).batches_per_epoch() == 55);
  CHECK(ShuffledBatcher(d.train_ids, 128, 64, 0).batches_per_epoch() == 123);
  CHECK(ShuffledBatcher(d.train_ids, 256, 32, 0).num_items() == 3'921);
  CHECK(ShuffledBatcher(d.valid_ids, 256, 32, 0).num_items() == 435);
}

}  // namespace loom::test
