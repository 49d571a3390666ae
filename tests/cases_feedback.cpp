// cases_feedback.cpp: op-table cases for feedback_attention, the fused kernel
// against the same math composed of elementary ops, and the FeedbackMemory that
// the model reads (values, no copies, gradients of many reads against attention
// over stack(), errors).
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

// The memory form: keys and values appended row by row to a FeedbackMemory (one
// spare row of capacity), then one read. Gradients reach the rows through the
// memory's gradient buffer and the appends' nodes.
void add_memory_case(std::vector<OpCase>& c, const std::string& variant, const Dims& d) {
  c.push_back({"feedback_attention over a FeedbackMemory " + variant, specs(d),
               [](const Xs& x) {
                 const Tensor &keys = x[1], &values = x[2];
                 const int64_t n = keys.size(0);
                 auto memory_of = [n](const Tensor& rows) {
                   Shape shape = rows.shape();
                   shape[0] = n + 1;
                   FeedbackMemory m = feedback_memory(Tensor::empty(shape, rows.dtype(), rows.device()));
                   for (int64_t j = 0; j < n; ++j) feedback_memory_append(m, squeeze(narrow(rows, 0, j, 1), 0));
                   return m;
                 };
                 return feedback_attention(x[0], memory_of(keys), memory_of(values), x[3], x[4], x[5], 0.5);
               },
               [](const Rs& r) { return feedback_attention_ref(r, 0.5); }});
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
  add_memory_case(c, "n=1", {2, 2, 3, 3, 1, 1});
  add_memory_case(c, "n=4, R > n, Dv != D", {2, 3, 4, 2, 4, 6});
  // The append's own output is its token, a constant zero: its gradient to the row
  // is zero when no read took the row (the reads' gradients are tested above).
  c.push_back({"feedback_memory_append: the token", {InputSpec({2, 3})},
               [](const Xs& x) {
                 FeedbackMemory m = feedback_memory(Tensor::empty({2, 2, 3}, x[0].dtype(), x[0].device()));
                 feedback_memory_append(m, x[0]);
                 return m.token;
               },
               [](const Rs&) { return Ref({1}); }});
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
  // Rows (forward) and batch items (backward) are split over threads; each keeps its
  // own order of summation, and the batch's shared gradients are summed in a fixed
  // order afterwards, so the results must be bit-identical.
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

// ---- FeedbackMemory ---------------------------------------------------------------------

TEST_CASE("feedback_memory_append: rows land in the buffer, the view shares it") {
  const Tensor buffer = Tensor::zeros({4, 2, 3}, DType::f64);
  FeedbackMemory m = feedback_memory(buffer);
  std::vector<Tensor> written;
  for (int64_t t = 0; t < 3; ++t) {
    written.push_back(random_f64({2, 3}, 40 + t));
    feedback_memory_append(m, written.back());
    CHECK(m.rows == t + 1);
    CHECK(m.view().shape() == Shape{t + 1, 2, 3});
    CHECK(m.view().same_storage(buffer));
    CHECK(m.view().offset() == buffer.offset());
  }
  CHECK(Ref::from(m.view()).v == Ref::from(stack(written, 0)).v);
  CHECK(Ref::from(narrow(buffer, 0, 3, 1)).v == std::vector<double>(6, 0.0));  // row 3 not written yet
}

namespace {

// A feedback transformer's reads in miniature: at step t two "layers" read the memory
// rows [0, t) with their own queries, then row t is appended, made by an op from the
// inputs. The reference reads stack(rows made so far) with the tensor form of
// feedback_attention, whose gradients the walker sums as ordinary tensors.
struct ManyReadsOptions {
  bool through_memory = true;
  int64_t pending_reads = 8;  // the memories' (feedback_memory's argument)
  bool one_memory = false;    // values read from the keys' memory (its rows are both)
  Tensor* filed = nullptr;    // receives the keys' memory's `filed` (undefined: it files nothing)
};

struct ManyReads {
  static constexpr int64_t L = 6, B = 2, H = 3, D = 4, R = 8, kLayers = 2;
  Xs inputs;  // {row sources [L, B, H, D], queries [L, 2, B, H, D], P, s, u}
  ManyReads() {
    inputs = {random_f64({L, B, H, D}, 60), random_f64({L, 2, B, H, D}, 61), random_f64({R, H, D}, 62, -0.5, 0.5),
              random_f64({R, H}, 63), random_f64({H, D}, 64, -0.5, 0.5)};
  }
  // Returns the loss; leaves[i] are the inputs as leaves requiring grad.
  static Tensor loss(const Xs& leaves, const ManyReadsOptions& o = {}) {
    const Tensor &sources = leaves[0], &queries = leaves[1], &P = leaves[2], &s = leaves[3], &u = leaves[4];
    const DType dtype = sources.dtype();
    FeedbackMemory keys = feedback_memory(Tensor::empty({L, B, H, D}, dtype), o.pending_reads);
    FeedbackMemory values = feedback_memory(Tensor::empty({L, B, H, D}, dtype), o.pending_reads);
    std::vector<Tensor> made_keys, made_values;
    Tensor total = Tensor::scalar(0.0, dtype);
    for (int64_t t = 0; t < L; ++t) {
      for (int64_t layer = 0; layer < kLayers && t > 0; ++layer) {
        const Tensor q = squeeze(narrow(squeeze(narrow(queries, 0, t, 1), 0), 0, layer, 1), 0);
        const Tensor out =
            o.through_memory
                ? feedback_attention(q, keys, o.one_memory ? keys : values, P, s, u, 0.5)
                : feedback_attention(q, stack(made_keys, 0), stack(o.one_memory ? made_keys : made_values, 0), P, s,
                                     u, 0.5);
        total = total + sum(out * out * static_cast<double>(layer + 1));
      }
      const Tensor source = squeeze(narrow(sources, 0, t, 1), 0);
      const Tensor k = tanh(source), v = source * source;
      made_keys.push_back(k);
      made_values.push_back(v);
      feedback_memory_append(keys, k);
      if (!o.one_memory) feedback_memory_append(values, v);
    }
    if (o.filed) *o.filed = keys.filed;
    return total;
  }
};

Xs leaves_of(const Xs& inputs, DType dtype = DType::f64) {
  Xs leaves;
  for (const Tensor& t : inputs) leaves.push_back(clone(t.to(dtype)).requires_grad_());
  return leaves;
}

std::vector<std::vector<double>> grads_of(const Xs& leaves) {
  std::vector<std::vector<double>> g;
  for (const Tensor& t : leaves) g.push_back(t.grad().to(DType::f64).to_vector<double>());  // exact for f32
  return g;
}

}  // namespace

TEST_CASE("FeedbackMemory: each row's gradient is the sum over every later read") {
  const ManyReads case_;
  const Xs with_memory = leaves_of(case_.inputs), with_stack = leaves_of(case_.inputs);
  const Tensor loss = ManyReads::loss(with_memory), ref_loss = ManyReads::loss(with_stack, {.through_memory = false});
  CHECK(loss.item() == doctest::Approx(ref_loss.item()).epsilon(1e-13));
  loss.backward();
  ref_loss.backward();
  const auto grads = grads_of(with_memory), ref_grads = grads_of(with_stack);
  for (size_t i = 0; i < grads.size(); ++i) {
    INFO("input ", i);
    CHECK(relative_difference(grads[i], ref_grads[i]) < 1e-12);
  }
  // The rows' gradients are not all zero: the check above compared something.
  CHECK(std::any_of(grads[0].begin(), grads[0].end(), [](double g) { return std::abs(g) > 1e-3; }));
}

// The reads of a step file their gradients' factors, and the append's node adds them
// together (engine/ops.h): the same multiply-adds in the same order as adding each read
// at once (pending_reads 0), so every bit of every gradient must match. Pending 1 is
// full at the step's second read, which adds the first one before filing itself; one
// memory read as both keys and values files two reads at once and cannot with room for 1.
TEST_CASE("FeedbackMemory: filing the reads' gradients changes no bit") {
  const ManyReads case_;
  const int64_t reads = (ManyReads::L - 1) * ManyReads::kLayers;
  for (DType dtype : {DType::f64, DType::f32})
    for (bool one_memory : {false, true}) {
      const std::string variant =
          std::string(dtype_name(dtype)) + (one_memory ? ", one memory for keys and values" : ", two memories");
      INFO(variant);
      // The reads the keys' memory filed, after the backward.
      auto filed_reads = [](const Tensor& filed) { return filed.defined() ? filed.to_vector<int64_t>()[2] : 0; };
      const Xs direct_leaves = leaves_of(case_.inputs, dtype);
      Tensor filed;
      ManyReads::loss(direct_leaves, {.pending_reads = 0, .one_memory = one_memory, .filed = &filed}).backward();
      CHECK(filed_reads(filed) == 0);
      const auto direct = grads_of(direct_leaves);
      for (int64_t pending : {1, 2, 8}) {
        INFO("pending_reads ", pending);
        const Xs leaves = leaves_of(case_.inputs, dtype);
        ManyReads::loss(leaves, {.pending_reads = pending, .one_memory = one_memory, .filed = &filed}).backward();
        CHECK(filed_reads(filed) == (one_memory ? (pending >= 2 ? 2 * reads : 0) : reads));
        const auto grads = grads_of(leaves);
        for (size_t i = 0; i < grads.size(); ++i) {
          INFO("input ", i);
          CHECK(grads[i] == direct[i]);
        }
      }
      // And the sums are right: against the stacked tensors' gradients, summed by the walker.
      if (dtype == DType::f64 && one_memory) {
        const Xs ref_leaves = leaves_of(case_.inputs);
        ManyReads::loss(ref_leaves, {.through_memory = false, .one_memory = true}).backward();
        const auto ref = grads_of(ref_leaves);
        for (size_t i = 0; i < ref.size(); ++i) CHECK(relative_difference(direct[i], ref[i]) < 1e-12);
      }
    }
}

TEST_CASE("FeedbackMemory: a retained graph's second backward adds the same gradients again") {
  const ManyReads case_;
  const Xs leaves = leaves_of(case_.inputs);
  const Tensor loss = ManyReads::loss(leaves);
  loss.backward(/*retain_graph=*/true);
  const auto first = grads_of(leaves);
  loss.backward();
  const auto twice = grads_of(leaves);
  for (size_t i = 0; i < first.size(); ++i) {
    INFO("input ", i);
    std::vector<double> doubled = first[i];
    for (double& g : doubled) g *= 2;
    CHECK(relative_difference(twice[i], doubled) < 1e-12);
  }
}

TEST_CASE("FeedbackMemory: no gradient is recorded without grad mode or grad inputs") {
  const Tensor row = Tensor::ones({3}).requires_grad_();
  {
    GradModeGuard no_grad(false);
    FeedbackMemory m = feedback_memory(Tensor::zeros({2, 3}));
    feedback_memory_append(m, row);
    CHECK_FALSE(m.token.requires_grad());
    CHECK_FALSE(m.grads.defined());
  }
  FeedbackMemory m = feedback_memory(Tensor::zeros({2, 3}));
  feedback_memory_append(m, Tensor::ones({3}));
  CHECK_FALSE(m.token.requires_grad());
  feedback_memory_append(m, row);
  CHECK(m.token.requires_grad());
  CHECK(m.grads.shape() == Shape{2, 3});
}

TEST_CASE("FeedbackMemory: errors name the memory, the row and the capacity") {
  FeedbackMemory m = feedback_memory(Tensor::zeros({2, 3}));
  feedback_memory_append(m, Tensor::ones({3}));
  feedback_memory_append(m, Tensor::ones({3}));
  std::string msg = error_of([&] { feedback_memory_append(m, Tensor::ones({3})); });
  CHECK(contains(msg, "feedback_memory_append"));
  CHECK(contains(msg, "is full (2 rows written, capacity 2)"));
  FeedbackMemory fresh = feedback_memory(Tensor::zeros({2, 3}));
  msg = error_of([&] { feedback_memory_append(fresh, Tensor::ones({4})); });
  CHECK(contains(msg, "row of shape [4]"));
  CHECK(contains(msg, "[2, 3]"));
  msg = error_of([&] { feedback_memory(Tensor::zeros({2, 3}).requires_grad_()); });
  CHECK(contains(msg, "must not require grad"));
  msg = error_of([&] { feedback_memory(transpose(Tensor::zeros({2, 3}), 0, 1)); });
  CHECK(contains(msg, "contiguous"));
  msg = error_of([&] { feedback_memory(Tensor::zeros({2, 3}), -1); });
  CHECK(contains(msg, "pending_reads must be >= 0"));
  FeedbackMemory unmade;
  msg = error_of([&] { feedback_memory_append(unmade, Tensor::ones({3})); });
  CHECK(contains(msg, "make the memory with feedback_memory"));
  // A read needs as many value rows as key rows.
  FeedbackMemory keys = feedback_memory(Tensor::zeros({3, 1, 1, 2}, DType::f64));
  FeedbackMemory values = feedback_memory(Tensor::zeros({3, 1, 1, 2}, DType::f64));
  feedback_memory_append(keys, Tensor::ones({1, 1, 2}, DType::f64));
  msg = error_of([&] {
    feedback_attention(Tensor::ones({1, 1, 2}, DType::f64), keys, values, Tensor::zeros({4, 1, 2}, DType::f64),
                       Tensor::zeros({4, 1}, DType::f64), Tensor::zeros({1, 2}, DType::f64), 1.0);
  });
  CHECK(contains(msg, "the keys' memory has 1 rows but the values' has 0"));
}

}  // namespace loom::test
