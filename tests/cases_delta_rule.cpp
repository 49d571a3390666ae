// cases_delta_rule.cpp: op-table cases for the fused fast-weight recurrence, the
// fused kernels against the same recurrence written step by step with engine
// ops, the state hand-over used by decoding, and error messages.
#include <algorithm>
#include <cmath>
#include <random>

#include "autodiff/node.h"
#include "engine/device.h"
#include "engine/kernels/delta_rule.h"
#include "engine/ops.h"
#include "tests/fused_check.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// ---- reference: plain double loops over the definition ---------------------------

// q, k [L, B, H, Dk], v [L, B, H, Dv], beta [L, B, H, 1] (delta rule only),
// w0 [B, H, Dv, Dk] (or null: zeros). Returns y [L, B, H, Dv], and W_L in *last.
Ref delta_rule_ref(const Ref& q, const Ref& k, const Ref& v, const Ref* beta, const Ref* w0, Ref* last = nullptr) {
  const int64_t L = q.shape[0], B = q.shape[1], H = q.shape[2], Dk = q.shape[3], Dv = v.shape[3];
  Ref y({L, B, H, Dv});
  if (last) *last = Ref({B, H, Dv, Dk});
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      std::vector<std::vector<double>> W(Dv, std::vector<double>(Dk, 0.0));
      if (w0)
        for (int64_t i = 0; i < Dv; ++i)
          for (int64_t j = 0; j < Dk; ++j) W[i][j] = w0->at({b, h, i, j});
      for (int64_t t = 0; t < L; ++t) {
        for (int64_t i = 0; i < Dv; ++i) {
          double vbar = 0.0;
          for (int64_t j = 0; j < Dk; ++j) vbar += W[i][j] * k.at({t, b, h, j});
          const double vi = v.at({t, b, h, i});
          const double u = beta ? beta->at({t, b, h, 0}) * (vi - vbar) : vi;
          for (int64_t j = 0; j < Dk; ++j) W[i][j] += u * k.at({t, b, h, j});
        }
        for (int64_t i = 0; i < Dv; ++i) {
          double s = 0.0;
          for (int64_t j = 0; j < Dk; ++j) s += W[i][j] * q.at({t, b, h, j});
          y.at({t, b, h, i}) = s;
        }
      }
      if (last)
        for (int64_t i = 0; i < Dv; ++i)
          for (int64_t j = 0; j < Dk; ++j) last->at({b, h, i, j}) = W[i][j];
    }
  }
  return y;
}

// Adds one case. Inputs: q, k, v, then beta (delta rule), then initial_state (a
// constant: it gets no gradient).
// Keys in [-key_half, key_half]. With final_states the case's result is the
// output and the final state, flattened into one (not gradient-checked: the final
// state carries no gradient).
void add_case(std::vector<OpCase>& cases, const std::string& variant, bool delta, bool initial, int64_t L, int64_t B,
              int64_t H, int64_t Dk, int64_t Dv, bool strided = false, bool transposed = false,
              double key_half = 0.5, bool final_states = false) {
  auto spec = [&](Shape s, double lo, double hi) {
    InputSpec in(std::move(s));
    in.range(lo, hi);
    if (strided) in.strided();
    if (transposed) in.transposed();
    return in;
  };
  // Keys in [-0.5, 0.5] keep beta·|k|² near 1 or below (the delta rule contracts
  // W while it is below 2), so values stay of order 1 and float32 rounding small.
  // Wider heads take keys in [-1/√Dk, 1/√Dk] for the same reason.
  std::vector<InputSpec> inputs = {spec({L, B, H, Dk}, -1, 1), spec({L, B, H, Dk}, -key_half, key_half),
                                   spec({L, B, H, Dv}, -1, 1)};
  if (delta) inputs.push_back(spec({L, B, H, 1}, 0.05, 0.95));
  if (initial) inputs.push_back(spec({B, H, Dv, Dk}, -1, 1).constant());
  const std::string name = std::string("delta_rule ") + (delta ? "delta" : "sum") + " rule" +
                           (initial ? ", initial state" : "") + ", " + variant +
                           (final_states ? ", output and final state" : "");
  cases.push_back({name, std::move(inputs),
                   [delta, initial, final_states](const Xs& x) {
                     const Tensor beta = delta ? x[3] : Tensor();
                     const Tensor w0 = initial ? x[delta ? 4 : 3] : Tensor();
                     Tensor last;
                     const Tensor y = delta_rule(x[0], x[1], x[2], beta, w0, final_states ? &last : nullptr);
                     return final_states ? flat_concat({y, last}) : y;
                   },
                   [delta, initial, final_states](const Rs& r) {
                     const Ref* beta = delta ? &r[3] : nullptr;
                     const Ref* w0 = initial ? &r[delta ? 4 : 3] : nullptr;
                     Ref last;
                     const Ref y = delta_rule_ref(r[0], r[1], r[2], beta, w0, &last);
                     return final_states ? flat_concat({y, last}) : y;
                   },
                   /*gradcheck=*/!final_states});
}

}  // namespace

