// cases_delta_rnn.cpp: op-table cases for the Delta RNN's fused recurrence, the
// fused kernels against the same recurrence written step by step with engine
// ops, the state hand-over used by decoding and carry-over, and error messages.
#include <cmath>
#include <random>

#include "autodiff/node.h"
#include "engine/kernels/delta_rnn.h"
#include "engine/ops.h"
#include "tests/fused_check.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// ---- reference: plain double loops over the definition ---------------------------

// z, rk, rv [L, B, H, D], gamma [L, B, H, 1], r0 [B, H, D, D] and y0 [B, H, D]
// (or null: zeros). Returns y [L, B, H, D], R_L in *last_R and y_L in *last_y.
Ref delta_rnn_ref(const Ref& z, const Ref& rk, const Ref& rv, const Ref& gamma, const Ref* r0, const Ref* y0,
                  Ref* last_R = nullptr, Ref* last_y = nullptr) {
  const int64_t L = z.shape[0], B = z.shape[1], H = z.shape[2], D = z.shape[3];
  Ref y({L, B, H, D});
  if (last_R) *last_R = Ref({B, H, D, D});
  if (last_y) *last_y = Ref({B, H, D});
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      std::vector<std::vector<double>> R(D, std::vector<double>(D, 0.0));
      std::vector<double> prev(D, 0.0);
      if (r0)
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = 0; j < D; ++j) R[i][j] = r0->at({b, h, i, j});
      if (y0)
        for (int64_t j = 0; j < D; ++j) prev[j] = y0->at({b, h, j});
      for (int64_t t = 0; t < L; ++t) {
        // The update: every row reads R_{t-1} k before any is written.
        std::vector<double> u(D);
        for (int64_t i = 0; i < D; ++i) {
          double vbar = 0.0;
          for (int64_t j = 0; j < D; ++j) vbar += R[i][j] * rk.at({t, b, h, j});
          u[i] = gamma.at({t, b, h, 0}) * (rv.at({t, b, h, i}) - vbar);
        }
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = 0; j < D; ++j) R[i][j] += u[i] * rk.at({t, b, h, j});
        // softmax of the previous output, computed as its definition (no max shift).
        std::vector<double> s(D);
        double total = 0.0;
        for (int64_t j = 0; j < D; ++j) total += s[j] = std::exp(prev[j]);
        for (int64_t j = 0; j < D; ++j) s[j] /= total;
        for (int64_t i = 0; i < D; ++i) {
          double acc = z.at({t, b, h, i});
          for (int64_t j = 0; j < D; ++j) acc += R[i][j] * s[j];
          y.at({t, b, h, i}) = acc;
        }
        for (int64_t i = 0; i < D; ++i) prev[i] = y.at({t, b, h, i});
      }
      if (last_R)
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = 0; j < D; ++j) last_R->at({b, h, i, j}) = R[i][j];
      if (last_y)
        for (int64_t j = 0; j < D; ++j) last_y->at({b, h, j}) = prev[j];
    }
  }
  return y;
}

