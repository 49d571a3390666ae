// cases_linalg.cpp: op-table cases for matmul (2-D, batched, broadcast, transposed, vectors),
// for linear (x·Wᵀ + b, the bias as the GEMM's starting output), and for step_weight and stepped_matmul: a weight shared by the steps of a recurrence,
// its gradient made once over all the steps' rows (the reference: the plain chain of products).
#include <cmath>

#include "engine/ops.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// Naive numpy matmul of Refs (≥1-D each).
Ref matmul_ref(Ref a, Ref b) {
  const bool a_vec = a.dim() == 1, b_vec = b.dim() == 1;
  if (a_vec) a.shape.insert(a.shape.begin(), 1);
  if (b_vec) b.shape.push_back(1);
  const int64_t M = a.shape[a.dim() - 2], K = a.shape[a.dim() - 1], N = b.shape[b.dim() - 1];
  const Shape a_batch(a.shape.begin(), a.shape.end() - 2), b_batch(b.shape.begin(), b.shape.end() - 2);
  const Shape batch = broadcast_shapes(a_batch, b_batch, "matmul_ref");
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Ref out(out_shape);
  const Ref batch_index(batch);
  for (int64_t bi = 0; bi < shape_numel(batch); ++bi) {
    const auto idx = batch_index.unflat(bi);
    auto pick = [&](const Ref& r, int64_t i, int64_t j) {
      std::vector<int64_t> full;
      const size_t lead = batch.size() - (r.shape.size() - 2);
      for (size_t d = lead; d < batch.size(); ++d) full.push_back(r.shape[d - lead] == 1 ? 0 : idx[d]);
      full.push_back(i);
      full.push_back(j);
      return r.at(full);
    };
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += pick(a, i, k) * pick(b, k, j);
        auto o = idx;
        o.push_back(i);
        o.push_back(j);
        out.at(o) = s;
      }
  }
  if (b_vec) out.shape.pop_back();
  if (a_vec) out.shape.erase(out.shape.end() - (b_vec ? 1 : 2));
  return out;
}

void add_case(std::vector<OpCase>& c, const std::string& name, InputSpec a, InputSpec b) {
  c.push_back({"matmul " + name, {a, b}, [](const Xs& x) { return matmul(x[0], x[1]); },
               [](const Rs& r) { return matmul_ref(r[0], r[1]); }});
}

// linear: x [..., in], W [out, in], b [out] (or none) in plain loops.
Ref linear_ref(const Ref& x, const Ref& w, const Ref* b) {
  const int64_t in = w.shape[1], out_features = w.shape[0];
  const int64_t rows = shape_numel(Shape(x.shape.begin(), x.shape.end() - 1));
  Shape out_shape = x.shape;
  out_shape.back() = out_features;
  Ref out(out_shape);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out_features; ++o) {
      double acc = b ? b->v[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += x.v[r * in + i] * w.v[o * in + i];
      out.v[r * out_features + o] = acc;
    }
  return out;
}

void add_linear_case(std::vector<OpCase>& c, const std::string& name, InputSpec x, InputSpec w, bool bias,
                     bool gradcheck = true) {
  const int64_t out_features = w.shape[0];
  std::vector<InputSpec> inputs{x, w};
  if (bias) inputs.push_back(InputSpec({out_features}));
  c.push_back({"linear " + name, inputs,
               [](const Xs& v) { return linear(v[0], v[1], v.size() > 2 ? v[2] : Tensor()); },
               [](const Rs& r) { return linear_ref(r[0], r[1], r.size() > 2 ? &r[2] : nullptr); }, gradcheck});
}

}  // namespace

static CaseRegistrar linear_cases([](std::vector<OpCase>& c) {
  add_linear_case(c, "[3,4] with bias", InputSpec({3, 4}), InputSpec({5, 4}), true);
  add_linear_case(c, "[2,3,4] with bias (leading dims)", InputSpec({2, 3, 4}), InputSpec({2, 4}), true);
  add_linear_case(c, "a transposed weight view", InputSpec({3, 4}), InputSpec({5, 4}).transposed(), true);
  add_linear_case(c, "a strided input", InputSpec({3, 4}).strided(), InputSpec({2, 4}), true);
  add_linear_case(c, "in=0: the bias alone", InputSpec({3, 0}), InputSpec({2, 0}), true);
  // Large enough that each thread adds its own block of rows onto the bias.
  add_linear_case(c, "[64,128]x[512,128]^T with bias (split over threads)", InputSpec({64, 128}),
                  InputSpec({512, 128}), true, false);
});