static CaseRegistrar delta_rule_cases([](std::vector<OpCase>& c) {
  for (bool delta : {true, false}) {
    for (bool initial : {false, true}) {
      add_case(c, "[5,2,3,4] Dv 3", delta, initial, 5, 2, 3, 4, 3);
      add_case(c, "L=1 [1,2,2,3] Dv 2", delta, initial, 1, 2, 2, 3, 2);
    }
    add_case(c, "strided [4,2,2,3] Dv 5", delta, true, 4, 2, 2, 3, 5, /*strided=*/true);
    add_case(c, "transposed views [3,2,4,4] Dv 4", delta, false, 3, 2, 4, 4, 4, false, /*transposed=*/true);
    add_case(c, "Dk 1, Dv 1 [6,1,1,1]", delta, false, 6, 1, 1, 1, 1);
    // Past the kernels' blocks of rows and vector lanes, with tails of both.
    add_case(c, "blocks and tails [3,1,2,19] Dv 11", delta, true, 3, 1, 2, 19, 11);
    // Heads wider than a warp with a tail, and model-sized (DPFP features of 32-wide heads).
    add_case(c, "Dk 33 Dv 13 [3,1,1,33]", delta, true, 3, 1, 1, 33, 13, false, false, 1 / std::sqrt(33.0));
    add_case(c, "Dk 128 Dv 64 [3,1,1,128]", delta, false, 3, 1, 1, 128, 64, false, false, 1 / std::sqrt(128.0));
    // Many steps of the step kernels (small heads), and of the CPU's chunks of 16
    // steps (heads of 64 × 64 and more): two whole chunks and a partial one.
    add_case(c, "37 steps [37,1,2,19] Dv 11", delta, true, 37, 1, 2, 19, 11, false, false, 1 / std::sqrt(19.0));
    add_case(c, "chunks [37,1,1,64] Dv 64", delta, true, 37, 1, 1, 64, 64, false, false, 1 / std::sqrt(64.0));
  }
  for (bool delta : {true, false})
    add_case(c, "[6,2,2,12] Dv 10", delta, true, 6, 2, 2, 12, 10, false, false, 0.5, /*final_states=*/true);
});

// ---- the fused op against the recurrence written with engine ops, step by step ----------

namespace {

// The recurrence as labml writes it: per step a matmul to read, sub/mul for the
// correction, a matmul (outer product) and add to write, a matmul to read out.
// q, k [L, B, H, Dk], v [L, B, H, Dv], beta [L, B, H, 1] or undefined (sum rule).
Tensor delta_rule_composed(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                           const Tensor& w0) {
  const int64_t L = q.size(0), B = q.size(1), H = q.size(2), Dk = q.size(3), Dv = v.size(3);
  Tensor W = w0.defined() ? w0 : Tensor::zeros({B, H, Dv, Dk}, q.dtype());
  auto step = [](const Tensor& x, int64_t t) { return squeeze(narrow(x, 0, t, 1), 0); };
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < L; ++t) {
    const Tensor k_col = unsqueeze(step(k, t), -1);  // [B, H, Dk, 1]
    const Tensor k_row = unsqueeze(step(k, t), -2);  // [B, H, 1, Dk]
    const Tensor v_col = unsqueeze(step(v, t), -1);  // [B, H, Dv, 1]
    Tensor u = v_col;
    if (beta.defined()) {
      const Tensor vbar = matmul(W, k_col);
      u = unsqueeze(step(beta, t), -1) * (v_col - vbar);
    }
    W = W + matmul(u, k_row);
    ys.push_back(squeeze(matmul(W, unsqueeze(step(q, t), -1)), -1));
  }
  return stack(ys, 0);
}

