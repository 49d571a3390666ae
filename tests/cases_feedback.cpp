// cases_feedback.cpp: op-table cases for feedback_attention, the fused kernel
// against the same math composed of elementary ops, and feedback_memory_append
// (values, no copies, gradients against stack(), errors).
#include <algorithm>
#include <cmath>

#include "engine/device.h"
#include "engine/ops.h"
#include "tests/fused_check.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// ---- reference: plain loops over b, h and the memory slots j ----------------------

// r = {q [B,H,D], keys [n,B,H,D], values [n,B,H,Dv], P [R,H,D], s [R,H], u [H,D]}.
Ref feedback_attention_ref(const Rs& r, double scale) {
  const Ref &q = r[0], &k = r[1], &v = r[2], &P = r[3], &s = r[4], &u = r[5];
  const int64_t B = q.shape[0], H = q.shape[1], D = q.shape[2];
  const int64_t n = k.shape[0], Dv = v.shape[3], R = P.shape[0];
  Ref out({B, H, Dv});
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> score(n);
      double m = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        const int64_t row = R - n + j;  // distance n - j from the current step
        double content = 0.0, position = 0.0;
        for (int64_t d = 0; d < D; ++d) {
          content += (q.at({b, h, d}) + u.at({h, d})) * k.at({j, b, h, d});
          position += q.at({b, h, d}) * P.at({row, h, d});
        }
        score[j] = scale * (content + position + s.at({row, h}));
        m = std::max(m, score[j]);
      }
      double total = 0.0;
      for (int64_t j = 0; j < n; ++j) total += std::exp(score[j] - m);
      for (int64_t d = 0; d < Dv; ++d) {
        double o = 0.0;
        for (int64_t j = 0; j < n; ++j) o += std::exp(score[j] - m) / total * v.at({j, b, h, d});
        out.at({b, h, d}) = o;
      }
    }
  }
  return out;
}

struct Dims {
  int64_t B, H, D, Dv, n, R;
};

// The six inputs; `layout` changes keys and values (the memory) only.
std::vector<InputSpec> specs(const Dims& d, Layout layout = Layout::contiguous) {
  InputSpec keys({d.n, d.B, d.H, d.D}), values({d.n, d.B, d.H, d.Dv});
  keys.layout = values.layout = layout;
  return {InputSpec({d.B, d.H, d.D}), keys, values, InputSpec({d.R, d.H, d.D}).range(-0.5, 0.5),
          InputSpec({d.R, d.H}), InputSpec({d.H, d.D}).range(-0.5, 0.5)};
}

void add_case(std::vector<OpCase>& c, const std::string& variant, const Dims& d,
              Layout layout = Layout::contiguous, double scale = 0.5) {
  c.push_back({"feedback_attention " + variant, specs(d, layout),
               [scale](const Xs& x) { return feedback_attention(x[0], x[1], x[2], x[3], x[4], x[5], scale); },
               [scale](const Rs& r) { return feedback_attention_ref(r, scale); }});
}

}  // namespace

static CaseRegistrar feedback_cases([](std::vector<OpCase>& c) {
  add_case(c, "one memory slot n=1", {2, 2, 3, 3, 1, 1});
  add_case(c, "n=4, R=n", {2, 3, 4, 4, 4, 4});
  add_case(c, "R > n (last rows of the tables)", {3, 2, 4, 2, 3, 7});
  add_case(c, "B=1, H=1, Dv != D", {1, 1, 5, 3, 6, 9});
  add_case(c, "strided memory", {2, 2, 3, 3, 4, 5}, Layout::strided);
  add_case(c, "transposed memory (last axis not unit-stride)", {2, 3, 2, 2, 3, 4}, Layout::transposed);
  add_case(c, "scale 1/sqrt(D)", {2, 2, 4, 4, 5, 8}, Layout::contiguous, 0.5);
  add_case(c, "empty batch B=0", {0, 2, 3, 3, 2, 2});
  add_case(c, "long memory n=300 (more slots than a block has threads)", {1, 1, 4, 4, 300, 320});
});

// ---- the fused op against the same math composed of elementary ops ------------------

