// cases_recurrent_delta_net.cpp: op-table cases for the fused Recurrent Delta
// Net (RDN), the fused kernels against the same recurrence written step by step
// with engine ops (forward and every gradient), the state hand-over used by
// decoding and carry-over, gradients that do not depend on the thread count, and
// error messages.
#include <algorithm>
#include <cmath>

#include "autodiff/node.h"
#include "engine/device.h"
#include "engine/kernels/recurrent_delta_net.h"
#include "engine/ops.h"
#include "tests/fused_check.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// ---- reference: plain double loops over the definition ---------------------------

// The RDN per batch item and head (engine/ops.h). qx, kx, vx [L, B, H, D], bx [L, B, H, 1],
// Rq, Rk, Rv [H, D, D], rb [H, D]; W0 [B, H, D, D] and y0 [B, H, D] or null (zeros).
// Returns y [L, B, H, D]; W_L and y_L in *last_W, *last_y when given.
Ref rdn_ref(const Rs& r, const Ref* W0, const Ref* y0, Ref* last_W = nullptr, Ref* last_y = nullptr) {
  const Ref &qx = r[0], &kx = r[1], &vx = r[2], &bx = r[3], &Rq = r[4], &Rk = r[5], &Rv = r[6], &rb = r[7];
  const int64_t L = qx.shape[0], B = qx.shape[1], H = qx.shape[2], D = qx.shape[3];
  Ref y({L, B, H, D});
  if (last_W) *last_W = Ref({B, H, D, D});
  if (last_y) *last_y = Ref({B, H, D});
  auto softmax = [](std::vector<double> x) {
    const double m = *std::max_element(x.begin(), x.end());
    double s = 0.0;
    for (double& e : x) s += (e = std::exp(e - m));
    for (double& e : x) e /= s;
    return x;
  };
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      std::vector<std::vector<double>> W(D, std::vector<double>(D, 0.0));
      std::vector<double> y_prev(D, 0.0);
      for (int64_t i = 0; i < D; ++i) {
        if (y0) y_prev[i] = y0->at({b, h, i});
        for (int64_t j = 0; j < D; ++j)
          if (W0) W[i][j] = W0->at({b, h, i, j});
      }
      for (int64_t t = 0; t < L; ++t) {
        std::vector<double> a(D), pq(D), pk(D), v(D);
        for (int64_t j = 0; j < D; ++j) a[j] = std::tanh(y_prev[j]);
        double pb = bx.at({t, b, h, 0});
        for (int64_t i = 0; i < D; ++i) {
          pq[i] = qx.at({t, b, h, i});
          pk[i] = kx.at({t, b, h, i});
          v[i] = vx.at({t, b, h, i});
          for (int64_t j = 0; j < D; ++j) {
            pq[i] += Rq.at({h, i, j}) * a[j];
            pk[i] += Rk.at({h, i, j}) * a[j];
            v[i] += Rv.at({h, i, j}) * a[j];
          }
          pb += rb.at({h, i}) * a[i];
        }
        const std::vector<double> q = softmax(pq), k = softmax(pk);
        const double beta = 1.0 / (1.0 + std::exp(-pb));
        for (int64_t i = 0; i < D; ++i) {
          double vbar = 0.0;
          for (int64_t j = 0; j < D; ++j) vbar += W[i][j] * k[j];
          for (int64_t j = 0; j < D; ++j) W[i][j] += beta * (v[i] - vbar) * k[j];
        }
        for (int64_t i = 0; i < D; ++i) {
          double s = 0.0;
          for (int64_t j = 0; j < D; ++j) s += W[i][j] * q[j];
          y.at({t, b, h, i}) = y_prev[i] = s;
        }
      }
      for (int64_t i = 0; i < D; ++i) {
        if (last_y) last_y->at({b, h, i}) = y_prev[i];
        for (int64_t j = 0; j < D; ++j)
          if (last_W) last_W->at({b, h, i, j}) = W[i][j];
      }
    }
  }
  return y;
}

