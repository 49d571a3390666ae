// cases_lstm.cpp: op-table cases for the fused LSTM recurrence against a naive
// double loop, the fused op against the per-step composition of engine ops that
// the LSTM layer used before it (tests/lstm_composed.h; forward and gradients), thread-count
// independence, what the backward keeps, and error messages.
#include <cmath>

#include "autodiff/node.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "tests/fused_check.h"
#include "tests/lstm_composed.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// ---- reference: nn.LSTM's equations, one scalar at a time ----------------------------

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// gates_x [L, B, 4H] (gates i, f, g, o of unit j in columns j, H + j, 2H + j, 3H + j),
// weight_hh [4H, H] -> h [L, B, H], with h_0 = c_0 = 0.
Ref lstm_ref(const Ref& gates_x, const Ref& w) {
  const int64_t L = gates_x.shape[0], B = gates_x.shape[1], H = w.shape[1];
  Ref out({L, B, H});
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> h(H, 0.0), c(H, 0.0);
    for (int64_t t = 0; t < L; ++t) {
      std::vector<double> a(4 * H);
      for (int64_t r = 0; r < 4 * H; ++r) {
        double s = gates_x.at({t, b, r});
        for (int64_t k = 0; k < H; ++k) s += w.at({r, k}) * h[k];
        a[r] = s;
      }
      for (int64_t j = 0; j < H; ++j) {
        const double i = sigmoid_ref(a[j]), f = sigmoid_ref(a[H + j]), g = std::tanh(a[2 * H + j]),
                     o = sigmoid_ref(a[3 * H + j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * std::tanh(c[j]);
        out.at({t, b, j}) = h[j];
      }
    }
  }
  return out;
}

void add_case(std::vector<OpCase>& cases, const std::string& variant, int64_t L, int64_t B, int64_t H,
              Layout layout = Layout::contiguous) {
  InputSpec gates_x({L, B, 4 * H}), w({4 * H, H});
  // Pre-activations of order 1 and a recurrent weight of nn.LSTM's init scale or more.
  gates_x.range(-2, 2);
  w.range(-0.8, 0.8);
  for (InputSpec* in : {&gates_x, &w}) in->layout = layout;
  cases.push_back({"lstm " + variant, {gates_x, w}, [](const Xs& x) { return lstm(x[0], x[1]); },
                   [](const Rs& r) { return lstm_ref(r[0], r[1]); }});
}

}  // namespace

static CaseRegistrar lstm_cases([](std::vector<OpCase>& c) {
  add_case(c, "[5,2,3]", 5, 2, 3);
  add_case(c, "L=1 [1,3,2]", 1, 3, 2);
  add_case(c, "H=1 [6,2,1]", 6, 2, 1);
  add_case(c, "transposed views [4,3,3]", 4, 3, 3, Layout::transposed);
  add_case(c, "strided [4,2,3]", 4, 2, 3, Layout::strided);
  // 37 hidden units: two of the CPU kernel's tiles, the second one partial.
  add_case(c, "two tiles [3,2,37]", 3, 2, 37);
  add_case(c, "empty L=0 [0,2,3]", 0, 2, 3);
});

// ---- the fused op against the per-step composition of engine ops -----------------------

namespace {

// gates_x as x W_ihᵀ + biases would give it, and weight_hh at nn.LSTM's init scale 1/√H.
Xs make_inputs(int64_t L, int64_t B, int64_t H, uint64_t seed) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(H));
  return {random_f64({L, B, 4 * H}, seed, -1.5, 1.5), random_f64({4 * H, H}, seed + 1, -bound, bound)};
}

using Fn = Tensor (*)(const Tensor&, const Tensor&);

Evaluated run(const Xs& in, DType dtype, Fn f) {
  return evaluate([&](const Xs& x) { return cast(f(x[0], x[1]), DType::f64); }, {in[0].to(dtype), in[1].to(dtype)});
}

Tensor fused(const Tensor& gates_x, const Tensor& weight_hh) { return lstm(gates_x, weight_hh); }

}  // namespace

