// cases_delta_lstm.cpp: op-table cases for the fused Delta LSTM recurrence, the
// fused kernels against the same recurrence written step by step with engine
// ops (forward and gradients), the state hand-over used by decoding and by
// carrying states across segments, what the backward keeps, and error messages.
#include <algorithm>
#include <cmath>
#include <random>

#include "autodiff/node.h"
#include "engine/kernels/delta_lstm.h"
#include "engine/ops.h"
#include "tests/fused_check.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;
using Matrix = std::vector<std::vector<double>>;

// ---- reference: plain double loops over the definition ---------------------------

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// The optional initial states (null: zeros) and where to put the final ones.
struct RefStates {
  const Ref *R = nullptr, *h = nullptr, *c = nullptr;
};
struct RefFinal {
  Ref R, h, c;
};

// z, rk, rv [L, B, H, 3, D], gamma [L, B, H, 3, 1]; initial R [B, H, 3, D, D],
// h and c [B, H, D]. Returns h [L, B, H, D]; the final states in *last.
Ref delta_lstm_ref(const Ref& z, const Ref& rk, const Ref& rv, const Ref& gamma, const RefStates& init,
                   RefFinal* last = nullptr) {
  const int64_t L = z.shape[0], B = z.shape[1], H = z.shape[2], D = z.shape[4];
  Ref out({L, B, H, D});
  if (last) *last = {Ref({B, H, 3, D, D}), Ref({B, H, D}), Ref({B, H, D})};
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      std::vector<Matrix> R(3, Matrix(D, std::vector<double>(D, 0.0)));
      std::vector<double> hp(D, 0.0), cp(D, 0.0);
      for (int64_t g = 0; g < 3; ++g)
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = 0; j < D; ++j)
            if (init.R) R[g][i][j] = init.R->at({b, h, g, i, j});
      for (int64_t j = 0; j < D; ++j) {
        if (init.h) hp[j] = init.h->at({b, h, j});
        if (init.c) cp[j] = init.c->at({b, h, j});
      }
      for (int64_t t = 0; t < L; ++t) {
        // s = softmax(h_{t-1}), written the plain way (no max subtraction).
        std::vector<double> s(D);
        double total = 0.0;
        for (int64_t j = 0; j < D; ++j) total += std::exp(hp[j]);
        for (int64_t j = 0; j < D; ++j) s[j] = std::exp(hp[j]) / total;
        std::vector<std::vector<double>> a(3, std::vector<double>(D));
        for (int64_t g = 0; g < 3; ++g) {
          // The delta rule on R_g: every row reads R_{t-1} before any is written.
          std::vector<double> vbar(D, 0.0);
          for (int64_t i = 0; i < D; ++i)
            for (int64_t j = 0; j < D; ++j) vbar[i] += R[g][i][j] * rk.at({t, b, h, g, j});
          const double gam = gamma.at({t, b, h, g, 0});
          for (int64_t i = 0; i < D; ++i)
            for (int64_t j = 0; j < D; ++j)
              R[g][i][j] += gam * (rv.at({t, b, h, g, i}) - vbar[i]) * rk.at({t, b, h, g, j});
          for (int64_t i = 0; i < D; ++i) {
            double r = 0.0;
            for (int64_t j = 0; j < D; ++j) r += R[g][i][j] * s[j];
            a[g][i] = z.at({t, b, h, g, i}) + r;
          }
        }
        for (int64_t i = 0; i < D; ++i) {
          const double in_gate = sigmoid_ref(a[0][i]), update = a[1][i], out_gate = sigmoid_ref(a[2][i]);
          cp[i] = in_gate * update + (1.0 - in_gate) * cp[i];
          hp[i] = out_gate * cp[i];
          out.at({t, b, h, i}) = hp[i];
        }
      }
      if (last) {
        for (int64_t g = 0; g < 3; ++g)
          for (int64_t i = 0; i < D; ++i)
            for (int64_t j = 0; j < D; ++j) last->R.at({b, h, g, i, j}) = R[g][i][j];
        for (int64_t j = 0; j < D; ++j) {
          last->h.at({b, h, j}) = hp[j];
          last->c.at({b, h, j}) = cp[j];
        }
      }
    }
  }
  return out;
}