// Adds one case. Inputs: qx, kx, vx, bx, Rq, Rk, Rv, rb, then initial_W and initial_y
// (constants: no gradient flows to them); the recurrent parameters in
// [-param_half, param_half]. With final_states the case's result is the output
// and both final states, flattened into one (not gradient-checked: the final
// states carry no gradient).
void add_case(std::vector<OpCase>& cases, const std::string& variant, bool initial, int64_t L, int64_t B, int64_t H,
              int64_t D, Layout layout = Layout::contiguous, double param_half = 0.6, bool final_states = false) {
  auto spec = [&](Shape s, double lo, double hi) {
    InputSpec in(std::move(s));
    in.range(lo, hi);
    in.layout = layout;
    return in;
  };
  // Recurrent parameters of order 1/sqrt(D) at most keep the pre-activations of order 1.
  std::vector<InputSpec> inputs = {spec({L, B, H, D}, -1, 1),   spec({L, B, H, D}, -1, 1),
                                   spec({L, B, H, D}, -1, 1),   spec({L, B, H, 1}, -1, 1),
                                   spec({H, D, D}, -param_half, param_half),  spec({H, D, D}, -param_half, param_half),
                                   spec({H, D, D}, -param_half, param_half),  spec({H, D}, -param_half, param_half)};
  if (initial) {
    inputs.push_back(spec({B, H, D, D}, -1, 1).constant());
    inputs.push_back(spec({B, H, D}, -1.5, 1.5).constant());
  }
  const std::string name =
      std::string("recurrent_delta_net") + (initial ? ", initial states" : "") + ", " + variant +
      (final_states ? ", output and final states" : "");
  cases.push_back({name, std::move(inputs),
                   [initial, final_states](const Xs& x) {
                     const Tensor W0 = initial ? x[8] : Tensor(), y0 = initial ? x[9] : Tensor();
                     Tensor last_W, last_y;
                     const Tensor y = recurrent_delta_net(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], W0, y0,
                                                          final_states ? &last_W : nullptr,
                                                          final_states ? &last_y : nullptr);
                     return final_states ? flat_concat({y, last_W, last_y}) : y;
                   },
                   [initial, final_states](const Rs& r) {
                     Ref last_W, last_y;
                     const Ref y = rdn_ref(r, initial ? &r[8] : nullptr, initial ? &r[9] : nullptr, &last_W, &last_y);
                     return final_states ? flat_concat({y, last_W, last_y}) : y;
                   },
                   /*gradcheck=*/!final_states});
}

}  // namespace

static CaseRegistrar recurrent_delta_net_cases([](std::vector<OpCase>& c) {
  for (bool initial : {false, true}) {
    add_case(c, "[5,2,3,4]", initial, 5, 2, 3, 4);
    add_case(c, "L=1 [1,2,2,3]", initial, 1, 2, 2, 3);
  }
  add_case(c, "strided [4,2,2,3]", true, 4, 2, 2, 3, Layout::strided);
  add_case(c, "transposed views [3,2,3,3]", false, 3, 2, 3, 3, Layout::transposed);
  add_case(c, "D 1 [6,2,1,1]", true, 6, 2, 1, 1);
  add_case(c, "odd sizes [3,3,2,7]", true, 3, 3, 2, 7);
  // Heads wider than a warp with a tail, and model-sized; parameters at the authors' scale 1/√D.
  add_case(c, "D 33 [3,1,1,33]", true, 3, 1, 1, 33, Layout::contiguous, 1 / std::sqrt(33.0));
  add_case(c, "D 64 [3,1,1,64]", false, 3, 1, 1, 64, Layout::contiguous, 1 / std::sqrt(64.0));
  c.back().grad_eps = 1e-4;  // parameter gradients near 1e-6: a wider step keeps rounding out of the differences
  for (bool initial : {false, true})
    add_case(c, "[6,2,2,10]", initial, 6, 2, 2, 10, Layout::contiguous, 0.3, /*final_states=*/true);
});

// ---- the fused op against the recurrence written with engine ops, step by step ----------