// Keys and queries shaped like the model's: non-negative, about a quarter of the
// entries non-zero (as DPFP's products of ReLUs), each vector summing to 1.
Tensor normalised_features(const Shape& shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int64_t D = shape.back();
  std::vector<double> x(shape_numel(shape));
  for (size_t row = 0; row < x.size() / D; ++row) {
    double s = 0.0;
    for (int64_t j = 0; j < D; ++j) {
      const double a = u(rng);
      x[row * D + j] = a < 0.75 ? 0.0 : u(rng);
      s += x[row * D + j];
    }
    for (int64_t j = 0; j < D; ++j) x[row * D + j] /= s + 1e-6;
  }
  return Tensor::from_vector(x, shape);
}

struct Inputs {
  Tensor q, k, v, beta, w0;
};

Inputs make_inputs(int64_t L, int64_t B, int64_t H, int64_t Dk, int64_t Dv, bool delta, bool initial,
                   uint64_t seed) {
  Inputs in;
  in.q = normalised_features({L, B, H, Dk}, seed);
  in.k = normalised_features({L, B, H, Dk}, seed + 1);
  in.v = random_f64({L, B, H, Dv}, seed + 2, -1.0, 1.0);
  if (delta) in.beta = random_f64({L, B, H, 1}, seed + 3, 0.0, 1.0);
  if (initial) in.w0 = random_f64({B, H, Dv, Dk}, seed + 4, -1.0, 1.0);
  return in;
}

// Output and gradients of q, k, v (and beta) through `f`, all inputs in `dtype`.
Evaluated run(const Inputs& in, DType dtype,
              const std::function<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&)>& f) {
  Xs values = {in.q.to(dtype), in.k.to(dtype), in.v.to(dtype)};
  if (in.beta.defined()) values.push_back(in.beta.to(dtype));
  const Tensor w0 = in.w0.defined() ? in.w0.to(dtype) : Tensor();
  return evaluate(
      [&](const Xs& x) { return cast(f(x[0], x[1], x[2], x.size() > 3 ? x[3] : Tensor(), w0), DType::f64); },
      values);
}

Tensor fused(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& w0) {
  return delta_rule(q, k, v, beta, w0);
}

}  // namespace

TEST_CASE("delta_rule: fused kernels match the step-by-step composition in float64") {
  struct Setup {
    const char* name;
    int64_t L, B, H, Dk, Dv;
    bool delta, initial;
  };
  // The larger setups spread sequences over threads.
  const Setup setups[] = {
      {"delta rule", 12, 3, 4, 16, 8, true, false},
      {"delta rule, initial state", 12, 3, 4, 16, 8, true, true},
      {"sum rule", 12, 3, 4, 16, 8, false, false},
      {"sum rule, initial state", 12, 3, 4, 16, 8, false, true},
      {"delta rule, model-sized heads", 20, 2, 8, 128, 64, true, false},
      {"L=1", 1, 2, 2, 8, 4, true, true},
      {"delta rule, odd sizes", 9, 2, 3, 19, 11, true, true},
      {"sum rule, odd sizes", 9, 2, 3, 19, 11, false, true},
      {"delta rule, 37 steps of small heads", 37, 2, 3, 19, 11, true, true},
      // The CPU's chunks of 16 steps (heads of 64 × 64 and more).
      {"delta rule, two chunks of 16 steps and a partial one", 37, 2, 2, 64, 64, true, true},
      {"sum rule, two chunks of 16 steps and a partial one", 37, 2, 2, 64, 72, false, true},
      {"delta rule, exactly two chunks, Dk > Dv", 32, 1, 2, 80, 64, true, false},
  };
  for (const Setup& s : setups) {
    INFO("setup: ", std::string(s.name));
    const Inputs in = make_inputs(s.L, s.B, s.H, s.Dk, s.Dv, s.delta, s.initial, 21);
    check_same(run(in, DType::f64, fused), run(in, DType::f64, delta_rule_composed), 1e-10);
  }
}

