// listops_rfwp.cpp: the authors' sequential ListOps generator (see the header).
#include "datasets/listops_rfwp.h"

#include <algorithm>

#include "engine/error.h"

namespace loom::datasets {

const std::vector<std::string> kListOpsRfwpWords = {"<pad>", "0",    "1",    "2",      "3",    "4",   "5", "6", "7",
                                                    "8",     "9",    "[MIN", "[MAX", "[FIRST", "[MED", "[SM", "]"};

const char* operators_name(ListOpsOperators operators) {
  return operators == ListOpsOperators::min_max_first ? "min_max_first" : "min_max_med_sm";
}

namespace {

constexpr int64_t kDigits = 10;
// Draws of one example before giving up: at depth 15 about 1 tree in 40 qualifies.
constexpr int64_t kMaxDraws = 1'000'000;

enum Operator : int64_t { kMin, kMax, kFirst, kMed, kSumMod };
const char* const kOperatorWords[] = {"[MIN", "[MAX", "[FIRST", "[MED", "[SM"};

int64_t apply(int64_t op, std::vector<int64_t> args) {
  switch (op) {
    case kMin: return *std::min_element(args.begin(), args.end());
    case kMax: return *std::max_element(args.begin(), args.end());
    case kFirst: return args.front();
    case kMed: {
      std::sort(args.begin(), args.end());
      const size_t n = args.size();
      return n % 2 ? args[n / 2] : (args[n / 2 - 1] + args[n / 2]) / 2;
    }
    default: {
      int64_t s = 0;
      for (int64_t a : args) s += a;
      return s % kDigits;
    }
  }
}

struct Drawn {
  int64_t value = 0, depth = 0;
};

// Appends an expression whose root sits below `level` operators (0: the root) and
// returns its value and depth.
Drawn draw(std::mt19937_64& rng, const ListOpsRfwpConfig& c, int64_t level, std::vector<std::string>& words) {
  const bool may_nest = level < kListOpsRfwpMaxDepth;
  if (level > 0 && !(may_nest && chance(rng, 1, 4))) {
    const int64_t d = uniform_below(rng, kDigits);
    words.push_back(std::to_string(d));
    return {d, 0};
  }
  const bool nyu = c.operators == ListOpsOperators::min_max_med_sm;
  const int64_t pick = uniform_below(rng, nyu ? 4 : 3);
  const int64_t op = nyu ? (pick < 2 ? pick : pick + 1) : pick;  // MIN MAX MED SM, or MIN MAX FIRST
  const int64_t count = 2 + uniform_below(rng, c.max_args - 1);
  words.push_back(kOperatorWords[op]);
  std::vector<int64_t> args;
  int64_t deepest = 0;
  for (int64_t i = 0; i < count; ++i) {
    const Drawn a = draw(rng, c, level + 1, words);
    args.push_back(a.value);
    deepest = std::max(deepest, a.depth);
  }
  words.push_back("]");
  return {apply(op, args), deepest + 1};
}

}  // namespace

ListOpsRfwp::ListOpsRfwp(const ListOpsRfwpConfig& c) : config_(c), vocabulary_(kListOpsRfwpWords) {
  LOOM_CHECK(c.depth >= 1 && c.depth <= kListOpsRfwpMaxDepth, "listops: depth must be in [1, ",
             kListOpsRfwpMaxDepth, "], got ", c.depth);
  LOOM_CHECK(c.max_args >= 2, "listops: max_args must be at least 2, got ", c.max_args);
  check_split_sizes("listops", c.train_size, c.valid_size, c.test_size);
}

int64_t ListOpsRfwp::split_size(Split split) const {
  return size_of_split(split, config_.train_size, config_.valid_size, config_.test_size);
}

LabelledSequence ListOpsRfwp::example(Split split, int64_t index) const {
  check_example_index("listops", split, index, split_size(split));
  std::mt19937_64 rng = example_rng(config_.seed, split, static_cast<uint64_t>(index));
  std::vector<std::string> words;
  for (int64_t attempt = 0; attempt < kMaxDraws; ++attempt) {
    words.clear();
    const Drawn tree = draw(rng, config_, 0, words);
    if (tree.depth != config_.depth) continue;
    LabelledSequence out;
    out.tokens = vocabulary_.encode(words);
    out.label = tree.value;
    return out;
  }
  LOOM_FAIL("listops: no tree of depth ", config_.depth, " in ", kMaxDraws, " draws (example ", index, " of the ",
            split_name(split), " split)");
}

std::string ListOpsRfwp::name() const {
  return "listops_rfwp(depth=" + std::to_string(config_.depth) + ", max_args=" + std::to_string(config_.max_args) +
         ", operators=" + operators_name(config_.operators) + ")";
}

}  // namespace loom::datasets