namespace {

struct Inputs {
  Xs x;         // qx, kx, vx, bx, Rq, Rk, Rv, rb (float64)
  Tensor W0, y0;  // undefined: zeros
};

Inputs make_inputs(int64_t L, int64_t B, int64_t H, int64_t D, bool initial, uint64_t seed) {
  Inputs in;
  const double r = 1.0 / std::sqrt(static_cast<double>(D));  // the authors' N(0, 1/sqrt(d)) scale
  in.x = {random_f64({L, B, H, D}, seed, -1, 1),     random_f64({L, B, H, D}, seed + 1, -1, 1),
          random_f64({L, B, H, D}, seed + 2, -1, 1), random_f64({L, B, H, 1}, seed + 3, -1, 1),
          random_f64({H, D, D}, seed + 4, -r, r),    random_f64({H, D, D}, seed + 5, -r, r),
          random_f64({H, D, D}, seed + 6, -r, r),    random_f64({H, D}, seed + 7, -r, r)};
  if (initial) {
    in.W0 = random_f64({B, H, D, D}, seed + 8, -0.5, 0.5);
    in.y0 = random_f64({B, H, D}, seed + 9, -1, 1);
  }
  return in;
}

using Rdn = std::function<Tensor(const Xs&, const Tensor&, const Tensor&)>;

Tensor fused(const Xs& x, const Tensor& W0, const Tensor& y0) {
  return recurrent_delta_net(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], W0, y0);
}

// The recurrence step by step with elementary engine ops: tanh, matmul with the
// recurrent parameters, softmax, sigmoid, a matmul to read vbar, an outer product
// to write, a matmul to read out.
Tensor composed(const Xs& x, const Tensor& W0, const Tensor& y0) {
  const Tensor &qx = x[0], &kx = x[1], &vx = x[2], &bx = x[3], &Rq = x[4], &Rk = x[5], &Rv = x[6], &rb = x[7];
  const int64_t L = qx.size(0), B = qx.size(1), H = qx.size(2), D = qx.size(3);
  Tensor W = W0.defined() ? W0 : Tensor::zeros({B, H, D, D}, qx.dtype());
  Tensor y = y0.defined() ? y0 : Tensor::zeros({B, H, D}, qx.dtype());
  auto step = [](const Tensor& t, int64_t i) { return squeeze(narrow(t, 0, i, 1), 0); };  // [B, H, *]
  auto apply = [](const Tensor& R, const Tensor& a) { return squeeze(matmul(R, unsqueeze(a, -1)), -1); };
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < L; ++t) {
    const Tensor a = tanh(y);                                       // [B, H, D]
    const Tensor q = softmax(step(qx, t) + apply(Rq, a), -1);       // [H, D, D]·[B, H, D, 1]
    const Tensor k = softmax(step(kx, t) + apply(Rk, a), -1);
    const Tensor v = step(vx, t) + apply(Rv, a);
    const Tensor beta = sigmoid(step(bx, t) + sum(rb * a, {-1}, true));  // [B, H, 1]
    const Tensor vbar = matmul(W, unsqueeze(k, -1));                     // [B, H, D, 1]
    const Tensor u = unsqueeze(beta, -1) * (unsqueeze(v, -1) - vbar);
    W = W + matmul(u, unsqueeze(k, -2));
    y = squeeze(matmul(W, unsqueeze(q, -1)), -1);
    ys.push_back(y);
  }
  return stack(ys, 0);
}

// Output and the gradients of all eight inputs through `f`, in `dtype`.
Evaluated run(const Inputs& in, DType dtype, const Rdn& f) {
  Xs values;
  for (const Tensor& t : in.x) values.push_back(t.to(dtype));
  const Tensor W0 = in.W0.defined() ? in.W0.to(dtype) : Tensor();
  const Tensor y0 = in.y0.defined() ? in.y0.to(dtype) : Tensor();
  return evaluate([&](const Xs& x) { return cast(f(x, W0, y0), DType::f64); }, values);
}

}  // namespace

TEST_CASE("recurrent_delta_net: fused kernels match the step-by-step composition in float64") {
  struct Setup {
    const char* name;
    int64_t L, B, H, D;
    bool initial;
  };
  // The larger setups spread sequences over threads.
  const Setup setups[] = {
      {"small", 12, 3, 4, 8, false},
      {"small, initial states", 12, 3, 4, 8, true},
      {"L=1, initial states", 1, 2, 2, 8, true},
      {"odd sizes", 9, 2, 3, 11, true},
      {"model-sized heads", 16, 2, 4, 64, true},
  };
  for (const Setup& s : setups) {
    INFO("setup: ", std::string(s.name));
    const Inputs in = make_inputs(s.L, s.B, s.H, s.D, s.initial, 21);
    check_same(run(in, DType::f64, fused), run(in, DType::f64, composed), 1e-10);
  }
}