TEST_CASE("delta_rule: forward and gradients have the same bits for 1, 2 and 3 threads") {
  // Small heads (the step kernels) and heads of 64 × 64 (the chunks, across two
  // chunks and a partial one), with enough sequences to split over threads.
  const int threads = num_threads();
  for (const int64_t D : {16, 64}) {
    INFO("heads of ", D, " x ", D);
    const Inputs in = make_inputs(37, 3, 2, D, D, true, true, 17);
    auto evaluated = [&](int n) {
      set_num_threads(n);
      return run(in, DType::f32, fused);
    };
    const Evaluated one = evaluated(1), two = evaluated(2), three = evaluated(3);
    CHECK(one.out == two.out);
    CHECK(one.out == three.out);
    for (size_t i = 0; i < one.grads.size(); ++i) {
      INFO("input ", i);
      CHECK(one.grads[i] == two.grads[i]);
      CHECK(one.grads[i] == three.grads[i]);
    }
  }
  set_num_threads(threads);
}

TEST_CASE("delta_rule: rebuilding W backwards over 256 steps does not drift in float32") {
  // Fused float32 against the float64 composition: the backward's W_{t-1} = W_t - u kᵀ
  // rounds at every step, and this bounds how far 256 of those steps may wander.
  for (bool delta : {true, false}) {
    INFO((delta ? "delta rule" : "sum rule"));
    const Inputs in = make_inputs(256, 2, 2, 128, 64, delta, true, 5);
    const Evaluated got = run(in, DType::f32, fused);
    const Evaluated expected = run(in, DType::f64, delta_rule_composed);
    check_same(got, expected, 1e-4);
  }
}

TEST_CASE("delta_rule: final_state hands the recurrence over between chunks") {
  for (bool delta : {true, false}) {
    INFO((delta ? "delta rule" : "sum rule"));
    const Inputs in = make_inputs(9, 2, 3, 6, 4, delta, true, 8);
    Ref ref_last;
    const Ref beta_ref = delta ? Ref::from(in.beta) : Ref();
    const Ref w0_ref = Ref::from(in.w0);
    const Ref y_ref = delta_rule_ref(Ref::from(in.q), Ref::from(in.k), Ref::from(in.v), delta ? &beta_ref : nullptr,
                                     &w0_ref, &ref_last);
    Tensor last;
    const Tensor y = delta_rule(in.q, in.k, in.v, in.beta, in.w0, &last);
    CHECK(relative_difference(Ref::from(y).v, y_ref.v) < 1e-12);
    CHECK(relative_difference(Ref::from(last).v, ref_last.v) < 1e-12);
    // 4 steps, then 5 from where they ended: the same outputs and the same end state.
    auto part = [&](const Tensor& t, int64_t start, int64_t len) {
      return t.defined() ? narrow(t, 0, start, len) : Tensor();
    };
    Tensor mid, end;
    const Tensor y1 = delta_rule(part(in.q, 0, 4), part(in.k, 0, 4), part(in.v, 0, 4), part(in.beta, 0, 4), in.w0, &mid);
    const Tensor y2 = delta_rule(part(in.q, 4, 5), part(in.k, 4, 5), part(in.v, 4, 5), part(in.beta, 4, 5), mid, &end);
    CHECK(relative_difference(Ref::from(concat({y1, y2}, 0)).v, y_ref.v) < 1e-12);
    CHECK(relative_difference(Ref::from(end).v, ref_last.v) < 1e-12);
  }
}