static CaseRegistrar linalg_cases([](std::vector<OpCase>& c) {
  add_case(c, "2-D", InputSpec({3, 4}), InputSpec({4, 5}));
  add_case(c, "A transposed", InputSpec({3, 4}).transposed(), InputSpec({4, 5}));
  add_case(c, "B transposed", InputSpec({3, 4}), InputSpec({4, 5}).transposed());
  add_case(c, "both transposed", InputSpec({3, 4}).transposed(), InputSpec({4, 2}).transposed());
  add_case(c, "A strided", InputSpec({3, 4}).strided(), InputSpec({4, 2}));
  add_case(c, "batched", InputSpec({2, 3, 4}), InputSpec({2, 4, 5}));
  add_case(c, "batched, B transposed", InputSpec({2, 3, 4}), InputSpec({2, 4, 3}).transposed());
  add_case(c, "broadcast batch [2,1,..]x[3,..]", InputSpec({2, 1, 3, 4}), InputSpec({3, 4, 2}));
  add_case(c, "batched x matrix", InputSpec({2, 3, 4}), InputSpec({4, 5}));
  add_case(c, "vector x matrix", InputSpec({4}), InputSpec({4, 3}));
  add_case(c, "matrix x vector", InputSpec({3, 4}), InputSpec({4}));
  add_case(c, "vector x vector", InputSpec({5}), InputSpec({5}));
  add_case(c, "K=1 outer product", InputSpec({3, 1}), InputSpec({1, 4}));
  add_case(c, "K=0 gives zeros", InputSpec({2, 0}), InputSpec({0, 3}));
});

namespace {

// a [M, K] · b [K, N] in plain loops.
Ref product(const Ref& a, const Ref& b) {
  const int64_t M = a.shape[0], K = a.shape[1], N = b.shape[1];
  Ref out({M, N});
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) out.at({i, j}) += a.at({i, k}) * b.at({k, j});
  return out;
}

Ref plus_tanh(const Ref& y, const Ref& x) {
  return zip(map(y, [](double v) { return std::tanh(v); }), x, [](double a, double b) { return a + b; });
}

// Three steps that feed each other, as a recurrence's do: y0 = x0·W,
// y1 = (tanh y0 + x1)·W, y2 = (tanh y1 + x2)·W.
Tensor three_steps(const Xs& x, int64_t capacity) {
  StepWeight w = step_weight(x[0], capacity);
  const Tensor y0 = stepped_matmul(x[1], w);
  const Tensor y1 = stepped_matmul(tanh(y0) + x[2], w);
  return stepped_matmul(tanh(y1) + x[3], w);
}

Ref three_steps_ref(const Rs& r) {
  const Ref y0 = product(r[1], r[0]);
  const Ref y1 = product(plus_tanh(y0, r[2]), r[0]);
  return product(plus_tanh(y1, r[3]), r[0]);
}

// The same with a bias b = x[4]: y_t = (…)·W + b.
Tensor three_biased_steps(const Xs& x, int64_t capacity) {
  StepWeight w = step_weight(x[0], capacity, x[4]);
  const Tensor y0 = stepped_matmul(x[1], w);
  const Tensor y1 = stepped_matmul(tanh(y0) + x[2], w);
  return stepped_matmul(tanh(y1) + x[3], w);
}

Ref plus_bias(const Ref& y, const Ref& b) {
  Ref out = y;
  for (int64_t i = 0; i < y.shape[0]; ++i)
    for (int64_t j = 0; j < y.shape[1]; ++j) out.at({i, j}) += b.at({j});
  return out;
}

Ref three_biased_steps_ref(const Rs& r) {
  const Ref y0 = plus_bias(product(r[1], r[0]), r[4]);
  const Ref y1 = plus_bias(product(plus_tanh(y0, r[2]), r[0]), r[4]);
  return plus_bias(product(plus_tanh(y1, r[3]), r[0]), r[4]);
}

Ref transposed(const Ref& m) {
  Ref t({m.shape[1], m.shape[0]});
  for (int64_t i = 0; i < m.shape[0]; ++i)
    for (int64_t j = 0; j < m.shape[1]; ++j) t.at({j, i}) = m.at({i, j});
  return t;
}

}  // namespace

static CaseRegistrar stepped_cases([](std::vector<OpCase>& c) {
  c.push_back({"stepped_matmul: three steps feeding each other",
               {InputSpec({4, 4}), InputSpec({2, 4}), InputSpec({2, 4}), InputSpec({2, 4})},
               [](const Xs& x) { return three_steps(x, 6); }, three_steps_ref});
  c.push_back({"stepped_matmul: a transposed weight, a strided first input, spare capacity",
               {InputSpec({4, 4}).transposed(), InputSpec({2, 4}).strided(), InputSpec({2, 4}), InputSpec({2, 4})},
               [](const Xs& x) { return three_steps(x, 9); }, three_steps_ref});
  // The last output read transposed: its gradient reaches the step as a strided view.
  c.push_back({"stepped_matmul: the last step's gradient arrives transposed",
               {InputSpec({4, 4}), InputSpec({2, 4}), InputSpec({2, 4}), InputSpec({2, 4})},
               [](const Xs& x) { return transpose(three_steps(x, 6), 0, 1); },
               [](const Rs& r) { return transposed(three_steps_ref(r)); }});
  c.push_back({"stepped_matmul: three steps with a bias, a transposed weight",
               {InputSpec({3, 3}).transposed(), InputSpec({2, 3}), InputSpec({2, 3}), InputSpec({2, 3}),
                InputSpec({3})},
               [](const Xs& x) { return three_biased_steps(x, 7); }, three_biased_steps_ref});
  // The token alone: zero, and so is its gradient (no step filed a row).
  c.push_back({"step_weight: the token of a weight no step used", {InputSpec({3, 2})},
               [](const Xs& x) { return step_weight(x[0], 4).token; }, [](const Rs&) { return Ref({1}); }});
});

}  // namespace loom::test