TEST_CASE("recurrent_delta_net: inputs that are windows of one projection give the bits of dense copies") {
  // As the RDN layer feeds the op: qx, kx, vx, bx are slices of one [L, B, H, 3D + 1 + pad]
  // projection, read in place; the same values made dense must give the same bits.
  const int64_t L = 7, B = 3, H = 2, D = 16, width = 3 * D + 1 + 5;
  const Inputs in = make_inputs(L, B, H, D, true, 33);
  const Tensor projection = random_f64({L, B, H, width}, 34, -1, 1).to(DType::f32);
  auto windows_then = [&](bool make_dense) {
    return [=](const Xs& x, const Tensor& W0, const Tensor& y0) {
      // x[0] is the projection's leaf; x[1..4] are the parameters.
      Xs slices = {narrow(x[0], -1, 0, D), narrow(x[0], -1, D, D), narrow(x[0], -1, 2 * D, D),
                   narrow(x[0], -1, 3 * D + 2, 1)};
      if (make_dense)
        for (Tensor& t : slices) t = contiguous(t);
      return recurrent_delta_net(slices[0], slices[1], slices[2], slices[3], x[1], x[2], x[3], x[4], W0, y0);
    };
  };
  const Xs values = {projection, in.x[4].to(DType::f32), in.x[5].to(DType::f32), in.x[6].to(DType::f32),
                     in.x[7].to(DType::f32)};
  const Tensor W0 = in.W0.to(DType::f32), y0 = in.y0.to(DType::f32);
  auto evaluated = [&](bool make_dense) {
    const auto f = windows_then(make_dense);
    return evaluate([&](const Xs& x) { return cast(f(x, W0, y0), DType::f64); }, values);
  };
  const Evaluated in_place = evaluated(false), copied = evaluated(true);
  CHECK(in_place.out == copied.out);
  REQUIRE(in_place.grads.size() == copied.grads.size());
  for (size_t i = 0; i < copied.grads.size(); ++i) CHECK(in_place.grads[i] == copied.grads[i]);
}

TEST_CASE("recurrent_delta_net: rebuilding W backwards over 256 steps stays close in float32") {
  // Fused float32 against the float64 composition: the backward's W_{t-1} = W_t - u kᵀ
  // rounds at every step, and this bounds how far 256 of those steps may wander.
  const Inputs in = make_inputs(256, 2, 2, 32, true, 5);
  check_same(run(in, DType::f32, fused), run(in, DType::f64, composed), 1e-4);
}

TEST_CASE("recurrent_delta_net: final_W and final_y hand the recurrence over between chunks") {
  for (bool initial : {false, true}) {
    INFO("initial states: ", initial);
    const Inputs in = make_inputs(9, 2, 3, 5, initial, 8);
    Rs refs;
    for (const Tensor& t : in.x) refs.push_back(Ref::from(t));
    const Ref W0 = initial ? Ref::from(in.W0) : Ref(), y0 = initial ? Ref::from(in.y0) : Ref();
    Ref ref_W, ref_y;
    const Ref y_ref = rdn_ref(refs, initial ? &W0 : nullptr, initial ? &y0 : nullptr, &ref_W, &ref_y);
    const Xs& x = in.x;
    Tensor last_W, last_y;
    const Tensor y = recurrent_delta_net(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], in.W0, in.y0, &last_W,
                                         &last_y);
    CHECK(relative_difference(Ref::from(y).v, y_ref.v) < 1e-12);
    CHECK(relative_difference(Ref::from(last_W).v, ref_W.v) < 1e-12);
    CHECK(relative_difference(Ref::from(last_y).v, ref_y.v) < 1e-12);
    // 4 steps, then 5 from where they ended: the same outputs and the same end states.
    auto part = [&](int64_t start, int64_t len) {
      Xs p;
      for (size_t i = 0; i < 4; ++i) p.push_back(narrow(x[i], 0, start, len));
      return p;
    };
    const Xs a = part(0, 4), b = part(4, 5);
    Tensor mid_W, mid_y, end_W, end_y;
    const Tensor y1 = recurrent_delta_net(a[0], a[1], a[2], a[3], x[4], x[5], x[6], x[7], in.W0, in.y0, &mid_W,
                                          &mid_y);
    const Tensor y2 = recurrent_delta_net(b[0], b[1], b[2], b[3], x[4], x[5], x[6], x[7], mid_W, mid_y, &end_W,
                                          &end_y);
    CHECK(relative_difference(Ref::from(concat({y1, y2}, 0)).v, y_ref.v) < 1e-12);
    CHECK(relative_difference(Ref::from(end_W).v, ref_W.v) < 1e-12);
    CHECK(relative_difference(Ref::from(end_y).v, ref_y.v) < 1e-12);
  }
}