TEST_CASE("delta_rule: the backward keeps vbar and W_L, never a W per step; no gradient to the initial state") {
  const int64_t L = 7, B = 2, H = 3, Dk = 5, Dv = 4;
  Inputs in = make_inputs(L, B, H, Dk, Dv, true, true, 3);
  for (Tensor* t : {&in.q, &in.k, &in.v, &in.beta, &in.w0}) t->requires_grad_();
  const Tensor y = delta_rule(in.q, in.k, in.v, in.beta, in.w0);
  const auto& node = y.grad_fn();
  REQUIRE(node);
  REQUIRE(node->saved.size() == 2);
  CHECK(node->saved[0].shape() == (Shape{L, B, H, Dv}));
  CHECK(node->saved[1].shape() == (Shape{B, H, Dv, Dk}));
  sum(y).backward();
  CHECK(in.q.grad().defined());
  CHECK(in.beta.grad().defined());
  CHECK(!in.w0.grad().defined());

  // The sum rule needs no vbar.
  const Tensor y_sum = delta_rule(in.q, in.k, in.v, Tensor());
  REQUIRE(y_sum.grad_fn()->saved.size() == 2);
  CHECK(!y_sum.grad_fn()->saved[0].defined());
  // Without grad nothing is kept.
  const Tensor y_plain = delta_rule(in.q.detach(), in.k.detach(), in.v.detach(), in.beta.detach());
  CHECK(!y_plain.grad_fn());
}

TEST_CASE("delta_rule: errors name the op and both shapes") {
  const Tensor q = Tensor::zeros({5, 2, 3, 4}), v = Tensor::zeros({5, 2, 3, 6}), beta = Tensor::zeros({5, 2, 3, 1});
  auto mentions = [](const std::string& msg, std::initializer_list<const char*> parts) {
    INFO("message: ", msg);
    for (const char* p : parts) CHECK_MESSAGE(contains(msg, p), "missing '", p, "'");
  };
  mentions(error_of([&] { delta_rule(q, Tensor::zeros({5, 2, 3, 5}), v, beta); }),
           {"delta_rule", "k [5, 2, 3, 5]", "q [5, 2, 3, 4]"});
  mentions(error_of([&] { delta_rule(q, q, Tensor::zeros({4, 2, 3, 6}), beta); }),
           {"delta_rule", "v [4, 2, 3, 6]", "q [5, 2, 3, 4]"});
  mentions(error_of([&] { delta_rule(q, q, v, Tensor::zeros({5, 2, 3, 2})); }),
           {"delta_rule", "beta [5, 2, 3, 2]", "q [5, 2, 3, 4]", "[5, 2, 3, 1]"});
  mentions(error_of([&] { delta_rule(q, q, v, beta, Tensor::zeros({2, 3, 4, 6})); }),
           {"delta_rule", "initial_state [2, 3, 4, 6]", "q [5, 2, 3, 4]", "v [5, 2, 3, 6]", "[2, 3, 6, 4]"});
  mentions(error_of([&] { delta_rule(Tensor::zeros({5, 2, 4}), Tensor::zeros({5, 2, 4}), v, beta); }),
           {"delta_rule", "q", "[L, B, H, Dk]", "[5, 2, 4]"});
  mentions(error_of([&] { delta_rule(q, q, v.to(DType::f64), beta); }), {"delta_rule", "v", "float64", "float32"});
  mentions(error_of([&] { delta_rule(q.to(DType::i64), q, v, beta); }), {"delta_rule", "int64"});
  mentions(error_of([&] { delta_rule(q, Tensor(), v, beta); }), {"delta_rule", "k", "undefined"});
}

TEST_CASE("delta_rule: the CUDA kernels' shared-memory layouts: no overlap, the total covers every region") {
  for (const auto& sizes : {std::pair<int64_t, int64_t>{0, 0}, {1, 3}, {16, 5}, {128, 64}}) {
    const int64_t Dk = sizes.first, Dv = sizes.second;  // not bindings: clang 14 cannot capture them in CAPTURE
    CAPTURE(Dk);
    CAPTURE(Dv);
    const kernels::DeltaRuleForwardShared f(Dk, Dv);
    check_layout({f.W, f.q, f.k, f.v}, f.total);
    const kernels::DeltaRuleBackwardShared b(Dk, Dv, 8);
    check_layout({b.W, b.G, b.q, b.k, b.v, b.g_out, b.vbar, b.u, b.dvbar, b.dbeta}, b.total);
  }
  // cuda/README.md's size table: Dv·Dk + 2 Dk + Dv and 2 Dv·Dk + 2 Dk + 5 Dv + 8 values (8 warps).
  CHECK(kernels::DeltaRuleForwardShared(128, 64).total == 8512);
  CHECK(kernels::DeltaRuleBackwardShared(128, 64, 8).total == 16968);
}

}  // namespace loom::test
