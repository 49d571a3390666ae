// listops.cpp: the sequential ListOps generator (see the header).
#include "datasets/listops.h"

#include <algorithm>

#include "engine/error.h"

namespace loom::datasets {

const std::vector<std::string> kListOpsWords = {"<pad>", "0",    "1",    "2",    "3",   "4", "5", "6",
                                                "7",     "8",    "9",    "[MIN", "[MAX", "[MED", "[SM", "]"};

namespace {

constexpr int64_t kDigits = 10;
const char* const kOperators[] = {"[MIN", "[MAX", "[MED", "[SM"};
constexpr int64_t kRedraws = 1000;

int64_t apply(int64_t op, std::vector<int64_t> args) {
  switch (op) {
    case 0: return *std::min_element(args.begin(), args.end());
    case 1: return *std::max_element(args.begin(), args.end());
    case 2: {
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

class TreeDrawer {
 public:
  TreeDrawer(std::mt19937_64& rng, const ListOpsConfig& c) : rng_(rng), c_(c) {}

  // Appends an expression at `depth_left` levels of operators at most, holding a
  // spine of `spine` nested operators (0: none), and returns its value.
  int64_t draw(int64_t spine, int64_t depth_left, std::vector<std::string>& words) {
    if (spine == 0 && (depth_left == 0 || !chance(rng_, c_.operation_percent, 100))) {
      const int64_t d = uniform_below(rng_, kDigits);
      words.push_back(std::to_string(d));
      return d;
    }
    const int64_t op = uniform_below(rng_, 4);
    const int64_t count = 2 + uniform_below(rng_, c_.max_args - 1);
    const int64_t spine_position = spine > 0 ? uniform_below(rng_, count) : -1;
    words.push_back(kOperators[op]);
    std::vector<int64_t> args;
    for (int64_t i = 0; i < count; ++i)
      args.push_back(draw(i == spine_position ? spine - 1 : 0, depth_left - 1, words));
    words.push_back("]");
    return apply(op, args);
  }

 private:
  std::mt19937_64& rng_;
  const ListOpsConfig& c_;
};

}  // namespace

ListOps::ListOps(const ListOpsConfig& c) : config_(c), vocabulary_(kListOpsWords) {
  LOOM_CHECK(c.max_depth >= 1, "listops: max_depth must be at least 1, got ", c.max_depth);
  LOOM_CHECK(c.min_depth >= 1 && c.min_depth <= c.max_depth, "listops: min_depth must be in [1, max_depth = ",
             c.max_depth, "], got ", c.min_depth);
  LOOM_CHECK(c.max_args >= 2, "listops: max_args must be at least 2, got ", c.max_args);
  LOOM_CHECK(c.operation_percent >= 0 && c.operation_percent < 100, "listops: operation_percent must be in [0, 100), got ",
             c.operation_percent);
  LOOM_CHECK(c.max_length >= 3 * c.min_depth + 1, "listops: max_length ", c.max_length,
             " cannot hold a tree of depth min_depth = ", c.min_depth, " (that takes at least ", 3 * c.min_depth + 1,
             " tokens)");
  check_split_sizes("listops", c.train_size, c.valid_size, c.test_size);
}

int64_t ListOps::split_size(Split split) const {
  return size_of_split(split, config_.train_size, config_.valid_size, config_.test_size);
}

LabelledSequence ListOps::example(Split split, int64_t index) const {
  check_example_index("listops", split, index, split_size(split));
  std::mt19937_64 rng = example_rng(config_.seed, split, static_cast<uint64_t>(index));
  TreeDrawer drawer(rng, config_);
  for (int64_t attempt = 0; attempt < kRedraws; ++attempt) {
    const int64_t depth = config_.min_depth + uniform_below(rng, config_.max_depth - config_.min_depth + 1);
    std::vector<std::string> words;
    LabelledSequence out;
    out.label = drawer.draw(depth, config_.max_depth, words);
    if (static_cast<int64_t>(words.size()) > config_.max_length) continue;
    out.tokens = vocabulary_.encode(words);
    return out;
  }
  throw Error("listops: " + std::to_string(kRedraws) + " trees in a row were longer than max_length = " +
              std::to_string(config_.max_length) + " tokens; raise max_length or lower operation_percent or max_args");
}

std::string ListOps::name() const {
  return "listops(depth=" + std::to_string(config_.min_depth) + ".." + std::to_string(config_.max_depth) +
         ", max_args=" + std::to_string(config_.max_args) + ")";
}

}  // namespace loom::datasets
