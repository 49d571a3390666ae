// test_retrieval.cpp: the associative-retrieval generator (datasets/) and the
// retrieval model (models/programs/retrieval.h): the model's composition of engine ops
// against a naive per-step loop in double, its float64 gradients against finite
// differences, and the loss's reference point.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "autodiff/grad_mode.h"
#include "autodiff/gradcheck.h"
#include "datasets/associative_retrieval.h"
#include "engine/ops.h"
#include "models/programs/retrieval.h"
#include "tests/test_util.h"

namespace loom::test {

namespace {

using datasets::AssociativeRetrieval;
using datasets::RetrievalBatch;
using datasets::RetrievalSetting;

std::vector<int64_t> row(const std::vector<int64_t>& v, int64_t r, int64_t width) {
  return {v.begin() + r * width, v.begin() + (r + 1) * width};
}

bool same_batch(const RetrievalBatch& a, const RetrievalBatch& b) {
  return a.keys == b.keys && a.values == b.values && a.query_keys == b.query_keys && a.targets == b.targets &&
         a.query_mask == b.query_mask;
}

// The answer by a forward scan: later pairs overwrite earlier ones.
std::map<int64_t, int64_t> final_bindings(const std::vector<int64_t>& keys, const std::vector<int64_t>& values) {
  std::map<int64_t, int64_t> m;
  for (size_t i = 0; i < keys.size(); ++i) m[keys[i]] = values[i];
  return m;
}

}  // namespace

TEST_CASE("associative retrieval, setting 1: keys and values are permutations, the target is the query's value") {
  const int64_t S = 23;
  const AssociativeRetrieval data(S, RetrievalSetting::capacity, 5);
  const RetrievalBatch b = data.training_batch(16, 3);
  REQUIRE(b.length == S);
  REQUIRE(b.queries == 1);
  std::vector<int64_t> all(S);
  std::iota(all.begin(), all.end(), 0);
  for (int64_t s = 0; s < b.batch; ++s) {
    std::vector<int64_t> k = row(b.keys, s, S), v = row(b.values, s, S);
    const std::map<int64_t, int64_t> binding = final_bindings(k, v);
    std::sort(k.begin(), k.end());
    std::sort(v.begin(), v.end());
    CHECK(k == all);
    CHECK(v == all);
    CHECK(b.targets[s] == binding.at(b.query_keys[s]));
    CHECK(b.query_mask[s] == 1.0);
  }
  // Not the identity: the pairing changes from sequence to sequence.
  CHECK(row(b.values, 0, S) != row(b.values, 1, S));
}

TEST_CASE("associative retrieval, setting 2: 2S pairs with repeats, the target is the value at the last occurrence") {
  const int64_t S = 7;
  const AssociativeRetrieval data(S, RetrievalSetting::editing, 11);
  const RetrievalBatch b = data.training_batch(64, 0);
  REQUIRE(b.length == 2 * S);
  int64_t overwritten = 0;  // queries whose key was bound to two different values
  for (int64_t s = 0; s < b.batch; ++s) {
    const std::vector<int64_t> k = row(b.keys, s, b.length), v = row(b.values, s, b.length);
    for (int64_t x : k) CHECK((x >= 0 && x < S));
    for (int64_t x : v) CHECK((x >= 0 && x < S));
    const std::map<int64_t, int64_t> binding = final_bindings(k, v);
    REQUIRE(binding.count(b.query_keys[s]));
    CHECK(b.targets[s] == binding.at(b.query_keys[s]));
    for (size_t i = 0; i < k.size(); ++i)
      if (k[i] == b.query_keys[s] && v[i] != b.targets[s]) {
        ++overwritten;
        break;
      }
  }
  // With 14 pairs over 7 keys most queried keys recur; many with another value first.
  CHECK(overwritten > 10);
}

TEST_CASE("associative retrieval: batches are a function of (seed, index) only") {
  for (RetrievalSetting setting : {RetrievalSetting::capacity, RetrievalSetting::editing}) {
    const AssociativeRetrieval a(17, setting, 1), again(17, setting, 1), other_seed(17, setting, 2);
    const RetrievalBatch first = a.training_batch(8, 42);
    a.training_batch(8, 43);  // drawing other batches in between changes nothing
    CHECK(same_batch(a.training_batch(8, 42), first));
    CHECK(same_batch(again.training_batch(8, 42), first));
    CHECK(!same_batch(a.training_batch(8, 41), first));
    CHECK(!same_batch(other_seed.training_batch(8, 42), first));
    CHECK(same_batch(a.evaluation_batch(3, 200, 1), again.evaluation_batch(3, 200, 1)));
    CHECK(!same_batch(a.evaluation_batch(3, 200, 1), a.evaluation_batch(3, 200, 2)));
  }
}

TEST_CASE("associative retrieval: evaluation queries every distinct key once, in order, up to max_queries") {
  const int64_t S = 9;
  const AssociativeRetrieval data(S, RetrievalSetting::editing, 3);
  const RetrievalBatch b = data.evaluation_batch(5, 200, 0);
  REQUIRE(b.length == 2 * S);
  int64_t widest = 0;
  for (int64_t s = 0; s < b.batch; ++s) {
    const std::vector<int64_t> k = row(b.keys, s, b.length), v = row(b.values, s, b.length);
    const std::map<int64_t, int64_t> binding = final_bindings(k, v);  // sorted by key
    std::vector<int64_t> expected_queries, expected_targets;
    for (const auto& [key, value] : binding) expected_queries.push_back(key), expected_targets.push_back(value);
    const int64_t n = static_cast<int64_t>(binding.size());
    widest = std::max(widest, n);
    for (int64_t j = 0; j < b.queries; ++j) {
      const int64_t at = s * b.queries + j;
      if (j < n) {
        CHECK(b.query_mask[at] == 1.0);
        CHECK(b.query_keys[at] == expected_queries[j]);
        CHECK(b.targets[at] == expected_targets[j]);
      } else {
        CHECK(b.query_mask[at] == 0.0);
      }
    }
  }
  CHECK(b.queries == widest);

  // Setting 1 with a cap: the smallest keys, as many as allowed; a shorter length on request.
  const AssociativeRetrieval cap(30, RetrievalSetting::capacity, 3);
  const RetrievalBatch c = cap.evaluation_batch(2, 12, 0);
  REQUIRE(c.queries == 12);
  for (int64_t j = 0; j < 12; ++j) CHECK(c.query_keys[j] == j);
  CHECK(AssociativeRetrieval(6, RetrievalSetting::editing, 1).evaluation_batch(2, 200, 0, 6).length == 6);
}

TEST_CASE("associative retrieval: bad arguments are errors that say what is wrong") {
  check_mentions(error_of([] { AssociativeRetrieval(0, RetrievalSetting::capacity, 1); }), {"number of keys", "0"});
  const AssociativeRetrieval data(5, RetrievalSetting::capacity, 1);
  check_mentions(error_of([&] { data.training_batch(0, 0); }), {"batch size"});
  check_mentions(error_of([&] { data.evaluation_batch(1, 10, 0, 8); }), {"capacity", "8 pairs"});
}

// ---- the model -------------------------------------------------------------------------

namespace {

struct Params {
  std::vector<double> E, Wk, bk, Wq, bq, Wb, bb, omega;
};

Params params_of(const models::RetrievalModel& m) {
  Params p;
  const auto v = [](const Tensor& t) { return cast(t, DType::f64).to_vector<double>(); };
  p.E = v(m.key_embedding.weight);
  p.Wk = v(m.key.weight);
  p.bk = v(m.key.bias);
  p.Wq = v(m.query.weight);
  p.bq = v(m.query.bias);
  if (m.beta) p.Wb = v(m.beta->weight), p.bb = v(m.beta->bias);
  if (m.favor_projection.defined()) p.omega = v(m.favor_projection);
  return p;
}

// φ of one vector, straight from the definitions.
std::vector<double> naive_features(const models::RetrievalModelConfig& c, const std::vector<double>& x,
                                   const std::vector<double>& omega) {
  const int64_t d = static_cast<int64_t>(x.size());
  std::vector<double> f;
  switch (c.feature_map) {
    case models::RetrievalFeatureMap::softmax: return x;
    case models::RetrievalFeatureMap::linear:
      for (double a : x) f.push_back(a > 0 ? a + 1 : std::exp(a));
      return f;
    case models::RetrievalFeatureMap::dpfp: {
      std::vector<double> r(2 * d);
      for (int64_t j = 0; j < d; ++j) r[j] = std::max(x[j], 0.0), r[d + j] = std::max(-x[j], 0.0);
      for (int64_t i = 1; i <= c.feature_arg; ++i)
        for (int64_t j = 0; j < 2 * d; ++j) f.push_back(r[j] * r[((j - i) % (2 * d) + 2 * d) % (2 * d)]);
      return f;
    }
    case models::RetrievalFeatureMap::favor: {
      const int64_t m = c.feature_arg;
      double sq = 0;
      for (double a : x) sq += a * a;
      const double offset = sq / 2 + std::log(2.0 * m) / 2;
      std::vector<double> u(m, 0.0);
      for (int64_t j = 0; j < m; ++j)
        for (int64_t a = 0; a < d; ++a) u[j] += x[a] * omega[a * m + j];
      for (int64_t j = 0; j < m; ++j) f.push_back(std::exp(u[j] - offset));
      for (int64_t j = 0; j < m; ++j) f.push_back(std::exp(-u[j] - offset));
      return f;
    }
  }
  return f;
}

// ŷ [B, Q, S] by the definitions of retrieval.h: explicit one-hot inputs, explicit
// fast weight matrices, one time step after the other.
std::vector<double> naive_forward(const models::RetrievalModel& m, const Params& p, const RetrievalBatch& b) {
  const models::RetrievalModelConfig& c = m.config;
  const int64_t S = c.num_keys, e = m.embedding_dim, d = c.hidden, in = S + e;
  std::vector<double> out;
  for (int64_t s = 0; s < b.batch; ++s) {
    std::vector<std::vector<double>> ks, vs;
    std::vector<double> betas;
    for (int64_t i = 0; i < b.length; ++i) {
      std::vector<double> x(in, 0.0);
      x[b.values[s * b.length + i]] = 1.0;
      for (int64_t a = 0; a < e; ++a) x[S + a] = p.E[b.keys[s * b.length + i] * e + a];
      std::vector<double> k(d);
      for (int64_t r = 0; r < d; ++r) {
        k[r] = p.bk[r];
        for (int64_t a = 0; a < in; ++a) k[r] += p.Wk[r * in + a] * x[a];
      }
      ks.push_back(k);
      vs.push_back(std::vector<double>(x.begin(), x.begin() + S));
      if (!p.Wb.empty()) {
        double z = p.bb[0];
        for (int64_t a = 0; a < in; ++a) z += p.Wb[a] * x[a];
        betas.push_back(1 / (1 + std::exp(-z)));
      }
    }
    for (int64_t j = 0; j < b.queries; ++j) {
      std::vector<double> q(d);
      for (int64_t r = 0; r < d; ++r) {
        q[r] = p.bq[r];
        for (int64_t a = 0; a < e; ++a) q[r] += p.Wq[r * e + a] * p.E[b.query_keys[s * b.queries + j] * e + a];
      }
      std::vector<double> y(S, 0.0);
      if (c.feature_map == models::RetrievalFeatureMap::softmax) {
        std::vector<double> score(b.length);
        double mx = -INFINITY, total = 0;
        for (int64_t i = 0; i < b.length; ++i) {
          score[i] = 0;
          for (int64_t r = 0; r < d; ++r) score[i] += ks[i][r] * q[r] / std::sqrt(double(d));
          mx = std::max(mx, score[i]);
        }
        for (double& x : score) total += (x = std::exp(x - mx));
        for (int64_t i = 0; i < b.length; ++i)
          for (int64_t v = 0; v < S; ++v) y[v] += score[i] / total * vs[i][v];
      } else {
        const std::vector<double> fq = naive_features(c, q, p.omega);
        const size_t P = fq.size();
        std::vector<std::vector<double>> W(S, std::vector<double>(P, 0.0));
        if (c.rule == models::RetrievalRule::sum) {
          std::vector<double> z(P, 0.0);
          for (int64_t i = 0; i < b.length; ++i) {
            const std::vector<double> fk = naive_features(c, ks[i], p.omega);
            for (int64_t v = 0; v < S; ++v)
              for (size_t a = 0; a < P; ++a) W[v][a] += vs[i][v] * fk[a];
            for (size_t a = 0; a < P; ++a) z[a] += fk[a];
          }
          double den = 1e-6;
          for (size_t a = 0; a < P; ++a) den += z[a] * fq[a];
          for (int64_t v = 0; v < S; ++v)
            for (size_t a = 0; a < P; ++a) y[v] += W[v][a] * fq[a] / den;
        } else {
          for (int64_t i = 0; i < b.length; ++i) {
            std::vector<double> fk = naive_features(c, ks[i], p.omega);
            const double n = std::accumulate(fk.begin(), fk.end(), 0.0) + 1e-6;
            for (double& x : fk) x /= n;
            for (int64_t v = 0; v < S; ++v) {
              double vbar = 0;
              for (size_t a = 0; a < P; ++a) vbar += W[v][a] * fk[a];
              for (size_t a = 0; a < P; ++a) W[v][a] += betas[i] * (vs[i][v] - vbar) * fk[a];
            }
          }
          const double n = std::accumulate(fq.begin(), fq.end(), 0.0) + 1e-6;
          for (int64_t v = 0; v < S; ++v)
            for (size_t a = 0; a < P; ++a) y[v] += W[v][a] * fq[a] / n;
        }
      }
      out.insert(out.end(), y.begin(), y.end());
    }
  }
  return out;
}

const char* const kModels[][2] = {{"softmax", "sum"}, {"linear", "sum"}, {"dpfp1", "sum"},   {"dpfp3", "sum"},
                                  {"favor6", "sum"},  {"linear", "delta"}, {"dpfp2", "delta"}, {"favor6", "delta"}};

models::RetrievalModelConfig tiny(const char* phi, const char* rule, int64_t S, int64_t hidden) {
  models::RetrievalModelConfig c;
  c.num_keys = S;
  c.hidden = hidden;
  c.seed = 7;
  models::parse_retrieval_model(phi, rule, c);
  return c;
}

double max_relative_gap(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double gap = 0, scale = 1e-12;
  for (size_t i = 0; i < got.size(); ++i) gap = std::max(gap, std::abs(got[i] - want[i]));
  for (double w : want) scale = std::max(scale, std::abs(w));
  return std::isnan(gap) ? INFINITY : gap / scale;
}

}  // namespace

TEST_CASE("retrieval model: the composition of engine ops equals a naive per-step loop (float64)") {
  const int64_t S = 5;
  const AssociativeRetrieval data(S, RetrievalSetting::editing, 2);  // repeats: the delta rule overwrites
  for (const auto& [phi, rule] : kModels) {
    const std::string name = std::string(phi) + "/" + rule;
    CAPTURE(name);
    models::RetrievalModel model(tiny(phi, rule, S, 4));
    model.to(DType::f64);
    // One query per sequence (the differentiable training path) and every distinct key (evaluation).
    for (const RetrievalBatch& b : {data.training_batch(3, 0), data.evaluation_batch(3, 200, 0)}) {
      const models::RetrievalTensors t = models::to_tensors(b, DType::f64, Device::cpu);
      std::vector<double> got;
      if (b.queries == 1) {
        got = model.forward(t.keys, t.values, t.queries).to_vector<double>();
      } else {
        NoGradGuard no_grad;
        got = model.forward(t.keys, t.values, t.queries).to_vector<double>();
      }
      const double gap = max_relative_gap(got, naive_forward(model, params_of(model), b));
      CAPTURE(b.queries);
      CHECK(gap < 1e-12);
    }
  }
}

TEST_CASE("retrieval model: float64 gradients of the loss match finite differences") {
  const int64_t S = 4;
  const AssociativeRetrieval data(S, RetrievalSetting::editing, 9);
  const models::RetrievalTensors t = models::to_tensors(data.training_batch(3, 1), DType::f64, Device::cpu);
  for (const auto& [phi, rule] : kModels) {
    const std::string name = std::string(phi) + "/" + rule;
    CAPTURE(name);
    models::RetrievalModel model(tiny(phi, rule, S, 3));
    model.to(DType::f64);
    model.redraw_favor = false;  // one projection for every evaluation of the loss
    const auto loss = [&](const std::vector<Tensor>&) {
      return models::retrieval_loss(model.forward(t.keys, t.values, t.queries), t.targets, t.mask);
    };
    std::vector<Tensor> checked;
    for (const Tensor& p : model.parameters())
      // Softmax is blind to a shift of all scores: the key bias's true gradient is 0,
      // which relative finite differences cannot confirm (the checker sees only noise).
      if (!(name == "softmax/sum" && p.impl_ptr() == model.key.bias.impl_ptr())) checked.push_back(p);
    const autodiff::GradcheckResult r = autodiff::gradcheck(loss, checked);
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("retrieval evaluation: FAVOR+ draws one projection per chunk of a sequence's queries, as the authors") {
  // The authors' evaluation loop (synthetic/main.py): for each sequence, for each
  // chunk of at most batch_size of its queries, one forward, which draws a fresh
  // projection. A twin model (same seed, so the same projections in the same
  // order) run through that loop by hand is the reference; one projection per
  // evaluation, or one per chunk across all sequences, gives other predictions.
  const int64_t S = 5, chunk = 2;
  for (const char* rule : {"sum", "delta"}) {
    CAPTURE(rule);
    for (const RetrievalSetting setting : {RetrievalSetting::capacity, RetrievalSetting::editing}) {
      const RetrievalBatch b = AssociativeRetrieval(S, setting, 4).evaluation_batch(3, 200, 0);
      const models::RetrievalTensors t = models::to_tensors(b, DType::f64, Device::cpu);
      models::RetrievalModel model(tiny("favor6", rule, S, 4)), twin(tiny("favor6", rule, S, 4));
      model.to(DType::f64);
      twin.to(DType::f64);
      NoGradGuard no_grad;
      const std::vector<double> got = models::evaluation_predictions(model, t, chunk).to_vector<double>();
      std::vector<double> want(b.batch * b.queries * S, 0.0);  // padded queries predict zeros
      int64_t chunks = 0;
      for (int64_t s = 0; s < b.batch; ++s) {
        const int64_t real = static_cast<int64_t>(std::count(b.query_mask.begin() + s * b.queries,
                                                             b.query_mask.begin() + (s + 1) * b.queries, 1.0));
        for (int64_t start = 0; start < real; start += chunk, ++chunks) {
          const int64_t n = std::min(chunk, real - start);
          const std::vector<int64_t> q(b.query_keys.begin() + s * b.queries + start,
                                       b.query_keys.begin() + s * b.queries + start + n);
          const std::vector<double> y =
              twin.forward(Tensor::from_vector(row(b.keys, s, b.length), {1, b.length}),
                           Tensor::from_vector(row(b.values, s, b.length), {1, b.length}),
                           Tensor::from_vector(q, {1, n}))
                  .to_vector<double>();
          std::copy(y.begin(), y.end(), want.begin() + (s * b.queries + start) * S);
        }
      }
      CHECK(chunks > b.batch);  // several chunks per sequence, so the draws matter
      CHECK(max_relative_gap(got, want) < 1e-12);
    }
  }
}

TEST_CASE("retrieval loss: 0.5 for an all-zero prediction; padded queries do not count") {
  const Tensor targets = Tensor::from_vector<int64_t>({2, 0, 1, 3, 3, 0}, {2, 3});
  const Tensor zeros = Tensor::zeros({2, 3, 4}, DType::f64);
  CHECK(models::retrieval_loss(zeros, targets, Tensor::ones({2, 3}, DType::f64)).item() == doctest::Approx(0.5));
  // The exact answer costs nothing; a padded query with a wild prediction is ignored.
  std::vector<double> exact(24, 0.0);
  const std::vector<int64_t> tv = targets.to_vector<int64_t>();
  for (int64_t i = 0; i < 6; ++i) exact[i * 4 + tv[i]] = 1.0;
  exact[5 * 4 + 1] = 100.0;  // query 5 is padding
  const Tensor mask = Tensor::from_vector<double>({1, 1, 1, 1, 1, 0}, {2, 3});
  CHECK(models::retrieval_loss(Tensor::from_vector(exact, {2, 3, 4}), targets, mask).item() == 0.0);
  // One wrong answer among five: ½(1 + 1) / 5.
  exact[0 * 4 + 2] = 0.0, exact[0 * 4 + 1] = 1.0;
  CHECK(models::retrieval_loss(Tensor::from_vector(exact, {2, 3, 4}), targets, mask).item() ==
        doctest::Approx(0.2));
}

TEST_CASE("retrieval model: errors name the problem") {
  models::RetrievalModelConfig c;
  check_mentions(error_of([&] { models::parse_retrieval_model("dpfpx", "sum", c); }), {"dpfpx", "feature map"});
  check_mentions(error_of([&] { models::parse_retrieval_model("linear", "gated", c); }), {"gated", "rule"});
  check_mentions(error_of([&] { models::parse_retrieval_model("softmax", "delta", c); }), {"softmax", "delta"});
  models::RetrievalModel model(tiny("dpfp1", "delta", 4, 3));
  const models::RetrievalTensors t = models::to_tensors(
      AssociativeRetrieval(4, RetrievalSetting::capacity, 1).evaluation_batch(2, 200, 0), DType::f32, Device::cpu);
  check_mentions(error_of([&] { model.forward(t.keys, t.values, t.queries); }), {"evaluation only", "queries"});
}

}  // namespace loom::test