// Adds one case. Inputs: z, rk, rv, gamma, then initial_R and initial_y when
// given (constants: they get no gradient). With final_states the case's result
// is the output and both final states, flattened into one (not gradient-checked:
// the final states carry no gradient).
void add_case(std::vector<OpCase>& cases, const std::string& variant, bool with_R, bool with_y, int64_t L,
              int64_t B, int64_t H, int64_t D, bool strided = false, bool transposed = false,
              bool final_states = false) {
  auto spec = [&](Shape s, double lo, double hi) {
    InputSpec in(std::move(s));
    in.range(lo, hi);
    if (strided) in.strided();
    if (transposed) in.transposed();
    return in;
  };
  // Keys in [0, 1/√D] keep gamma·|rk|² below 1 as softmax-normalised keys do, so
  // R stays of order 1 and float32 rounding small.
  const double k_hi = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<InputSpec> inputs = {spec({L, B, H, D}, -1, 1), spec({L, B, H, D}, 0, k_hi), spec({L, B, H, D}, -1, 1),
                                   spec({L, B, H, 1}, 0.05, 0.95)};
  if (with_R) inputs.push_back(spec({B, H, D, D}, -1, 1).constant());
  if (with_y) inputs.push_back(spec({B, H, D}, -2, 2).constant());
  const std::string name = std::string("delta_rnn") + (with_R ? ", initial R" : "") + (with_y ? ", initial y" : "") +
                           ", " + variant + (final_states ? ", output and final states" : "");
  cases.push_back({name, std::move(inputs),
                   [with_R, with_y, final_states](const Xs& x) {
                     const Tensor r0 = with_R ? x[4] : Tensor();
                     const Tensor y0 = with_y ? x[with_R ? 5 : 4] : Tensor();
                     if (!final_states) return delta_rnn(x[0], x[1], x[2], x[3], r0, y0);
                     Tensor last_R, last_y;
                     const Tensor y = delta_rnn(x[0], x[1], x[2], x[3], r0, y0, &last_R, &last_y);
                     return flat_concat({y, last_R, last_y});
                   },
                   [with_R, with_y, final_states](const Rs& r) {
                     const Ref* r0 = with_R ? &r[4] : nullptr;
                     const Ref* y0 = with_y ? &r[with_R ? 5 : 4] : nullptr;
                     Ref last_R, last_y;
                     const Ref y = delta_rnn_ref(r[0], r[1], r[2], r[3], r0, y0, &last_R, &last_y);
                     return final_states ? flat_concat({y, last_R, last_y}) : y;
                   },
                   /*gradcheck=*/!final_states});
}

}  // namespace

static CaseRegistrar delta_rnn_cases([](std::vector<OpCase>& c) {
  for (bool with_R : {false, true}) {
    for (bool with_y : {false, true}) {
      add_case(c, "[5,2,3,4]", with_R, with_y, 5, 2, 3, 4);
      add_case(c, "L=1 [1,2,2,3]", with_R, with_y, 1, 2, 2, 3);
    }
  }
  add_case(c, "strided [4,2,2,5]", true, true, 4, 2, 2, 5, /*strided=*/true);
  add_case(c, "transposed views [3,2,4,4]", false, false, 3, 2, 4, 4, false, /*transposed=*/true);
  add_case(c, "transposed views, initial states [3,4,4,4]", true, true, 3, 4, 4, 4, false, /*transposed=*/true);
  add_case(c, "D 1 [6,1,1,1]", true, true, 6, 1, 1, 1);
  add_case(c, "odd D [3,1,2,19]", true, true, 3, 1, 2, 19);
  // Heads wider than a warp with a tail, and model-sized.
  add_case(c, "D 33 [3,1,1,33]", true, true, 3, 1, 1, 33);
  add_case(c, "D 64 [3,1,1,64]", false, false, 3, 1, 1, 64);
  for (bool initial : {false, true})
    add_case(c, "[6,2,2,10]", initial, initial, 6, 2, 2, 10, false, false, /*final_states=*/true);
});

// ---- the fused op against the recurrence written with engine ops, step by step ----------

namespace {

// The recurrence as the authors' PyTorch reference loop writes it: per step a
// matmul to read R_{t-1} rk, sub/mul for the correction, an outer product and
// add to write, softmax of the previous output and a matmul to read out.
Tensor delta_rnn_composed(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma, const Tensor& r0,
                          const Tensor& y0) {
  const int64_t L = z.size(0), B = z.size(1), H = z.size(2), D = z.size(3);
  Tensor R = r0.defined() ? r0 : Tensor::zeros({B, H, D, D}, z.dtype());
  Tensor prev = y0.defined() ? y0 : Tensor::zeros({B, H, D}, z.dtype());
  auto step = [](const Tensor& x, int64_t t) { return squeeze(narrow(x, 0, t, 1), 0); };
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < L; ++t) {
    const Tensor k_col = unsqueeze(step(rk, t), -1);  // [B, H, D, 1]
    const Tensor k_row = unsqueeze(step(rk, t), -2);  // [B, H, 1, D]
    const Tensor v_col = unsqueeze(step(rv, t), -1);  // [B, H, D, 1]
    const Tensor u = unsqueeze(step(gamma, t), -1) * (v_col - matmul(R, k_col));
    R = R + matmul(u, k_row);
    prev = step(z, t) + squeeze(matmul(R, unsqueeze(softmax(prev, -1), -1)), -1);
    ys.push_back(prev);
  }
  return stack(ys, 0);
}

