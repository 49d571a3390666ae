// cases_linalg.cpp: op-table cases for matmul (2-D, batched, broadcast, transposed, vectors).
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

}  // namespace

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

}  // namespace loom::test
