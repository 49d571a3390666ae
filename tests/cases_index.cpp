// cases_index.cpp: op-table cases for embedding, index_select and gather, and
// doctest cases for their errors and for the accumulating backward kernels
// (index_add, scatter_add) on inputs large enough to run on several threads.
//
// The references index Ref arrays with plain multi-index arithmetic. Ids come
// from InputSpec::indices(bound); cases with more ids than `bound` are certain
// to repeat ids, so their gradient checks cover accumulation of duplicates.
#include <doctest/doctest.h>

#include <random>
#include <string>

#include "tests/test_util.h"
#include "engine/ops.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

int64_t id_at(const Ref& ids, int64_t i) { return static_cast<int64_t>(ids.v[i]); }

// out[i..., d] = weight[ids[i...], d]
Ref embedding_ref(const Ref& weight, const Ref& ids) {
  const int64_t D = weight.shape[1];
  Shape shape = ids.shape;
  shape.push_back(D);
  Ref out(shape);
  for (int64_t i = 0; i < ids.numel(); ++i)
    for (int64_t d = 0; d < D; ++d) out.v[i * D + d] = weight.at({id_at(ids, i), d});
  return out;
}

// out[.., i, ..] = x[.., ids[i], ..] along axis
Ref index_select_ref(const Ref& x, int64_t axis, const Ref& ids) {
  Shape shape = x.shape;
  shape[axis] = ids.numel();
  Ref out(shape);
  for (int64_t k = 0; k < out.numel(); ++k) {
    auto index = out.unflat(k);
    index[axis] = id_at(ids, index[axis]);
    out.v[k] = x.at(index);
  }
  return out;
}

// out[p] = x[p with p[axis] replaced by ids[p]]
Ref gather_ref(const Ref& x, int64_t axis, const Ref& ids) {
  Ref out(ids.shape);
  for (int64_t k = 0; k < out.numel(); ++k) {
    auto index = out.unflat(k);
    index[axis] = id_at(ids, k);
    out.v[k] = x.at(index);
  }
  return out;
}

void add_index_select(std::vector<OpCase>& c, const std::string& name, InputSpec x, int64_t axis, int64_t n_ids) {
  const int64_t ndim = static_cast<int64_t>(x.shape.size());
  const int64_t a = axis < 0 ? axis + ndim : axis;
  const int64_t bound = x.shape[a];
  c.push_back({name, {x, InputSpec({n_ids}).indices(bound)},
               [axis](const Xs& t) { return index_select(t[0], axis, t[1]); },
               [a](const Rs& r) { return index_select_ref(r[0], a, r[1]); }});
}

void add_gather(std::vector<OpCase>& c, const std::string& name, InputSpec x, int64_t axis, InputSpec ids) {
  const int64_t ndim = static_cast<int64_t>(x.shape.size());
  const int64_t a = axis < 0 ? axis + ndim : axis;
  ids.indices(x.shape[a]);
  c.push_back({name, {x, ids}, [axis](const Xs& t) { return gather(t[0], axis, t[1]); },
               [a](const Rs& r) { return gather_ref(r[0], a, r[1]); }});
}

}  // namespace