// Which initial states a case passes.
struct Initial {
  bool R = false, h = false, c = false;
  int count() const { return int(R) + int(h) + int(c); }
  std::string name() const {
    if (!count()) return "";
    std::string n = ", initial";
    if (R) n += " R";
    if (h) n += " h";
    if (c) n += " c";
    return n;
  }
};

// Adds one case. Inputs: z, rk, rv, gamma, then the initial states it passes
// (constants: they get no gradient).
// Keys in [0, key_high]. With final_states the case's result is the output and
// the three final states, flattened into one (not gradient-checked: the final
// states carry no gradient).
void add_case(std::vector<OpCase>& cases, const std::string& variant, Initial initial, int64_t L, int64_t B,
              int64_t H, int64_t D, bool strided = false, bool transposed = false, double key_high = 0.6,
              bool final_states = false) {
  auto spec = [&](Shape s, double lo, double hi) {
    InputSpec in(std::move(s));
    in.range(lo, hi);
    if (strided) in.strided();
    if (transposed) in.transposed();
    return in;
  };
  // Keys in [0, 0.6] (like softmax outputs, not normalised) keep gamma·|rk|² below 1:
  // R stays of order 1. Wider heads take keys in [0, √(3/D)] for the same reason.
  std::vector<InputSpec> inputs = {spec({L, B, H, 3, D}, -1.5, 1.5), spec({L, B, H, 3, D}, 0.0, key_high),
                                   spec({L, B, H, 3, D}, -1, 1), spec({L, B, H, 3, 1}, 0.05, 0.95)};
  if (initial.R) inputs.push_back(spec({B, H, 3, D, D}, -1, 1).constant());
  if (initial.h) inputs.push_back(spec({B, H, D}, -2, 2).constant());
  if (initial.c) inputs.push_back(spec({B, H, D}, -1, 1).constant());
  // Positions of the states among the inputs (0: not given).
  const size_t iR = initial.R ? 4 : 0, ih = initial.h ? 4 + initial.R : 0, ic = initial.c ? 4 + initial.R + initial.h : 0;
  const std::string name = "delta_lstm" + initial.name() + ", " + variant +
                           (final_states ? ", output and final states" : "");
  cases.push_back({name, std::move(inputs),
                   [iR, ih, ic, final_states](const Xs& x) {
                     auto state = [&](size_t i) { return i ? x[i] : Tensor(); };
                     if (!final_states) return delta_lstm(x[0], x[1], x[2], x[3], state(iR), state(ih), state(ic));
                     Tensor R, h, cell;
                     const Tensor y =
                         delta_lstm(x[0], x[1], x[2], x[3], state(iR), state(ih), state(ic), &R, &h, &cell);
                     return flat_concat({y, R, h, cell});
                   },
                   [iR, ih, ic, final_states](const Rs& r) {
                     auto state = [&](size_t i) { return i ? &r[i] : nullptr; };
                     RefFinal last;
                     const Ref y = delta_lstm_ref(r[0], r[1], r[2], r[3], {state(iR), state(ih), state(ic)}, &last);
                     return final_states ? flat_concat({y, last.R, last.h, last.c}) : y;
                   },
                   /*gradcheck=*/!final_states});
}

}  // namespace