TEST_CASE("recurrent_delta_net: L = 0 hands the initial states through") {
  const Inputs in = make_inputs(0, 2, 2, 3, true, 4);
  const Xs& x = in.x;
  Tensor last_W, last_y;
  const Tensor y = recurrent_delta_net(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], in.W0, in.y0, &last_W, &last_y);
  CHECK(y.shape() == (Shape{0, 2, 2, 3}));
  CHECK(Ref::from(last_W).v == Ref::from(in.W0).v);
  CHECK(Ref::from(last_y).v == Ref::from(in.y0).v);
}

TEST_CASE("recurrent_delta_net: gradients of the shared parameters do not depend on the thread count") {
  // Enough sequences and steps for the kernels to split sequences over threads.
  const Inputs in = make_inputs(16, 4, 4, 16, true, 12);
  const int threads = num_threads();
  auto grads = [&](int n) {
    set_num_threads(n);
    return run(in, DType::f32, fused);
  };
  const Evaluated one = grads(1), two = grads(2), three = grads(3);
  set_num_threads(threads);
  CHECK(one.out == two.out);
  for (size_t i = 0; i < one.grads.size(); ++i) {
    INFO("input ", i);
    CHECK(one.grads[i] == two.grads[i]);
    CHECK(one.grads[i] == three.grads[i]);
  }
}

TEST_CASE("recurrent_delta_net: the backward keeps per-step q, k, v, beta, vbar and W_L, never a W per step") {
  const int64_t L = 7, B = 2, H = 3, D = 5;
  Inputs in = make_inputs(L, B, H, D, true, 3);
  for (Tensor& t : in.x) t.requires_grad_();
  in.W0.requires_grad_();
  in.y0.requires_grad_();
  const Xs& x = in.x;
  const Tensor y = recurrent_delta_net(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], in.W0, in.y0);
  const auto& node = y.grad_fn();
  REQUIRE(node);
  REQUIRE(node->saved.size() == 11);
  for (int i : {0, 1, 2, 4}) CHECK(node->saved[i].shape() == (Shape{L, B, H, D}));  // q, k, v, vbar
  CHECK(node->saved[3].shape() == (Shape{L, B, H, 1}));                             // beta
  CHECK(node->saved[5].shape() == (Shape{B, H, D, D}));                             // W_L
  for (const Tensor& s : node->saved) CHECK(s.numel() < L * B * H * D * D);
  sum(y).backward();
  for (const Tensor& t : x) CHECK(t.grad().defined());
  CHECK(!in.W0.grad().defined());
  CHECK(!in.y0.grad().defined());
  // Without grad nothing is kept.
  const Tensor y_plain = recurrent_delta_net(x[0].detach(), x[1].detach(), x[2].detach(), x[3].detach(),
                                             x[4].detach(), x[5].detach(), x[6].detach(), x[7].detach());
  CHECK(!y_plain.grad_fn());
}