static CaseRegistrar embedding_cases([](std::vector<OpCase>& c) {
  auto run = [](const Xs& x) { return embedding(x[0], x[1]); };
  auto ref = [](const Rs& r) { return embedding_ref(r[0], r[1]); };
  c.push_back({"embedding 2-D ids [2,3] from [7,4]",
               {InputSpec({7, 4}), InputSpec({2, 3}).indices(7)}, run, ref});
  // 12 ids drawn from 3 rows: rows repeat, and their gradients must add up.
  c.push_back({"embedding repeated ids [3,4] from [3,5]",
               {InputSpec({3, 5}), InputSpec({3, 4}).indices(3)}, run, ref});
  c.push_back({"embedding fixed ids, row 2 three times, row 4 never", {InputSpec({5, 3})},
               [](const Xs& x) {
                 const Tensor ids = Tensor::from_vector(std::vector<int64_t>{2, 0, 2, 3, 2, 1}, {3, 2});
                 return embedding(x[0], ids.to(x[0].device()));  // on the GPU too (tests/test_cuda.cpp)
               },
               [](const Rs& r) {
                 Ref ids({3, 2});
                 ids.v = {2, 0, 2, 3, 2, 1};
                 return embedding_ref(r[0], ids);
               }});
  c.push_back({"embedding 1-D ids, transposed weight",
               {InputSpec({6, 4}).transposed(), InputSpec({5}).indices(6)}, run, ref});
  c.push_back({"embedding scalar id", {InputSpec({4, 3}), InputSpec({}).indices(4)}, run, ref});
  c.push_back({"embedding no ids [0]", {InputSpec({4, 3}), InputSpec({0}).indices(4)}, run, ref});
});

static CaseRegistrar index_select_cases([](std::vector<OpCase>& c) {
  add_index_select(c, "index_select axis 0, repeated ids", InputSpec({5, 3}), 0, 7);
  add_index_select(c, "index_select middle axis of [2,5,3]", InputSpec({2, 5, 3}), 1, 4);
  add_index_select(c, "index_select last axis (-1)", InputSpec({3, 4}), -1, 6);
  add_index_select(c, "index_select axis 0 of a transposed input", InputSpec({4, 6}).transposed(), 0, 5);
  add_index_select(c, "index_select axis 1 of a transposed input", InputSpec({4, 6}).transposed(), 1, 8);
  add_index_select(c, "index_select middle axis of a strided input", InputSpec({2, 3, 4}).strided(), 1, 5);
});

static CaseRegistrar gather_cases([](std::vector<OpCase>& c) {
  add_gather(c, "gather axis 0, more ids than rows", InputSpec({4, 3}), 0, InputSpec({6, 3}));
  add_gather(c, "gather axis 0, ids narrower than x", InputSpec({4, 5}), 0, InputSpec({3, 2}));
  add_gather(c, "gather last axis (cross-entropy pick)", InputSpec({5, 6}), -1, InputSpec({5, 1}));
  add_gather(c, "gather last axis, repeated ids", InputSpec({3, 4}), 1, InputSpec({3, 7}));
  add_gather(c, "gather middle axis of [2,4,3]", InputSpec({2, 4, 3}), 1, InputSpec({2, 6, 3}));
  add_gather(c, "gather last axis of a transposed input", InputSpec({2, 3, 5}).transposed(), -1,
             InputSpec({2, 3, 4}));
  add_gather(c, "gather axis 0 with transposed ids", InputSpec({4, 5}), 0, InputSpec({6, 5}).transposed());
  add_gather(c, "gather last axis of a strided input", InputSpec({3, 4}).strided(), 1, InputSpec({2, 5}));
});

// ---- errors ------------------------------------------------------------------------------

namespace {

Tensor ids_of(std::vector<int64_t> v, Shape shape) { return Tensor::from_vector(v, shape); }
Tensor ids_of(std::vector<int64_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return Tensor::from_vector(v, {n});
}

}  // namespace