static CaseRegistrar delta_lstm_cases([](std::vector<OpCase>& c) {
  const Initial none{}, all{true, true, true};
  for (Initial initial : {none, all}) {
    add_case(c, "[5,2,3,3,4]", initial, 5, 2, 3, 4);
    add_case(c, "L=1 [1,2,2,3,3]", initial, 1, 2, 2, 3);
  }
  add_case(c, "[4,1,2,3,3]", {false, true, true}, 4, 1, 2, 3);  // a carried h and c, fresh R
  add_case(c, "[4,1,2,3,3]", {true, false, false}, 4, 1, 2, 3);  // a carried R only
  add_case(c, "strided [4,2,2,3,5]", all, 4, 2, 2, 5, /*strided=*/true);
  add_case(c, "transposed views [3,2,2,3,4]", none, 3, 2, 2, 4, false, /*transposed=*/true);
  add_case(c, "D 1 [6,1,1,3,1]", all, 6, 1, 1, 1);
  add_case(c, "odd sizes [3,1,2,3,11]", all, 3, 1, 2, 11);
  // Heads wider than a warp with a tail (model-sized D 64 fits a block in float32 only: tests/test_cuda.cpp).
  add_case(c, "D 33 [3,1,1,3,33]", all, 3, 1, 1, 33, false, false, std::sqrt(3.0 / 33));
  for (Initial initial : {none, all})
    add_case(c, "[6,2,2,3,10]", initial, 6, 2, 2, 10, false, false, 0.5, /*final_states=*/true);
});

// ---- the fused op against the recurrence written with engine ops, step by step ----------

namespace {

// Per step: softmax of the previous h, per gate a matmul to read R rk, sub/mul for
// the correction, a matmul (outer product) and add to write, a matmul to read R s;
// then sigmoid/mul/add for the cell. z, rk, rv [L, B, H, 3, D], gamma [L, B, H, 3, 1].
Tensor delta_lstm_composed(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma,
                           const Tensor& R0, const Tensor& h0, const Tensor& c0) {
  const int64_t L = z.size(0), B = z.size(1), H = z.size(2), D = z.size(4);
  Tensor R = R0.defined() ? R0 : Tensor::zeros({B, H, 3, D, D}, z.dtype());  // the three gates at once
  Tensor h = h0.defined() ? h0 : Tensor::zeros({B, H, D}, z.dtype());
  Tensor c = c0.defined() ? c0 : Tensor::zeros({B, H, D}, z.dtype());
  auto step = [](const Tensor& x, int64_t t) { return squeeze(narrow(x, 0, t, 1), 0); };
  auto gate = [](const Tensor& x, int64_t g) { return squeeze(narrow(x, 2, g, 1), 2); };
  std::vector<Tensor> hs;
  for (int64_t t = 0; t < L; ++t) {
    const Tensor k_col = unsqueeze(step(rk, t), -1);  // [B, H, 3, D, 1]
    const Tensor k_row = unsqueeze(step(rk, t), -2);  // [B, H, 3, 1, D]
    const Tensor v_col = unsqueeze(step(rv, t), -1);
    const Tensor vbar = matmul(R, k_col);
    R = R + matmul(unsqueeze(step(gamma, t), -1) * (v_col - vbar), k_row);
    const Tensor s = unsqueeze(unsqueeze(softmax(h, -1), 2), -1);  // [B, H, 1, D, 1]
    const Tensor a = step(z, t) + squeeze(matmul(R, s), -1);       // [B, H, 3, D]
    const Tensor i = sigmoid(gate(a, 0)), u = gate(a, 1), o = sigmoid(gate(a, 2));
    c = i * u + (1.0 - i) * c;
    h = o * c;
    hs.push_back(h);
  }
  return stack(hs, 0);
}

struct Inputs {
  Tensor z, rk, rv, gamma, R0, h0, c0;
};

// Keys as the model makes them: softmax of random logits over D.
Inputs make_inputs(int64_t L, int64_t B, int64_t H, int64_t D, bool initial, uint64_t seed) {
  Inputs in;
  in.z = random_f64({L, B, H, 3, D}, seed, -2.0, 2.0);
  in.rk = softmax(random_f64({L, B, H, 3, D}, seed + 1, -2.0, 2.0), -1);
  in.rv = random_f64({L, B, H, 3, D}, seed + 2, -1.0, 1.0);
  in.gamma = random_f64({L, B, H, 3, 1}, seed + 3, 0.0, 1.0);
  if (initial) {
    in.R0 = random_f64({B, H, 3, D, D}, seed + 4, -0.5, 0.5);
    in.h0 = random_f64({B, H, D}, seed + 5, -1.0, 1.0);
    in.c0 = random_f64({B, H, D}, seed + 6, -1.0, 1.0);
  }
  return in;
}

using LstmFn = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const Tensor&, const Tensor&)>;