struct Inputs {
  Tensor z, rk, rv, gamma, r0, y0;
};

// Keys softmax-normalised and gamma in (0, 1), as the layer feeds them.
Inputs make_inputs(int64_t L, int64_t B, int64_t H, int64_t D, bool with_R, bool with_y, uint64_t seed) {
  Inputs in;
  in.z = random_f64({L, B, H, D}, seed, -1.0, 1.0);
  in.rk = softmax(random_f64({L, B, H, D}, seed + 1, -2.0, 2.0), -1);
  in.rv = random_f64({L, B, H, D}, seed + 2, -1.0, 1.0);
  in.gamma = random_f64({L, B, H, 1}, seed + 3, 0.0, 1.0);
  if (with_R) in.r0 = random_f64({B, H, D, D}, seed + 4, -1.0, 1.0);
  if (with_y) in.y0 = random_f64({B, H, D}, seed + 5, -2.0, 2.0);
  return in;
}

using Fn = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                const Tensor&)>;

// Output and gradients of z, rk, rv, gamma through `f`, all inputs in `dtype`.
Evaluated run(const Inputs& in, DType dtype, const Fn& f) {
  const Xs values = {in.z.to(dtype), in.rk.to(dtype), in.rv.to(dtype), in.gamma.to(dtype)};
  const Tensor r0 = in.r0.defined() ? in.r0.to(dtype) : Tensor();
  const Tensor y0 = in.y0.defined() ? in.y0.to(dtype) : Tensor();
  return evaluate([&](const Xs& x) { return cast(f(x[0], x[1], x[2], x[3], r0, y0), DType::f64); }, values);
}

Tensor fused(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma, const Tensor& r0,
             const Tensor& y0) {
  return delta_rnn(z, rk, rv, gamma, r0, y0);
}

}  // namespace

TEST_CASE("delta_rnn: fused kernels match the step-by-step composition in float64") {
  struct Setup {
    const char* name;
    int64_t L, B, H, D;
    bool with_R, with_y;
  };
  // The larger setups spread sequences over threads.
  const Setup setups[] = {
      {"zero initial states", 12, 3, 4, 16, false, false},
      {"initial R and y", 12, 3, 4, 16, true, true},
      {"initial y only", 12, 3, 4, 16, false, true},
      {"model-sized heads", 20, 2, 8, 64, false, false},
      {"L=1", 1, 2, 2, 8, true, true},
      {"odd sizes", 9, 2, 3, 19, true, true},
  };
  for (const Setup& s : setups) {
    INFO("setup: ", std::string(s.name));
    const Inputs in = make_inputs(s.L, s.B, s.H, s.D, s.with_R, s.with_y, 21);
    check_same(run(in, DType::f64, fused), run(in, DType::f64, delta_rnn_composed), 1e-10);
  }
}

TEST_CASE("delta_rnn: rebuilding R backwards over 256 steps does not drift in float32") {
  // Fused float32 against the float64 composition: the backward's R_{t-1} = R_t - u kᵀ
  // rounds at every step, and this bounds how far 256 of those steps may wander.
  const Inputs in = make_inputs(256, 2, 2, 64, true, true, 5);
  check_same(run(in, DType::f32, fused), run(in, DType::f64, delta_rnn_composed), 1e-4);
}