TEST_CASE("index errors: an out-of-range id names the op, the id, its position and the valid range") {
  const Tensor w = Tensor::zeros({10, 4});
  check_mentions(error_of([&] { embedding(w, ids_of({1, 3, 2, 12, 0, 5}, {2, 3})); }),
                 {"embedding", "index 12", "position [1, 0]", "0 <= id < 10", "[10, 4]"});
  check_mentions(error_of([&] { embedding(w, ids_of({-3, 1})); }), {"embedding", "index -3", "position [0]"});

  const Tensor x = Tensor::zeros({4, 2});
  check_mentions(error_of([&] { index_select(x, 0, ids_of({0, 3, -1})); }),
                 {"index_select", "index -1", "position [2]", "axis 0", "0 <= id < 4"});
  check_mentions(error_of([&] { index_select(x, 1, ids_of({2})); }),
                 {"index_select", "index 2", "position [0]", "axis 1", "0 <= id < 2"});

  const Tensor y = Tensor::zeros({3, 5});
  check_mentions(error_of([&] { gather(y, 1, ids_of({0, 1, 4, 5}, {2, 2})); }),
                 {"gather", "index 5", "position [1, 1]", "axis 1", "0 <= id < 5"});
  check_mentions(error_of([&] { gather(y, -2, ids_of({0, -7}, {1, 2})); }),
                 {"gather", "index -7", "position [0, 1]", "axis 0", "0 <= id < 3"});
  // Nothing is valid along an empty axis.
  check_mentions(error_of([&] { embedding(Tensor::zeros({0, 3}), ids_of({0})); }), {"embedding", "index 0", "empty"});
}

TEST_CASE("index errors: ids must be int64") {
  const Tensor w = Tensor::zeros({5, 2});
  check_mentions(error_of([&] { embedding(w, Tensor::zeros({3}, DType::f32)); }), {"embedding", "int64", "float32"});
  check_mentions(error_of([&] { index_select(w, 0, Tensor::zeros({2}, DType::f64)); }),
                 {"index_select", "int64", "float64"});
  check_mentions(error_of([&] { gather(w, 1, Tensor::zeros({5, 1}, DType::f32)); }), {"gather", "int64", "float32"});
  check_mentions(error_of([&] { embedding(w, Tensor()); }), {"embedding", "undefined"});
}

TEST_CASE("index errors: bad axis, rank and shapes") {
  const Tensor x = Tensor::zeros({2, 3});
  check_mentions(error_of([&] { index_select(x, 2, ids_of({0})); }), {"index_select", "axis 2"});
  check_mentions(error_of([&] { gather(x, -3, ids_of({0}, {1, 1})); }), {"gather", "axis -3"});
  check_mentions(error_of([&] { index_select(x, 0, ids_of({0, 1}, {1, 2})); }), {"index_select", "1-D", "[1, 2]"});
  check_mentions(error_of([&] { gather(x, 0, ids_of({0, 1})); }), {"gather", "rank", "[2]"});
  check_mentions(error_of([&] { gather(x, 0, ids_of({0, 0, 0, 0}, {1, 4})); }),
                 {"gather", "[1, 4]", "[2, 3]", "dim 1"});
  check_mentions(error_of([&] { embedding(Tensor::zeros({2, 3, 4}), ids_of({0})); }), {"embedding", "2-D", "[2, 3, 4]"});
  check_mentions(error_of([&] { embedding(Tensor::zeros({4, 3}, DType::i64), ids_of({0})); }),
                 {"embedding", "floating-point", "int64"});
}

// ---- kernels beyond the op table --------------------------------------------------------

TEST_CASE("index_select and gather copy int64 tensors too") {
  const Tensor x = Tensor::from_vector(std::vector<int64_t>{10, 11, 12, 20, 21, 22}, {2, 3});
  CHECK(index_select(x, 1, ids_of({2, 0, 2})).to_vector<int64_t>() == std::vector<int64_t>{12, 10, 12, 22, 20, 22});
  CHECK(gather(x, 0, ids_of({1, 0, 1}, {1, 3})).to_vector<int64_t>() == std::vector<int64_t>{20, 11, 22});
}

namespace {

Tensor random_f64(const Shape& shape, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(shape_numel(shape));
  for (auto& x : v) x = u(rng);
  return Tensor::from_vector(v, shape);
}

Tensor random_ids(const Shape& shape, int64_t bound, std::mt19937_64& rng) {
  std::uniform_int_distribution<int64_t> pick(0, bound - 1);
  std::vector<int64_t> v(shape_numel(shape));
  for (auto& x : v) x = pick(rng);
  return Tensor::from_vector(v, shape);
}

// Largest |a - b| over two same-shape tensors.
double max_diff(const Ref& a, const Ref& b) {
  REQUIRE(a.shape == b.shape);
  double m = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.v[i] - b.v[i]));
  return m;
}

}  // namespace

