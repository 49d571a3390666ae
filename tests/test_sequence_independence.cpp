// test_sequence_independence.cpp: each sequence of a fused recurrence gets the
// bits it would get alone.
//
// The CPU kernels walk a few sequences of a thread side by side
// (sequences_side_by_side in engine/kernels/row_math.h), and the threads split
// the sequences in ways that depend on their number. Neither may change a
// sequence's arithmetic: its output and its inputs' gradients must be those of
// the same op run on that sequence alone (B = H = 1), bit for bit (memcmp), on
// 1, 2 and 3 threads, with gradients and without (the forward then keeps its
// states in thread scratch instead of the final-state slot). A buffer shared by mistake between the sequences of a group, or a
// group that read its neighbour's rows, would show here.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "autodiff/grad_mode.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "tests/fused_check.h"

namespace loom::test {

namespace {

// Where an operand's batch and head axes are: a per-step input [L, B, H, ...]
// (gets a gradient), an initial state [B, H, ...] (no gradient), or a
// parameter shared by the batch [H, ...] (its gradient sums over sequences, so
// it is not compared).
enum class Axes { step, state, head };

struct Operand {
  Tensor value;  // float32
  Axes axes;
};

Tensor sequence_of(const Tensor& t, Axes axes, int64_t b, int64_t h) {
  switch (axes) {
    case Axes::step: return contiguous(narrow(narrow(t, 1, b, 1), 2, h, 1));
    case Axes::state: return contiguous(narrow(narrow(t, 0, b, 1), 1, h, 1));
    case Axes::head: return contiguous(narrow(t, 0, h, 1));
  }
  return Tensor();
}

struct Run {
  Tensor out;
  std::vector<Tensor> grads;  // of the per-step operands, in order
};

using Op = std::function<Tensor(const std::vector<Tensor>&)>;

// op's output and the gradients of sum(out · weight).
Run run(const Op& op, const std::vector<Operand>& operands, const Tensor& weight) {
  std::vector<Tensor> leaves;
  for (const Operand& o : operands) {
    Tensor leaf = clone(o.value);
    if (o.axes != Axes::state) leaf.requires_grad_();
    leaves.push_back(leaf);
  }
  const Tensor out = op(leaves);
  sum(out * weight).backward();
  Run r{out.detach(), {}};
  for (size_t i = 0; i < operands.size(); ++i)
    if (operands[i].axes == Axes::step) r.grads.push_back(leaves[i].grad());
  return r;
}


// Runs op over all B·H sequences on 1, 2 and 3 threads, then over each sequence
// alone, and compares the bits.
void check_sequences_independent(const Op& op, const std::vector<Operand>& operands, const Shape& out_shape) {
  const int threads = num_threads();
  const Tensor weight = random_f64(out_shape, 99, -1, 1).to(DType::f32);
  const int64_t B = out_shape[1], H = out_shape[2];
  for (const int n : {1, 2, 3}) {
    INFO("threads: ", n);
    set_num_threads(n);
    const Run all = run(op, operands, weight);
    Tensor all_no_grad;
    {
      NoGradGuard no_grad;
      std::vector<Tensor> values;
      for (const Operand& o : operands) values.push_back(o.value);
      all_no_grad = op(values);
    }
    CHECK(same_bits(all_no_grad, all.out));
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        INFO("sequence b = ", b, ", h = ", h);
        std::vector<Operand> one;
        for (const Operand& o : operands) one.push_back({sequence_of(o.value, o.axes, b, h), o.axes});
        const Run alone = run(op, one, sequence_of(weight, Axes::step, b, h));
        CHECK(same_bits(alone.out, sequence_of(all.out, Axes::step, b, h)));
        for (size_t i = 0; i < all.grads.size(); ++i) {
          INFO("per-step operand ", i);
          CHECK(same_bits(alone.grads[i], sequence_of(all.grads[i], Axes::step, b, h)));
        }
      }
    }
  }
  set_num_threads(threads);
}

Tensor uniform(const Shape& shape, uint64_t seed, double lo, double hi) {
  return random_f64(shape, seed, lo, hi).to(DType::f32);
}

// B·H = 6 sequences: on one thread, groups of 4 and 2 where 4 states fit the
// group's budget (8 KB: heads of 16 forward and backward), of 2 where only 2 do;
// other splits on 2 and 3 threads. 24 steps are enough work to start threads.
constexpr int64_t kL = 24, kB = 3, kH = 2;

}  // namespace