TEST_CASE("recurrent_delta_net: errors name the op, the argument and the shapes") {
  const Tensor x = Tensor::zeros({5, 2, 3, 4}), bx = Tensor::zeros({5, 2, 3, 1}), R = Tensor::zeros({3, 4, 4}),
               rb = Tensor::zeros({3, 4});
  auto rdn = [&](std::vector<Tensor> a) {
    recurrent_delta_net(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a.size() > 8 ? a[8] : Tensor(),
                        a.size() > 9 ? a[9] : Tensor());
  };
  check_mentions(error_of([&] { rdn({x, Tensor::zeros({5, 2, 3, 5}), x, bx, R, R, R, rb}); }),
                 {"recurrent_delta_net", "kx", "[5, 2, 3, 5]", "qx [5, 2, 3, 4]"});
  check_mentions(error_of([&] { rdn({x, x, Tensor::zeros({4, 2, 3, 4}), bx, R, R, R, rb}); }),
                 {"recurrent_delta_net", "vx", "[4, 2, 3, 4]", "[L, B, H, D]"});
  check_mentions(error_of([&] { rdn({x, x, x, Tensor::zeros({5, 2, 3, 4}), R, R, R, rb}); }),
                 {"recurrent_delta_net", "bx", "[5, 2, 3, 4]", "[5, 2, 3, 1]"});
  check_mentions(error_of([&] { rdn({x, x, x, bx, Tensor::zeros({2, 4, 4}), R, R, rb}); }),
                 {"recurrent_delta_net", "Rq", "[2, 4, 4]", "[H, D, D]", "[3, 4, 4]"});
  check_mentions(error_of([&] { rdn({x, x, x, bx, R, R, Tensor::zeros({3, 4, 5}), rb}); }),
                 {"recurrent_delta_net", "Rv", "[3, 4, 5]", "[3, 4, 4]"});
  check_mentions(error_of([&] { rdn({x, x, x, bx, R, R, R, Tensor::zeros({3, 4, 1})}); }),
                 {"recurrent_delta_net", "rb", "[3, 4, 1]", "[H, D]", "[3, 4]"});
  check_mentions(error_of([&] { rdn({x, x, x, bx, R, R, R, rb, Tensor::zeros({2, 3, 4, 5})}); }),
                 {"recurrent_delta_net", "initial_W", "[2, 3, 4, 5]", "[2, 3, 4, 4]"});
  check_mentions(error_of([&] { rdn({x, x, x, bx, R, R, R, rb, Tensor(), Tensor::zeros({2, 3})}); }),
                 {"recurrent_delta_net", "initial_y", "[2, 3]", "[B, H, D]", "[2, 3, 4]"});
  check_mentions(error_of([&] { rdn({Tensor::zeros({5, 2, 4}), x, x, bx, R, R, R, rb}); }),
                 {"recurrent_delta_net", "qx", "[L, B, H, D]", "[5, 2, 4]"});
  check_mentions(error_of([&] { rdn({x, x, x, bx, R, R.to(DType::f64), R, rb}); }),
                 {"recurrent_delta_net", "Rk", "float64", "float32"});
  check_mentions(error_of([&] { rdn({x.to(DType::i64), x, x, bx, R, R, R, rb}); }), {"recurrent_delta_net", "int64"});
  check_mentions(error_of([&] { rdn({x, x, x, bx, R, R, R, Tensor()}); }), {"recurrent_delta_net", "rb", "undefined"});
  check_mentions(error_of([&] { rdn({Tensor::zeros({5, 2, 3, 0}), x, x, bx, R, R, R, rb}); }),
                 {"recurrent_delta_net", "D = 0"});
}

TEST_CASE("recurrent_delta_net: the CUDA kernels' shared-memory layouts: no overlap, the total covers every region") {
  for (int64_t D : {0, 1, 5, 64, 166}) {
    CAPTURE(D);
    const kernels::RecurrentDeltaNetForwardShared f(D);
    check_layout({f.W, f.a, f.pre_q, f.pre_k, f.q, f.k, f.v, f.y, f.beta}, f.total);
    const kernels::RecurrentDeltaNetBackwardShared b(D, 8);
    check_layout({b.W, b.G, b.a, b.e, b.g_out, b.q, b.k, b.v, b.vbar, b.u, b.dvbar, b.dq, b.dk, b.dqx, b.dkx, b.dv,
                  b.scalars, b.dbeta},
                 b.total);
  }
  // cuda/README.md's size table: D² + 7 D + 2 and 2 D² + 14 D + 3 + 8 values (8 warps).
  CHECK(kernels::RecurrentDeltaNetForwardShared(64).total == 4546);
  CHECK(kernels::RecurrentDeltaNetBackwardShared(64, 8).total == 9099);
}

}  // namespace loom::test