TEST_CASE("delta_rnn: final_R and final_y hand the recurrence over between chunks") {
  for (bool with_initial : {false, true}) {
    INFO((with_initial ? "from initial states" : "from zeros"));
    const Inputs in = make_inputs(9, 2, 3, 6, with_initial, with_initial, 8);
    Ref ref_R, ref_y;
    const Ref r0 = with_initial ? Ref::from(in.r0) : Ref(), y0 = with_initial ? Ref::from(in.y0) : Ref();
    const Ref y_ref = delta_rnn_ref(Ref::from(in.z), Ref::from(in.rk), Ref::from(in.rv), Ref::from(in.gamma),
                                    with_initial ? &r0 : nullptr, with_initial ? &y0 : nullptr, &ref_R, &ref_y);
    Tensor last_R, last_y;
    const Tensor y = delta_rnn(in.z, in.rk, in.rv, in.gamma, in.r0, in.y0, &last_R, &last_y);
    CHECK(relative_difference(Ref::from(y).v, y_ref.v) < 1e-12);
    CHECK(relative_difference(Ref::from(last_R).v, ref_R.v) < 1e-12);
    CHECK(relative_difference(Ref::from(last_y).v, ref_y.v) < 1e-12);
    // 4 steps, then 5 from where they ended: the same outputs and the same end states.
    auto part = [&](const Tensor& t, int64_t start, int64_t len) { return narrow(t, 0, start, len); };
    Tensor mid_R, mid_y, end_R, end_y;
    const Tensor y1 = delta_rnn(part(in.z, 0, 4), part(in.rk, 0, 4), part(in.rv, 0, 4), part(in.gamma, 0, 4), in.r0,
                                in.y0, &mid_R, &mid_y);
    const Tensor y2 = delta_rnn(part(in.z, 4, 5), part(in.rk, 4, 5), part(in.rv, 4, 5), part(in.gamma, 4, 5), mid_R,
                                mid_y, &end_R, &end_y);
    CHECK(relative_difference(Ref::from(concat({y1, y2}, 0)).v, y_ref.v) < 1e-12);
    CHECK(relative_difference(Ref::from(end_R).v, ref_R.v) < 1e-12);
    CHECK(relative_difference(Ref::from(end_y).v, ref_y.v) < 1e-12);
    // One step at a time (incremental decoding) gives the same too.
    Tensor R = in.r0, prev = in.y0;
    std::vector<Tensor> steps;
    for (int64_t t = 0; t < 9; ++t)
      steps.push_back(delta_rnn(part(in.z, t, 1), part(in.rk, t, 1), part(in.rv, t, 1), part(in.gamma, t, 1), R,
                                prev, &R, &prev));
    CHECK(relative_difference(Ref::from(concat(steps, 0)).v, y_ref.v) < 1e-12);
    CHECK(relative_difference(Ref::from(R).v, ref_R.v) < 1e-12);
  }
  // Over no steps the states pass through unchanged (zeros when not given).
  const Inputs in = make_inputs(3, 2, 2, 4, true, true, 9);
  Tensor R, y;
  const Tensor out = delta_rnn(narrow(in.z, 0, 0, 0), narrow(in.rk, 0, 0, 0), narrow(in.rv, 0, 0, 0),
                               narrow(in.gamma, 0, 0, 0), in.r0, in.y0, &R, &y);
  CHECK(out.shape() == (Shape{0, 2, 2, 4}));
  CHECK(relative_difference(Ref::from(R).v, Ref::from(in.r0).v) == 0.0);
  CHECK(relative_difference(Ref::from(y).v, Ref::from(in.y0).v) == 0.0);
  delta_rnn(narrow(in.z, 0, 0, 0), narrow(in.rk, 0, 0, 0), narrow(in.rv, 0, 0, 0), narrow(in.gamma, 0, 0, 0),
            Tensor(), Tensor(), &R, &y);
  CHECK(Ref::from(R).v == std::vector<double>(2 * 2 * 4 * 4, 0.0));
  CHECK(Ref::from(y).v == std::vector<double>(2 * 2 * 4, 0.0));
}

TEST_CASE("delta_rnn: the backward keeps vbar, R_L and the output, never an R per step or z") {
  const int64_t L = 7, B = 2, H = 3, D = 5;
  Inputs in = make_inputs(L, B, H, D, true, true, 3);
  for (Tensor* t : {&in.z, &in.rk, &in.rv, &in.gamma, &in.r0, &in.y0}) t->requires_grad_();
  const Tensor y = delta_rnn(in.z, in.rk, in.rv, in.gamma, in.r0, in.y0);
  const auto& node = y.grad_fn();
  REQUIRE(node);
  // rk, rv, gamma, vbar, R_L, initial_y.
  REQUIRE(node->saved.size() == 6);
  CHECK(node->saved[3].shape() == (Shape{L, B, H, D}));
  CHECK(node->saved[4].shape() == (Shape{B, H, D, D}));
  CHECK(node->saved[5].shape() == (Shape{B, H, D}));
  CHECK(node->inputs.empty());
  CHECK(node->output.defined());
  sum(y).backward();
  for (const Tensor* t : {&in.z, &in.rk, &in.rv, &in.gamma}) CHECK(t->grad().defined());
  CHECK(!in.r0.grad().defined());
  CHECK(!in.y0.grad().defined());
  // Without grad nothing is kept.
  const Tensor y_plain = delta_rnn(in.z.detach(), in.rk.detach(), in.rv.detach(), in.gamma.detach());
  CHECK(!y_plain.grad_fn());
}