namespace {

Tensor composed_feedback_attention(const Xs& x, double scale) {
  const Tensor &q = x[0], &keys = x[1], &values = x[2], &P = x[3], &s = x[4], &u = x[5];
  const int64_t n = keys.size(0), R = P.size(0);
  const Tensor P_used = narrow(P, 0, R - n, n);   // [n, H, D]
  const Tensor s_used = narrow(s, 0, R - n, n);   // [n, H]
  const Tensor content = sum(unsqueeze(q + u, 0) * keys, {3});               // [n, B, H]
  const Tensor position = sum(unsqueeze(q, 0) * unsqueeze(P_used, 1), {3});  // [n, B, H]
  const Tensor score = (content + position + unsqueeze(s_used, 1)) * scale;
  const Tensor alpha = softmax(score, 0);
  return sum(unsqueeze(alpha, 3) * values, {0});  // [B, H, Dv]
}

Xs random_inputs(const Dims& d, uint64_t seed) {
  return {random_f64({d.B, d.H, d.D}, seed),        random_f64({d.n, d.B, d.H, d.D}, seed + 1),
          random_f64({d.n, d.B, d.H, d.Dv}, seed + 2), random_f64({d.R, d.H, d.D}, seed + 3, -0.5, 0.5),
          random_f64({d.R, d.H}, seed + 4),          random_f64({d.H, d.D}, seed + 5, -0.5, 0.5)};
}

}  // namespace

TEST_CASE("feedback_attention: fused kernel matches the composed ops in float64") {
  // The large shape spreads (b, h) rows and heads over threads.
  for (const Dims& d : {Dims{3, 2, 4, 5, 6, 9}, Dims{1, 1, 2, 2, 1, 1}, Dims{16, 8, 16, 16, 50, 64}}) {
    INFO("B ", d.B, " H ", d.H, " D ", d.D, " Dv ", d.Dv, " n ", d.n, " R ", d.R);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
    const Xs x = random_inputs(d, 21);
    check_same(evaluate([&](const Xs& v) { return feedback_attention(v[0], v[1], v[2], v[3], v[4], v[5], scale); }, x),
               evaluate([&](const Xs& v) { return composed_feedback_attention(v, scale); }, x), 1e-10);
  }
}

TEST_CASE("feedback_attention: float32 forward and backward agree with float64") {
  // The walker gradient-checks only float64; this covers the float32 kernels' backward.
  const Dims d{8, 4, 16, 16, 40, 48};
  const Xs x64 = random_inputs(d, 5);
  Xs x32;
  for (const Tensor& t : x64) x32.push_back(t.to(DType::f32));
  auto f = [](const Xs& v) { return cast(feedback_attention(v[0], v[1], v[2], v[3], v[4], v[5], 0.25), DType::f64); };
  check_same(evaluate(f, x32), evaluate(f, x64), 1e-5);
}

TEST_CASE("feedback_attention: the same numbers, forward and backward, whatever the thread count") {
  // Rows (forward) and heads (backward) are split over threads; each keeps its own
  // order of summation, so the results must be bit-identical.
  const Xs x = random_inputs({16, 8, 16, 16, 50, 64}, 8);
  auto f = [](const Xs& v) { return feedback_attention(v[0], v[1], v[2], v[3], v[4], v[5], 0.25); };
  // 3 threads split the 128 rows into chunks of 43, whose scores do not fill whole
  // SIMD packets: the case where a vectorised exp would round a tail differently.
  const int threads = num_threads();
  set_num_threads(1);
  const Evaluated one = evaluate(f, x);
  for (int many_threads : {2, 3}) {
    INFO(many_threads, " threads against 1");
    set_num_threads(many_threads);
    const Evaluated many = evaluate(f, x);
    CHECK(one.out == many.out);
    CHECK(one.grads == many.grads);
  }
  set_num_threads(threads);
}

TEST_CASE("feedback_attention: errors name the op, the argument and the shapes") {
  const Xs x = random_inputs({2, 3, 4, 4, 5, 6}, 1);
  auto call = [&](int replace, const Tensor& with) {
    Xs v = x;
    v[replace] = with;
    return error_of([&] { feedback_attention(v[0], v[1], v[2], v[3], v[4], v[5], 0.5); });
  };
  std::string msg = call(1, Tensor::zeros({5, 3, 3, 4}, DType::f64));  // B of keys differs from q
  CHECK(contains(msg, "feedback_attention"));
  CHECK(contains(msg, "keys of shape [5, 3, 3, 4] has B = 3"));
  CHECK(contains(msg, "q of shape [2, 3, 4] has B = 2"));
  msg = call(3, Tensor::zeros({4, 3, 4}, DType::f64));  // n = 5 > R = 4
  CHECK(contains(msg, "n = 5"));
  CHECK(contains(msg, "R = 4"));
  msg = call(1, Tensor::zeros({0, 2, 3, 4}, DType::f64));
  CHECK(contains(msg, "memory is empty"));
  msg = call(2, Tensor::zeros({4, 2, 3, 4}, DType::f64));
  CHECK(contains(msg, "values of shape [4, 2, 3, 4] has n = 4"));
  msg = call(4, Tensor::zeros({6, 2}, DType::f64));
  CHECK(contains(msg, "key_pos_bias of shape [6, 2] has H = 2"));
  msg = call(5, Tensor::zeros({3, 4, 1}, DType::f64));
  CHECK(contains(msg, "query_pos_bias must be [H, D], got shape [3, 4, 1]"));
  msg = call(0, Tensor::zeros({2, 3, 4}, DType::f32));
  CHECK(contains(msg, "dtype mismatch"));
}