// Output and gradients of z, rk, rv, gamma through `f`, all inputs in `dtype`.
Evaluated run(const Inputs& in, DType dtype, const LstmFn& f) {
  auto as = [&](const Tensor& t) { return t.defined() ? t.to(dtype) : Tensor(); };
  const Tensor R0 = as(in.R0), h0 = as(in.h0), c0 = as(in.c0);
  return evaluate([&](const Xs& x) { return cast(f(x[0], x[1], x[2], x[3], R0, h0, c0), DType::f64); },
                  {as(in.z), as(in.rk), as(in.rv), as(in.gamma)});
}

Tensor fused(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma, const Tensor& R0,
             const Tensor& h0, const Tensor& c0) {
  return delta_lstm(z, rk, rv, gamma, R0, h0, c0);
}

}  // namespace

TEST_CASE("delta_lstm: fused kernels match the step-by-step composition in float64") {
  struct Setup {
    const char* name;
    int64_t L, B, H, D;
    bool initial;
  };
  // The larger setups spread sequences over threads.
  const Setup setups[] = {
      {"zero states", 12, 3, 4, 8, false},
      {"initial states", 12, 3, 4, 8, true},
      {"model-sized heads", 16, 2, 4, 64, true},
      {"L=1", 1, 2, 2, 5, true},
      {"odd sizes", 9, 2, 3, 13, true},
  };
  for (const Setup& s : setups) {
    INFO("setup: ", std::string(s.name));
    const Inputs in = make_inputs(s.L, s.B, s.H, s.D, s.initial, 21);
    check_same(run(in, DType::f64, fused), run(in, DType::f64, delta_lstm_composed), 1e-10);
  }
}

TEST_CASE("delta_lstm: rebuilding R backwards over 256 steps does not drift in float32") {
  // Fused float32 against the float64 composition: the backward's R_{t-1} = R_t - δ rkᵀ
  // rounds at every step, and this bounds how far 256 of those steps may wander.
  const Inputs in = make_inputs(256, 2, 2, 32, true, 5);
  check_same(run(in, DType::f32, fused), run(in, DType::f64, delta_lstm_composed), 1e-4);
}

TEST_CASE("delta_lstm: the final states hand the recurrence over between chunks") {
  for (bool initial : {false, true}) {
    INFO((initial ? "initial states" : "zero states"));
    const Inputs in = make_inputs(9, 2, 3, 6, initial, 8);
    const Ref R0 = initial ? Ref::from(in.R0) : Ref(), h0 = initial ? Ref::from(in.h0) : Ref(),
              c0 = initial ? Ref::from(in.c0) : Ref();
    RefFinal ref_last;
    const Ref y_ref = delta_lstm_ref(Ref::from(in.z), Ref::from(in.rk), Ref::from(in.rv), Ref::from(in.gamma),
                                     initial ? RefStates{&R0, &h0, &c0} : RefStates{}, &ref_last);
    Tensor R, h, c;
    const Tensor y = delta_lstm(in.z, in.rk, in.rv, in.gamma, in.R0, in.h0, in.c0, &R, &h, &c);
    CHECK(relative_difference(Ref::from(y).v, y_ref.v) < 1e-12);
    CHECK(relative_difference(Ref::from(R).v, ref_last.R.v) < 1e-12);
    CHECK(relative_difference(Ref::from(h).v, ref_last.h.v) < 1e-12);
    CHECK(relative_difference(Ref::from(c).v, ref_last.c.v) < 1e-12);
    // 4 steps, then 5 from where they ended: the same outputs and the same end states.
    auto part = [&](const Tensor& t, int64_t start, int64_t len) { return narrow(t, 0, start, len); };
    Tensor R1, h1, c1, R2, h2, c2;
    const Tensor y1 = delta_lstm(part(in.z, 0, 4), part(in.rk, 0, 4), part(in.rv, 0, 4), part(in.gamma, 0, 4), in.R0,
                                 in.h0, in.c0, &R1, &h1, &c1);
    const Tensor y2 = delta_lstm(part(in.z, 4, 5), part(in.rk, 4, 5), part(in.rv, 4, 5), part(in.gamma, 4, 5), R1, h1,
                                 c1, &R2, &h2, &c2);
    CHECK(relative_difference(Ref::from(concat({y1, y2}, 0)).v, y_ref.v) < 1e-12);
    CHECK(relative_difference(Ref::from(R2).v, ref_last.R.v) < 1e-12);
    CHECK(relative_difference(Ref::from(h2).v, ref_last.h.v) < 1e-12);
    CHECK(relative_difference(Ref::from(c2).v, ref_last.c.v) < 1e-12);
  }
}