TEST_CASE("lstm: the fused kernels match the per-step composition in float64") {
  struct Setup {
    const char* name;
    int64_t L, B, H;
  };
  // The larger setups spread the CPU kernel's tiles over threads.
  const Setup setups[] = {
      {"small", 12, 3, 8},         {"L=2", 2, 4, 5},          {"H=1", 9, 2, 1},
      {"three tiles", 10, 5, 70}, {"batch 64", 6, 64, 64},
  };
  for (const Setup& s : setups) {
    INFO("setup: ", std::string(s.name));
    const Xs in = make_inputs(s.L, s.B, s.H, 31);
    check_same(run(in, DType::f64, fused), run(in, DType::f64, lstm_composed), 1e-12);
  }
}

TEST_CASE("lstm: float32 stays within float32 rounding of the float64 composition over 300 steps") {
  const Xs in = make_inputs(300, 4, 32, 7);
  check_same(run(in, DType::f32, fused), run(in, DType::f64, lstm_composed), 1e-4);
}

TEST_CASE("lstm: forward and gradients have the same bits for 1 and 2 threads") {
  const Xs in = make_inputs(7, 40, 80, 3);
  const int threads = num_threads();
  auto at = [&](int n) {
    set_num_threads(n);
    return run(in, DType::f32, fused);
  };
  const Evaluated one = at(1), two = at(2);
  set_num_threads(threads);
  CHECK(one.out == two.out);
  REQUIRE(one.grads.size() == 2);
  CHECK(one.grads[0] == two.grads[0]);
  CHECK(one.grads[1] == two.grads[1]);
}

TEST_CASE("lstm: the backward keeps the gates, the cell states and the output; gates_x is not kept") {
  const int64_t L = 5, B = 2, H = 3;
  Xs in = make_inputs(L, B, H, 4);
  for (Tensor& t : in) t.requires_grad_();
  const Tensor h = lstm(in[0], in[1]);
  const auto& node = h.grad_fn();
  REQUIRE(node);
  REQUIRE(node->saved.size() == 3);  // weight_hh, cell, gates
  CHECK(node->saved[1].shape() == (Shape{L, B, H}));
  CHECK(node->saved[2].shape() == (Shape{L, B, 4 * H}));
  CHECK(node->inputs.empty());
  CHECK(node->output.defined());
  sum(h).backward();
  CHECK(in[0].grad().defined());
  CHECK(in[1].grad().defined());
  // Only weight_hh asks: only it gets a gradient.
  const Tensor w = in[1].detach().requires_grad_();
  sum(lstm(in[0].detach(), w)).backward();
  CHECK(w.grad().defined());
  // Without grad nothing is recorded.
  CHECK(!lstm(in[0].detach(), in[1].detach()).grad_fn());
}

TEST_CASE("lstm: errors name the op, the operand and the shapes") {
  const Tensor gx = Tensor::zeros({5, 2, 12}), w = Tensor::zeros({12, 3});
  check_mentions(error_of([&] { lstm(gx, Tensor::zeros({8, 3})); }), {"lstm", "weight_hh [8, 3]", "[4H, H]", "[12, 3]"});
  check_mentions(error_of([&] { lstm(Tensor::zeros({5, 2, 10}), w); }),
                 {"lstm", "gates_x [5, 2, 10]", "weight_hh [12, 3]", "[5, 2, 12]"});
  check_mentions(error_of([&] { lstm(Tensor::zeros({5, 12}), w); }), {"lstm", "gates_x", "[L, B, 4H]", "[5, 12]"});
  check_mentions(error_of([&] { lstm(gx, Tensor::zeros({12, 3, 1})); }), {"lstm", "weight_hh", "[4H, H]", "[12, 3, 1]"});
  check_mentions(error_of([&] { lstm(gx, w.to(DType::f64)); }), {"lstm", "weight_hh", "float64", "float32"});
  check_mentions(error_of([&] { lstm(gx.to(DType::i64), w); }), {"lstm", "int64"});
  check_mentions(error_of([&] { lstm(Tensor(), w); }), {"lstm", "gates_x", "undefined"});
  check_mentions(error_of([&] { lstm(gx, Tensor()); }), {"lstm", "weight_hh", "undefined"});
}

}  // namespace loom::test
