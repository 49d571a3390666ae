// cases_shape.cpp: op-table cases for views and copies.
#include <cmath>

#include "engine/ops.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// The logical elements in row-major order do not change under reshape.
Ref reshape_ref(Ref r, Shape s) {
  r.shape = std::move(s);
  return r;
}

Ref permute_ref(const Ref& r, const std::vector<int64_t>& dims) {
  Shape s;
  for (auto d : dims) s.push_back(r.shape[d]);
  Ref out(s);
  for (int64_t i = 0; i < out.numel(); ++i) {
    const auto o = out.unflat(i);
    std::vector<int64_t> src(r.dim());
    for (size_t k = 0; k < dims.size(); ++k) src[dims[k]] = o[k];
    out.v[i] = r.at(src);
  }
  return out;
}

Ref narrow_ref(const Ref& r, int64_t axis, int64_t start, int64_t len) {
  Shape s = r.shape;
  s[axis] = len;
  Ref out(s);
  for (int64_t i = 0; i < out.numel(); ++i) {
    auto idx = out.unflat(i);
    idx[axis] += start;
    out.v[i] = r.at(idx);
  }
  return out;
}

Ref concat_ref(const std::vector<Ref>& rs, int64_t axis) {
  Shape s = rs[0].shape;
  s[axis] = 0;
  for (const Ref& r : rs) s[axis] += r.shape[axis];
  Ref out(s);
  for (int64_t i = 0; i < out.numel(); ++i) {
    auto idx = out.unflat(i);
    size_t k = 0;
    while (idx[axis] >= rs[k].shape[axis]) idx[axis] -= rs[k++].shape[axis];
    out.v[i] = rs[k].at(idx);
  }
  return out;
}

}  // namespace

static CaseRegistrar shape_cases([](std::vector<OpCase>& c) {
  c.push_back({"reshape view", OpId::reshape, {InputSpec({2, 6})}, [](const Xs& x) { return reshape(x[0], {3, -1}); },
               [](const Rs& r) { return reshape_ref(r[0], {3, 4}); }});
  c.push_back({"reshape of a transposed view copies", OpId::reshape, {InputSpec({3, 4}).transposed()},
               [](const Xs& x) { return reshape(x[0], {12}); }, [](const Rs& r) { return reshape_ref(r[0], {12}); }});
  c.push_back({"reshape merging strided rows", OpId::reshape, {InputSpec({2, 3, 4}).strided()},
               [](const Xs& x) { return reshape(x[0], {6, 4}); }, [](const Rs& r) { return reshape_ref(r[0], {6, 4}); }});
  c.push_back({"squeeze/unsqueeze", OpId::reshape, {InputSpec({3, 1, 4})},
               [](const Xs& x) { return unsqueeze(squeeze(x[0], 1), 0); },
               [](const Rs& r) { return reshape_ref(r[0], {1, 3, 4}); }});
  c.push_back({"permute 3-D", OpId::permute, {InputSpec({2, 3, 4})},
               [](const Xs& x) { return permute(x[0], {2, 0, 1}); },
               [](const Rs& r) { return permute_ref(r[0], {2, 0, 1}); }});
  c.push_back({"transpose then contiguous", OpId::contiguous, {InputSpec({3, 4})},
               [](const Xs& x) { return contiguous(transpose(x[0], 0, 1)); },
               [](const Rs& r) { return permute_ref(r[0], {1, 0}); }});
  c.push_back({"permute via transpose", OpId::permute, {InputSpec({3, 4}).strided()},
               [](const Xs& x) { return transpose(x[0], -1, 0); }, [](const Rs& r) { return permute_ref(r[0], {1, 0}); }});
  c.push_back({"narrow middle axis", OpId::narrow, {InputSpec({2, 5, 3})},
               [](const Xs& x) { return narrow(x[0], 1, 1, 3); }, [](const Rs& r) { return narrow_ref(r[0], 1, 1, 3); }});
  c.push_back({"narrow negative start, transposed", OpId::narrow, {InputSpec({4, 5}).transposed()},
               [](const Xs& x) { return narrow(x[0], 0, -2, 2); }, [](const Rs& r) { return narrow_ref(r[0], 0, 2, 2); }});
  c.push_back({"expand [3,1] to [2,3,4]", OpId::expand, {InputSpec({3, 1})},
               [](const Xs& x) { return expand(x[0], {2, 3, 4}) * 1.0; },
               [](const Rs& r) { return zip(Ref({2, 3, 4}), r[0], [](double, double b) { return b; }); }});
  c.push_back({"expand keeps dims with -1", OpId::expand, {InputSpec({1, 4})},
               [](const Xs& x) { return contiguous(expand(x[0], {3, -1})); },
               [](const Rs& r) { return zip(Ref({3, 4}), r[0], [](double, double b) { return b; }); }});
  c.push_back({"clone", OpId::contiguous, {InputSpec({2, 3}).strided()}, [](const Xs& x) { return clone(x[0]); },
               [](const Rs& r) { return r[0]; }});
  // Values on a 2^-10 grid and a 2^-12 step stay exact through float32.
  c.push_back({"cast through float32", OpId::cast, {InputSpec({2, 3}).on_grid(1.0 / 1024)},
               [](const Xs& x) { return cast(cast(x[0], DType::f32), x[0].dtype()) * 1.0; },
               [](const Rs& r) { return r[0]; }, true, 1e-5, 1.0 / 4096});
  c.push_back({"concat axis 0", OpId::concat, {InputSpec({2, 3}), InputSpec({1, 3}), InputSpec({3, 3}).transposed()},
               [](const Xs& x) { return concat(x, 0); }, [](const Rs& r) { return concat_ref(r, 0); }});
  c.push_back({"concat last axis", OpId::concat, {InputSpec({2, 2}), InputSpec({2, 3}).strided()},
               [](const Xs& x) { return concat(x, -1); }, [](const Rs& r) { return concat_ref(r, 1); }});
  c.push_back({"stack middle axis", OpId::stack, {InputSpec({2, 3}), InputSpec({2, 3}).strided(), InputSpec({2, 3})},
               [](const Xs& x) { return stack(x, 1); },
               [](const Rs& r) {
                 Ref out({2, 3, 3});
                 for (int64_t i = 0; i < out.numel(); ++i) {
                   const auto idx = out.unflat(i);
                   out.v[i] = r[idx[1]].at({idx[0], idx[2]});
                 }
                 return out;
               }});
});

static CaseRegistrar random_cases([](std::vector<OpCase>& c) {
  // Dropout's mask comes from a fixed seed; the reference rebuilds the same mask
  // from bernoulli() and checks the scaling (mask statistics: tests/test_runtime.cpp).
  c.push_back({"dropout p=0.3", OpId::dropout, {InputSpec({4, 6})},
               [](const Xs& x) {
                 Generator gen(7);
                 return dropout(x[0], 0.3, gen);
               },
               [](const Rs& r) {
                 Generator gen(7);
                 const Ref keep = Ref::from(bernoulli({4, 6}, 0.7, gen, DType::f64));
                 return zip(r[0], keep, [](double x, double k) { return x * k / 0.7; });
               },
               true, 1e-6});
});

}  // namespace loom::test