TEST_CASE("delta_rule: each sequence gets the bits it gets alone, on 1, 2 and 3 threads") {
  for (const std::pair<int64_t, int64_t>& head : {std::pair<int64_t, int64_t>{16, 16}, {32, 16}, {19, 11}}) {
    const int64_t Dk = head.first, Dv = head.second;
    for (const bool delta : {true, false}) {
      INFO("Dk = ", Dk, ", Dv = ", Dv, delta ? ", delta rule" : ", sum rule");
      const double k_hi = 1.0 / std::sqrt(static_cast<double>(Dk));
      std::vector<Operand> operands = {{uniform({kL, kB, kH, Dk}, 1, 0, k_hi), Axes::step},
                                       {uniform({kL, kB, kH, Dk}, 2, 0, k_hi), Axes::step},
                                       {uniform({kL, kB, kH, Dv}, 3, -1, 1), Axes::step},
                                       {uniform({kB, kH, Dv, Dk}, 4, -0.5, 0.5), Axes::state}};
      if (delta) operands.insert(operands.begin() + 3, {uniform({kL, kB, kH, 1}, 5, 0.05, 0.95), Axes::step});
      const Op op = [delta](const std::vector<Tensor>& x) {
        return delta ? delta_rule(x[0], x[1], x[2], x[3], x[4]) : delta_rule(x[0], x[1], x[2], Tensor(), x[3]);
      };
      check_sequences_independent(op, operands, {kL, kB, kH, Dv});
    }
  }
}

TEST_CASE("delta_rnn: each sequence gets the bits it gets alone, on 1, 2 and 3 threads") {
  for (const int64_t D : {16, 19}) {
    INFO("D = ", D);
    const double k_hi = 1.0 / std::sqrt(static_cast<double>(D));
    const std::vector<Operand> operands = {{uniform({kL, kB, kH, D}, 1, -1, 1), Axes::step},
                                           {uniform({kL, kB, kH, D}, 2, 0, k_hi), Axes::step},
                                           {uniform({kL, kB, kH, D}, 3, -1, 1), Axes::step},
                                           {uniform({kL, kB, kH, 1}, 4, 0.05, 0.95), Axes::step},
                                           {uniform({kB, kH, D, D}, 5, -1, 1), Axes::state},
                                           {uniform({kB, kH, D}, 6, -2, 2), Axes::state}};
    const Op op = [](const std::vector<Tensor>& x) { return delta_rnn(x[0], x[1], x[2], x[3], x[4], x[5]); };
    check_sequences_independent(op, operands, {kL, kB, kH, D});
  }
}

TEST_CASE("delta_lstm: each sequence gets the bits it gets alone, on 1, 2 and 3 threads") {
  // Three gates' states per sequence: at D = 16 the forward walks 2 side by
  // side and the backward 1; at D = 8, 4 each way.
  for (const int64_t D : {16, 8}) {
    INFO("D = ", D);
    const std::vector<Operand> operands = {{uniform({kL, kB, kH, 3, D}, 1, -1.5, 1.5), Axes::step},
                                           {uniform({kL, kB, kH, 3, D}, 2, 0, 0.6), Axes::step},
                                           {uniform({kL, kB, kH, 3, D}, 3, -1, 1), Axes::step},
                                           {uniform({kL, kB, kH, 3, 1}, 4, 0.05, 0.95), Axes::step},
                                           {uniform({kB, kH, 3, D, D}, 5, -1, 1), Axes::state},
                                           {uniform({kB, kH, D}, 6, -2, 2), Axes::state},
                                           {uniform({kB, kH, D}, 7, -1, 1), Axes::state}};
    const Op op = [](const std::vector<Tensor>& x) { return delta_lstm(x[0], x[1], x[2], x[3], x[4], x[5], x[6]); };
    check_sequences_independent(op, operands, {kL, kB, kH, D});
  }
}

TEST_CASE("recurrent_delta_net: each sequence gets the bits it gets alone, on 1, 2 and 3 threads") {
  const int64_t D = 16;
  const double r = 1.0 / std::sqrt(static_cast<double>(D));
  const std::vector<Operand> operands = {{uniform({kL, kB, kH, D}, 1, -1, 1), Axes::step},
                                         {uniform({kL, kB, kH, D}, 2, -1, 1), Axes::step},
                                         {uniform({kL, kB, kH, D}, 3, -1, 1), Axes::step},
                                         {uniform({kL, kB, kH, 1}, 4, -1, 1), Axes::step},
                                         {uniform({kH, D, D}, 5, -r, r), Axes::head},
                                         {uniform({kH, D, D}, 6, -r, r), Axes::head},
                                         {uniform({kH, D, D}, 7, -r, r), Axes::head},
                                         {uniform({kH, D}, 8, -r, r), Axes::head},
                                         {uniform({kB, kH, D, D}, 9, -0.5, 0.5), Axes::state},
                                         {uniform({kB, kH, D}, 10, -1, 1), Axes::state}};
  const Op op = [](const std::vector<Tensor>& x) {
    return recurrent_delta_net(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9]);
  };
  check_sequences_independent(op, operands, {kL, kB, kH, D});
}

}  // namespace loom::test