// ---- feedback_memory_append -------------------------------------------------------------

TEST_CASE("feedback_memory_append: rows land in the buffer, the result is a view of it") {
  const Tensor buffer = Tensor::zeros({4, 2, 3}, DType::f64);
  Tensor rows;
  std::vector<Tensor> written;
  for (int64_t t = 0; t < 3; ++t) {
    written.push_back(random_f64({2, 3}, 40 + t));
    rows = feedback_memory_append(buffer, rows, written.back());
    CHECK(rows.shape() == Shape{t + 1, 2, 3});
    CHECK(rows.same_storage(buffer));
    CHECK(rows.offset() == buffer.offset());
  }
  CHECK(Ref::from(rows).v == Ref::from(stack(written, 0)).v);
  CHECK(Ref::from(narrow(buffer, 0, 3, 1)).v == std::vector<double>(6, 0.0));  // row 3 not written yet
}

TEST_CASE("feedback_memory_append: each row's gradient is the sum over every later read") {
  // Step t reads the memory rows [0, t] (as the feedback transformer's attention
  // does), weighted by a fixed tensor; the rows are made from the inputs by an op.
  // The reference stacks the rows afresh at every step.
  const int64_t L = 5;
  const Tensor x = random_f64({L, 2, 3}, 3);
  std::vector<Tensor> weights;
  for (int64_t t = 0; t < L; ++t) weights.push_back(random_f64({t + 1, 2, 3}, 50 + t));
  auto run = [&](bool with_append) {
    const Tensor leaf = clone(x).requires_grad_();
    const Tensor buffer = Tensor::zeros({L, 2, 3}, DType::f64);
    Tensor rows, loss = Tensor::scalar(0.0, DType::f64);
    std::vector<Tensor> made;
    for (int64_t t = 0; t < L; ++t) {
      const Tensor row = tanh(narrow(leaf, 0, t, 1).reshape({2, 3}));
      made.push_back(row);
      const Tensor memory = with_append ? (rows = feedback_memory_append(buffer, rows, row)) : stack(made, 0);
      loss = loss + sum(memory * memory * weights[t]);  // mul saves the memory view for its backward
    }
    loss.backward();
    return std::make_pair(loss.item(), leaf.grad().to_vector<double>());
  };
  const auto [loss, grad] = run(true);
  const auto [ref_loss, ref_grad] = run(false);
  CHECK(loss == doctest::Approx(ref_loss).epsilon(1e-12));
  CHECK(relative_difference(grad, ref_grad) < 1e-12);
}

TEST_CASE("feedback_memory_append: no gradient is recorded without grad mode or grad inputs") {
  const Tensor buffer = Tensor::zeros({2, 3});
  const Tensor row = Tensor::ones({3}).requires_grad_();
  {
    GradModeGuard no_grad(false);
    CHECK_FALSE(feedback_memory_append(buffer, Tensor(), row).requires_grad());
  }
  CHECK_FALSE(feedback_memory_append(buffer, Tensor(), Tensor::ones({3})).requires_grad());
  CHECK(feedback_memory_append(buffer, Tensor(), row).requires_grad());
}

TEST_CASE("feedback_memory_append: errors name the buffer, the row and the capacity") {
  const Tensor buffer = Tensor::zeros({2, 3});
  Tensor rows = feedback_memory_append(buffer, Tensor(), Tensor::ones({3}));
  rows = feedback_memory_append(buffer, rows, Tensor::ones({3}));
  std::string msg = error_of([&] { feedback_memory_append(buffer, rows, Tensor::ones({3})); });
  CHECK(contains(msg, "feedback_memory_append"));
  CHECK(contains(msg, "is full (2 rows written, capacity 2)"));
  msg = error_of([&] { feedback_memory_append(buffer, Tensor(), Tensor::ones({4})); });
  CHECK(contains(msg, "row of shape [4]"));
  CHECK(contains(msg, "[2, 3]"));
  msg = error_of([&] { feedback_memory_append(buffer, Tensor::zeros({1, 3}), Tensor::ones({3})); });
  CHECK(contains(msg, "not the first rows of the buffer"));
}

}  // namespace loom::test
