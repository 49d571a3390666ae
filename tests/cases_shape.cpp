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
  c.push_back({"reshape view", {InputSpec({2, 6})}, [](const Xs& x) { return reshape(x[0], {3, -1}); },
               [](const Rs& r) { return reshape_ref(r[0], {3, 4}); }});
  c.push_back({"reshape of a transposed view copies", {InputSpec({3, 4}).transposed()},
               [](const Xs& x) { return reshape(x[0], {12}); }, [](const Rs& r) { return reshape_ref(r[0], {12}); }});
  c.push_back({"reshape merging strided rows", {InputSpec({2, 3, 4}).strided()},
               [](const Xs& x) { return reshape(x[0], {6, 4}); }, [](const Rs& r) { return reshape_ref(r[0], {6, 4}); }});
  c.push_back({"squeeze/unsqueeze", {InputSpec({3, 1, 4})},
               [](const Xs& x) { return unsqueeze(squeeze(x[0], 1), 0); },
               [](const Rs& r) { return reshape_ref(r[0], {1, 3, 4}); }});
  c.push_back({"permute 3-D", {InputSpec({2, 3, 4})},
               [](const Xs& x) { return permute(x[0], {2, 0, 1}); },
               [](const Rs& r) { return permute_ref(r[0], {2, 0, 1}); }});
  c.push_back({"transpose then contiguous", {InputSpec({3, 4})},
               [](const Xs& x) { return contiguous(transpose(x[0], 0, 1)); },
               [](const Rs& r) { return permute_ref(r[0], {1, 0}); }});
  c.push_back({"permute via transpose", {InputSpec({3, 4}).strided()},
               [](const Xs& x) { return transpose(x[0], -1, 0); }, [](const Rs& r) { return permute_ref(r[0], {1, 0}); }});
  c.push_back({"narrow middle axis", {InputSpec({2, 5, 3})},
               [](const Xs& x) { return narrow(x[0], 1, 1, 3); }, [](const Rs& r) { return narrow_ref(r[0], 1, 1, 3); }});
  c.push_back({"narrow negative start, transposed", {InputSpec({4, 5}).transposed()},
               [](const Xs& x) { return narrow(x[0], 0, -2, 2); }, [](const Rs& r) { return narrow_ref(r[0], 0, 2, 2); }});
  c.push_back({"expand [3,1] to [2,3,4]", {InputSpec({3, 1})},
               [](const Xs& x) { return expand(x[0], {2, 3, 4}) * 1.0; },
               [](const Rs& r) { return zip(Ref({2, 3, 4}), r[0], [](double, double b) { return b; }); }});
  // The view itself: the walker reads it through its stride-0 axis.
  c.push_back({"expand keeps dims with -1", {InputSpec({1, 4})},
               [](const Xs& x) { return expand(x[0], {3, -1}); },
               [](const Rs& r) { return zip(Ref({3, 4}), r[0], [](double, double b) { return b; }); }});
  c.push_back({"clone", {InputSpec({2, 3}).strided()}, [](const Xs& x) { return clone(x[0]); },
               [](const Rs& r) { return r[0]; }});
  // Values on a 2^-10 grid and a 2^-12 step stay exact through float32.
  c.push_back({"cast through float32", {InputSpec({2, 3}).on_grid(1.0 / 1024)},
               [](const Xs& x) { return cast(cast(x[0], DType::f32) * 1.0, x[0].dtype()); },
               [](const Rs& r) { return r[0]; }, true, 1e-5, 1.0 / 4096});
  c.push_back({"concat axis 0", {InputSpec({2, 3}), InputSpec({1, 3}), InputSpec({3, 3}).transposed()},
               [](const Xs& x) { return concat(x, 0); }, [](const Rs& r) { return concat_ref(r, 0); }});
  c.push_back({"concat last axis", {InputSpec({2, 2}), InputSpec({2, 3}).strided()},
               [](const Xs& x) { return concat(x, -1); }, [](const Rs& r) { return concat_ref(r, 1); }});
  c.push_back({"stack middle axis", {InputSpec({2, 3}), InputSpec({2, 3}).strided(), InputSpec({2, 3})},
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

// The in-place ops write into a clone of their first input (they refuse tensors
// that require grad, so their inputs are constants).
static CaseRegistrar in_place_cases([](std::vector<OpCase>& c) {
  auto written = [](const Tensor& t) { return clone(t); };
  c.push_back({"copy_ of a broadcast row into a window", {InputSpec({3, 5}).constant(), InputSpec({2}).constant()},
               [written](const Xs& x) {
                 Tensor out = written(x[0]);
                 copy_(narrow(out, 1, 2, 2), x[1]);
                 return out;
               },
               [](const Rs& r) {
                 Ref out = r[0];
                 for (int64_t i = 0; i < 3; ++i)
                   for (int64_t j = 0; j < 2; ++j) out.at({i, 2 + j}) = r[1].at({j});
                 return out;
               },
               false});
  c.push_back({"fill_ of a transposed view", {InputSpec({3, 4}).constant()},
               [written](const Xs& x) {
                 Tensor out = written(x[0]);
                 fill_(transpose(out, 0, 1), -2.5);
                 return out;
               },
               [](const Rs& r) { return map(r[0], [](double) { return -2.5; }); }, false});
  c.push_back({"add_ with alpha, broadcast source", {InputSpec({3, 4}).constant(), InputSpec({4}).constant()},
               [written](const Xs& x) {
                 Tensor out = written(x[0]);
                 add_(out, x[1], -0.5);
                 return out;
               },
               [](const Rs& r) { return zip(r[0], r[1], [](double a, double b) { return a - 0.5 * b; }); }, false});
  c.push_back({"mul_ on a window", {InputSpec({2, 3, 3}).constant()},
               [written](const Xs& x) {
                 Tensor out = written(x[0]);
                 mul_(narrow(out, 2, 0, 2), 3.0);
                 return out;
               },
               [](const Rs& r) {
                 Ref out = r[0];
                 for (int64_t i = 0; i < out.numel(); ++i)
                   if (out.unflat(i)[2] < 2) out.v[i] *= 3.0;
                 return out;
               },
               false});
});

}  // namespace loom::test