TEST_CASE("delta_lstm: an empty sequence hands the initial states through") {
  const Inputs in = make_inputs(3, 2, 2, 4, true, 12);
  auto none = [](const Tensor& t) { return narrow(t, 0, 0, 0); };
  Tensor R, h, c;
  const Tensor y = delta_lstm(none(in.z), none(in.rk), none(in.rv), none(in.gamma), in.R0, in.h0, in.c0, &R, &h, &c);
  CHECK(y.shape() == (Shape{0, 2, 2, 4}));
  CHECK(Ref::from(R).v == Ref::from(in.R0).v);
  CHECK(Ref::from(h).v == Ref::from(in.h0).v);
  CHECK(Ref::from(c).v == Ref::from(in.c0).v);
  // And its backward: every gradient is empty.
  Tensor z = none(in.z).detach().requires_grad_();
  sum(delta_lstm(z, none(in.rk), none(in.rv), none(in.gamma))).backward();
  CHECK(z.grad().shape() == (Shape{0, 2, 2, 3, 4}));
}

TEST_CASE("delta_lstm: the backward keeps vbar, c_t and R_L, never an R per step; no gradient to the states") {
  const int64_t L = 7, B = 2, H = 3, D = 5;
  Inputs in = make_inputs(L, B, H, D, true, 3);
  for (Tensor* t : {&in.z, &in.rk, &in.rv, &in.gamma, &in.R0, &in.h0, &in.c0}) t->requires_grad_();
  const Tensor y = delta_lstm(in.z, in.rk, in.rv, in.gamma, in.R0, in.h0, in.c0);
  const auto& node = y.grad_fn();
  REQUIRE(node);
  REQUIRE(node->saved.size() == 5);
  CHECK(node->saved[0].shape() == (Shape{L, B, H, 3, D}));  // vbar
  CHECK(node->saved[1].shape() == (Shape{L, B, H, D}));     // c_t
  CHECK(node->saved[2].shape() == (Shape{B, H, 3, D, D}));  // R_L
  CHECK(node->saved[3].shape() == (Shape{B, H, D}));        // h_0
  CHECK(node->saved[4].shape() == (Shape{B, H, D}));        // c_0
  sum(y).backward();
  for (Tensor* t : {&in.z, &in.rk, &in.rv, &in.gamma}) CHECK(t->grad().defined());
  for (Tensor* t : {&in.R0, &in.h0, &in.c0}) CHECK(!t->grad().defined());
  // Without initial states nothing is kept for them; without grad nothing at all.
  const Tensor y_zero = delta_lstm(in.z, in.rk, in.rv, in.gamma);
  REQUIRE(y_zero.grad_fn()->saved.size() == 5);
  CHECK(!y_zero.grad_fn()->saved[3].defined());
  CHECK(!y_zero.grad_fn()->saved[4].defined());
  const Tensor y_plain = delta_lstm(in.z.detach(), in.rk.detach(), in.rv.detach(), in.gamma.detach());
  CHECK(!y_plain.grad_fn());
}

