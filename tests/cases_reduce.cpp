// cases_reduce.cpp: op-table cases for sum, mean, max, logsumexp, argmax.
#include <algorithm>
#include <cmath>

#include "engine/ops.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// Naive reduction of r over `axes` (empty = all) with a fold function.
Ref reduce_ref(const Ref& r, std::vector<int64_t> axes, bool keepdim, double init,
               const std::function<double(double, double)>& fold) {
  if (axes.empty())
    for (int64_t d = 0; d < r.dim(); ++d) axes.push_back(d);
  for (auto& a : axes) a = a < 0 ? a + r.dim() : a;
  Shape kept_shape = r.shape;
  for (auto a : axes) kept_shape[a] = 1;
  Ref out(kept_shape, init);
  for (int64_t i = 0; i < r.numel(); ++i) {
    auto idx = r.unflat(i);
    for (auto a : axes) idx[a] = 0;
    out.at(idx) = fold(out.at(idx), r.v[i]);
  }
  if (!keepdim) {
    Shape s;
    for (int64_t d = 0; d < r.dim(); ++d)
      if (std::find(axes.begin(), axes.end(), d) == axes.end()) s.push_back(r.shape[d]);
    out.shape = s;
  }
  return out;
}

Ref sum_ref(const Ref& r, std::vector<int64_t> axes, bool keepdim) {
  return reduce_ref(r, std::move(axes), keepdim, 0.0, [](double a, double b) { return a + b; });
}

int64_t count_ref(const Ref& r, const std::vector<int64_t>& axes) {
  if (axes.empty()) return r.numel();
  int64_t n = 1;
  for (auto a : axes) n *= r.shape[a < 0 ? a + r.dim() : a];
  return n;
}

struct Variant {
  std::string label;
  InputSpec spec;
  std::vector<int64_t> axes;
  bool keepdim;
};

std::vector<Variant> variants() {
  return {
      {"all axes", InputSpec({3, 4}), {}, false},
      {"last axis", InputSpec({3, 5}), {-1}, false},
      {"first axis keepdim", InputSpec({4, 3}), {0}, true},
      {"middle axis", InputSpec({2, 3, 4}), {1}, false},
      {"two axes", InputSpec({2, 3, 4}), {0, 2}, true},
      {"leading axes of 3-D", InputSpec({2, 3, 4}), {0, 1}, false},
      {"transposed last axis", InputSpec({3, 4}).transposed(), {-1}, false},
      {"strided first axis", InputSpec({3, 4}).strided(), {0}, false},
  };
}

}  // namespace

static CaseRegistrar reduce_cases([](std::vector<OpCase>& c) {
  for (const Variant& v : variants()) {
    const auto axes = v.axes;
    const bool keep = v.keepdim;
    c.push_back({"sum " + v.label, {v.spec}, [=](const Xs& x) { return sum(x[0], axes, keep); },
                 [=](const Rs& r) { return sum_ref(r[0], axes, keep); }});
    c.push_back({"mean " + v.label, {v.spec}, [=](const Xs& x) { return mean(x[0], axes, keep); },
                 [=](const Rs& r) {
                   const double n = static_cast<double>(count_ref(r[0], axes));
                   return map(sum_ref(r[0], axes, keep), [n](double s) { return s / n; });
                 }});
    c.push_back({"max " + v.label, {v.spec}, [=](const Xs& x) { return max(x[0], axes, keep); },
                 [=](const Rs& r) {
                   return reduce_ref(r[0], axes, keep, -INFINITY, [](double a, double b) { return std::max(a, b); });
                 }});
    if (!axes.empty()) {
      c.push_back({"logsumexp " + v.label, {InputSpec(v.spec).range(-5, 5)},
                   [=](const Xs& x) { return logsumexp(x[0], axes, keep); },
                   [=](const Rs& r) {
                     const Ref m = reduce_ref(r[0], axes, true, -INFINITY,
                                              [](double a, double b) { return std::max(a, b); });
                     Ref e(r[0].shape);
                     for (int64_t i = 0; i < e.numel(); ++i) {
                       auto idx = r[0].unflat(i);
                       for (auto a : axes) idx[a < 0 ? a + r[0].dim() : a] = 0;
                       e.v[i] = std::exp(r[0].v[i] - m.at(idx));
                     }
                     Ref s = sum_ref(e, axes, true);
                     for (int64_t i = 0; i < s.numel(); ++i) s.v[i] = std::log(s.v[i]) + m.v[i];
                     if (!keep) s.shape = sum_ref(r[0], axes, false).shape;
                     return s;
                   }});
    }
  }
  // logsumexp must not overflow where exp(x) would.
  c.push_back({"logsumexp large values", {InputSpec({2, 3}).range(500, 800)},
               [](const Xs& x) { return logsumexp(x[0], {1}); },
               [](const Rs& r) {
                 Ref out({2});
                 for (int64_t i = 0; i < 2; ++i) {
                   double m = -INFINITY, s = 0;
                   for (int64_t j = 0; j < 3; ++j) m = std::max(m, r[0].at({i, j}));
                   for (int64_t j = 0; j < 3; ++j) s += std::exp(r[0].at({i, j}) - m);
                   out.v[i] = m + std::log(s);
                 }
                 return out;
               }});
  // argmax: not differentiable; int64 output.
  for (int64_t axis : {0, 1, -1}) {
    c.push_back({"argmax axis " + std::to_string(axis), {InputSpec({4, 5})},
                 [=](const Xs& x) { return argmax(x[0], axis); },
                 [=](const Rs& r) {
                   const int64_t a = axis < 0 ? axis + 2 : axis;
                   Ref out(a == 0 ? Shape{5} : Shape{4});
                   for (int64_t o = 0; o < out.numel(); ++o) {
                     int64_t best = 0;
                     for (int64_t k = 1; k < r[0].shape[a]; ++k) {
                       const double cand = a == 0 ? r[0].at({k, o}) : r[0].at({o, k});
                       const double cur = a == 0 ? r[0].at({best, o}) : r[0].at({o, best});
                       if (cand > cur) best = k;
                     }
                     out.v[o] = static_cast<double>(best);
                   }
                   return out;
                 },
                 false});
  }
  c.push_back({"argmax keepdim transposed", {InputSpec({3, 4}).transposed()},
               [](const Xs& x) { return argmax(x[0], 1, true); },
               [](const Rs& r) {
                 Ref out({3, 1});
                 for (int64_t i = 0; i < 3; ++i) {
                   int64_t best = 0;
                   for (int64_t k = 1; k < 4; ++k)
                     if (r[0].at({i, k}) > r[0].at({i, best})) best = k;
                   out.v[i] = static_cast<double>(best);
                 }
                 return out;
               },
               false});
});

}  // namespace loom::test