TEST_CASE("delta_rnn: errors name the op, the operand and the shapes") {
  const Tensor z = Tensor::zeros({5, 2, 3, 4}), gamma = Tensor::zeros({5, 2, 3, 1});
  check_mentions(error_of([&] { delta_rnn(z, Tensor::zeros({5, 2, 3, 5}), z, gamma); }),
                 {"delta_rnn", "rk [5, 2, 3, 5]", "z [5, 2, 3, 4]"});
  check_mentions(error_of([&] { delta_rnn(z, z, Tensor::zeros({4, 2, 3, 4}), gamma); }),
                 {"delta_rnn", "rv [4, 2, 3, 4]", "z [5, 2, 3, 4]"});
  check_mentions(error_of([&] { delta_rnn(z, z, z, Tensor::zeros({5, 2, 3, 4})); }),
                 {"delta_rnn", "gamma [5, 2, 3, 4]", "z [5, 2, 3, 4]", "[5, 2, 3, 1]"});
  check_mentions(error_of([&] { delta_rnn(z, z, z, gamma, Tensor::zeros({2, 3, 4, 5})); }),
                 {"delta_rnn", "initial_R [2, 3, 4, 5]", "z [5, 2, 3, 4]", "[2, 3, 4, 4]"});
  check_mentions(error_of([&] { delta_rnn(z, z, z, gamma, Tensor(), Tensor::zeros({2, 4, 4})); }),
                 {"delta_rnn", "initial_y [2, 4, 4]", "z [5, 2, 3, 4]", "[2, 3, 4]"});
  check_mentions(error_of([&] { delta_rnn(z, z, z, gamma, Tensor(), Tensor::zeros({2, 3, 1, 4})); }),
                 {"delta_rnn", "initial_y", "[B, H, D]", "[2, 3, 1, 4]"});
  check_mentions(error_of([&] { delta_rnn(Tensor::zeros({5, 2, 4}), z, z, gamma); }),
                 {"delta_rnn", "z", "[L, B, H, D]", "[5, 2, 4]"});
  check_mentions(error_of([&] { delta_rnn(z, z, z.to(DType::f64), gamma); }), {"delta_rnn", "rv", "float64", "float32"});
  check_mentions(error_of([&] { delta_rnn(z, z, z, gamma, Tensor::zeros({2, 3, 4, 4}, DType::f64)); }),
                 {"delta_rnn", "initial_R", "float64", "float32"});
  check_mentions(error_of([&] { delta_rnn(z.to(DType::i64), z, z, gamma); }), {"delta_rnn", "int64"});
  check_mentions(error_of([&] { delta_rnn(z, Tensor(), z, gamma); }), {"delta_rnn", "rk", "undefined"});
  check_mentions(error_of([&] { delta_rnn(Tensor(), z, z, gamma); }), {"delta_rnn", "z", "undefined"});
}

TEST_CASE("delta_rnn: the CUDA kernels' shared-memory layouts: no overlap, the total covers every region") {
  for (int64_t D : {0, 1, 5, 64, 168}) {
    CAPTURE(D);
    const kernels::DeltaRnnForwardShared f(D);
    check_layout({f.R, f.rk, f.rv, f.soft, f.y}, f.total);
    const kernels::DeltaRnnBackwardShared b(D, 8);
    check_layout({b.R, b.G, b.rk, b.rv, b.vbar, b.g_out, b.soft, b.u, b.dvbar, b.ds, b.dgamma}, b.total);
  }
  // cuda/README.md's size table: D² + 4 D and 2 D² + 8 D + 8 values (8 warps).
  CHECK(kernels::DeltaRnnForwardShared(64).total == 4352);
  CHECK(kernels::DeltaRnnBackwardShared(64, 8).total == 8712);
}

}  // namespace loom::test