TEST_CASE("delta_lstm: errors name the op and the shapes") {
  const Tensor z = Tensor::zeros({5, 2, 3, 3, 4}), gamma = Tensor::zeros({5, 2, 3, 3, 1});
  check_mentions(error_of([&] { delta_lstm(z, Tensor::zeros({5, 2, 3, 3, 5}), z, gamma); }),
                 {"delta_lstm", "rk [5, 2, 3, 3, 5]", "z [5, 2, 3, 3, 4]"});
  check_mentions(error_of([&] { delta_lstm(z, z, Tensor::zeros({4, 2, 3, 3, 4}), gamma); }),
                 {"delta_lstm", "rv [4, 2, 3, 3, 4]", "z [5, 2, 3, 3, 4]"});
  check_mentions(error_of([&] { delta_lstm(z, z, z, Tensor::zeros({5, 2, 3, 3, 2})); }),
                 {"delta_lstm", "gamma [5, 2, 3, 3, 2]", "z [5, 2, 3, 3, 4]", "[5, 2, 3, 3, 1]"});
  check_mentions(error_of([&] { delta_lstm(Tensor::zeros({5, 2, 3, 2, 4}), z, z, gamma); }),
                 {"delta_lstm", "z [5, 2, 3, 2, 4]", "three gates"});
  check_mentions(error_of([&] { delta_lstm(z, z, z, gamma, Tensor::zeros({2, 3, 3, 4, 5})); }),
                 {"delta_lstm", "initial_R [2, 3, 3, 4, 5]", "z [5, 2, 3, 3, 4]", "[2, 3, 3, 4, 4]"});
  check_mentions(error_of([&] { delta_lstm(z, z, z, gamma, Tensor(), Tensor::zeros({2, 3, 5})); }),
                 {"delta_lstm", "initial_h [2, 3, 5]", "[2, 3, 4]"});
  check_mentions(error_of([&] { delta_lstm(z, z, z, gamma, Tensor(), Tensor(), Tensor::zeros({2, 4})); }),
                 {"delta_lstm", "initial_c", "[B, H, D]", "[2, 4]"});
  check_mentions(error_of([&] { delta_lstm(Tensor::zeros({5, 2, 4}), z, z, gamma); }),
                 {"delta_lstm", "z", "[L, B, H, 3, D]", "[5, 2, 4]"});
  check_mentions(error_of([&] { delta_lstm(z, z, z.to(DType::f64), gamma); }), {"delta_lstm", "rv", "float64", "float32"});
  check_mentions(error_of([&] { delta_lstm(z.to(DType::i64), z, z, gamma); }), {"delta_lstm", "int64"});
  check_mentions(error_of([&] { delta_lstm(z, Tensor(), z, gamma); }), {"delta_lstm", "rk", "undefined"});
  check_mentions(error_of([&] { delta_lstm(z, z, z, Tensor()); }), {"delta_lstm", "gamma", "undefined"});
}

TEST_CASE("delta_lstm: the CUDA kernels' shared-memory layouts: no overlap, the total covers every region") {
  for (int64_t D : {0, 1, 5, 32, 64, 95}) {
    CAPTURE(D);
    const kernels::DeltaLstmForwardShared f(D);
    test::check_layout({f.R, f.h, f.c, f.s, f.z, f.rk, f.rv, f.a}, f.total);
    const kernels::DeltaLstmBackwardShared b(D);
    test::check_layout({b.R, b.G, b.h_prev, b.c_prev, b.c, b.g_out, b.s, b.dh_next, b.dc_next, b.z, b.rk, b.rv, b.vbar,
                        b.a, b.delta, b.dvbar, b.dgamma, b.ds},
                       b.total);
  }
  // cuda/README.md's size table: at D = 64, 3 D² + 15 D and 6 D² + 34 D values.
  CHECK(kernels::DeltaLstmForwardShared(64).total == 13248);
  CHECK(kernels::DeltaLstmBackwardShared(64).total == 26752);
}

}  // namespace loom::test