// Sizes well above the parallel threshold, with every id repeated hundreds of
// times: the accumulating kernels must give the serial sums under threads.
TEST_CASE("index backward accumulates many repeated ids on several threads") {
  std::mt19937_64 rng(7);

  SUBCASE("embedding: 4096 ids into 10 rows of 256 (split over columns)") {
    const Tensor w = random_f64({10, 256}, rng).requires_grad_();
    const Tensor ids = random_ids({64, 64}, 10, rng);
    const Tensor g = random_f64({64, 64, 256}, rng);
    embedding(w, ids).backward(g);
    const Ref gi = Ref::from(ids), gg = Ref::from(g);
    Ref expected({10, 256});
    for (int64_t i = 0; i < gi.numel(); ++i)
      for (int64_t d = 0; d < 256; ++d) expected.at({id_at(gi, i), d}) += gg.v[i * 256 + d];
    CHECK(max_diff(Ref::from(w.grad()), expected) < 1e-10);
  }

  SUBCASE("index_select middle axis: 2000 ids from 10 (split over columns per outer)") {
    const Tensor x = random_f64({4, 10, 64}, rng).requires_grad_();
    const Tensor ids = random_ids({2000}, 10, rng);
    const Tensor g = random_f64({4, 2000, 64}, rng);
    index_select(x, 1, ids).backward(g);
    const Ref gi = Ref::from(ids), gg = Ref::from(g);
    Ref expected({4, 10, 64});
    for (int64_t o = 0; o < 4; ++o)
      for (int64_t i = 0; i < 2000; ++i)
        for (int64_t j = 0; j < 64; ++j) expected.at({o, id_at(gi, i), j}) += gg.at({o, i, j});
    CHECK(max_diff(Ref::from(x.grad()), expected) < 1e-10);
  }

  SUBCASE("gather last axis: [2048, 64] ids into 8 classes (split over rows)") {
    const Tensor x = random_f64({2048, 8}, rng).requires_grad_();
    const Tensor ids = random_ids({2048, 64}, 8, rng);
    const Tensor g = random_f64({2048, 64}, rng);
    const Tensor out = gather(x, 1, ids);
    const Ref rx = Ref::from(x), gi = Ref::from(ids), gg = Ref::from(g);
    CHECK(max_diff(Ref::from(out), gather_ref(rx, 1, gi)) == 0.0);
    out.backward(g);
    Ref expected({2048, 8});
    for (int64_t r = 0; r < 2048; ++r)
      for (int64_t j = 0; j < 64; ++j) expected.at({r, id_at(gi, r * 64 + j)}) += gg.at({r, j});
    CHECK(max_diff(Ref::from(x.grad()), expected) < 1e-10);
  }

  SUBCASE("gather axis 0 of a transposed x: [4000, 300] ids into 8 rows (split over columns)") {
    const Tensor base = random_f64({300, 8}, rng).requires_grad_();
    const Tensor x = transpose(base, 0, 1);  // [8, 300], strided
    const Tensor ids = random_ids({4000, 300}, 8, rng);
    const Tensor g = random_f64({4000, 300}, rng);
    const Tensor out = gather(x, 0, ids);
    const Ref rx = Ref::from(x), gi = Ref::from(ids), gg = Ref::from(g);
    CHECK(max_diff(Ref::from(out), gather_ref(rx, 0, gi)) == 0.0);
    out.backward(g);
    Ref expected({300, 8});  // the gradient of base, i.e. transposed
    for (int64_t i = 0; i < 4000; ++i)
      for (int64_t j = 0; j < 300; ++j) expected.at({j, id_at(gi, i * 300 + j)}) += gg.at({i, j});
    CHECK(max_diff(Ref::from(base.grad()), expected) < 1e-10);
  }
}

}  // namespace loom::test
