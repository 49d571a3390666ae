#include "tests/op_table.h"

#include <cmath>
#include <random>

#include "engine/ops.h"

namespace loom::test {

std::vector<OpCase>& op_cases() {
  static std::vector<OpCase> cases;
  return cases;
}

int64_t Ref::flat(const std::vector<int64_t>& index) const {
  int64_t f = 0;
  for (size_t d = 0; d < shape.size(); ++d) f = f * shape[d] + index[d];
  return f;
}

std::vector<int64_t> Ref::unflat(int64_t i) const {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = i % shape[d];
    i /= shape[d];
  }
  return index;
}

Ref Ref::from(const Tensor& t) {
  Ref r(t.shape());
  const char* base = static_cast<const char*>(t.storage()->data);
  for (int64_t i = 0; i < r.numel(); ++i) {
    const auto index = r.unflat(i);
    int64_t off = t.offset();
    for (size_t d = 0; d < index.size(); ++d) off += index[d] * t.strides()[d];
    switch (t.dtype()) {
      case DType::f32: r.v[i] = reinterpret_cast<const float*>(base)[off]; break;
      case DType::f64: r.v[i] = reinterpret_cast<const double*>(base)[off]; break;
      case DType::i64: r.v[i] = static_cast<double>(reinterpret_cast<const int64_t*>(base)[off]); break;
    }
  }
  return r;
}

namespace {
Shape base_shape(const InputSpec& s) {
  Shape b = s.shape;
  if (s.layout == Layout::transposed && b.size() >= 2) std::swap(b[b.size() - 1], b[b.size() - 2]);
  if (s.layout == Layout::strided && !b.empty()) b.back() = 2 * b.back() + 1;
  return b;
}
}  // namespace

std::vector<Tensor> make_leaves(const OpCase& c, DType dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Tensor> leaves;
  for (const InputSpec& s : c.inputs) {
    const Shape shape = base_shape(s);
    const int64_t n = shape_numel(shape);
    if (s.index_bound > 0) {
      std::uniform_int_distribution<int64_t> pick(0, s.index_bound - 1);
      std::vector<int64_t> v(n);
      for (auto& x : v) x = pick(rng);
      leaves.push_back(Tensor::from_vector(v, shape));
      continue;
    }
    std::uniform_real_distribution<double> u(s.low, s.high);
    std::vector<double> v(n);
    for (auto& x : v) {
      x = u(rng);
      if (s.away_from_zero)
        while (std::abs(x) < 0.1) x = u(rng);
      if (s.grid > 0) x = std::round(x / s.grid) * s.grid;
    }
    Tensor t = Tensor::from_vector(v, shape);
    if (dtype != DType::f64) t = t.to(dtype);
    leaves.push_back(t);
  }
  return leaves;
}

std::vector<Tensor> apply_layouts(const OpCase& c, const std::vector<Tensor>& leaves) {
  std::vector<Tensor> views;
  for (size_t i = 0; i < leaves.size(); ++i) {
    const InputSpec& s = c.inputs[i];
    const Tensor& t = leaves[i];
    switch (s.layout) {
      case Layout::contiguous: views.push_back(t); break;
      case Layout::transposed: views.push_back(t.dim() >= 2 ? transpose(t, -1, -2) : t); break;
      case Layout::strided: views.push_back(t.dim() >= 1 ? narrow(t, -1, 1, s.shape.back()) : t); break;
    }
  }
  return views;
}

Ref map(const Ref& x, const std::function<double(double)>& f) {
  Ref out(x.shape);
  for (int64_t i = 0; i < x.numel(); ++i) out.v[i] = f(x.v[i]);
  return out;
}

Ref swap_first_two_axes(const Ref& r) {
  Shape shape = r.shape;
  std::swap(shape[0], shape[1]);
  Ref out(shape);
  for (int64_t i = 0; i < r.numel(); ++i) {
    auto index = r.unflat(i);
    std::swap(index[0], index[1]);
    out.at(index) = r.v[i];
  }
  return out;
}

Tensor flat_concat(const std::vector<Tensor>& parts) {
  std::vector<Tensor> flat;
  for (const Tensor& t : parts) flat.push_back(t.reshape({-1}));
  return concat(flat, 0);
}

Ref flat_concat(const std::vector<Ref>& parts) {
  std::vector<double> v;
  for (const Ref& r : parts) v.insert(v.end(), r.v.begin(), r.v.end());
  Ref out({static_cast<int64_t>(v.size())});
  out.v = std::move(v);
  return out;
}

Ref zip(const Ref& a, const Ref& b, const std::function<double(double, double)>& f) {
  const Shape shape = broadcast_shapes(a.shape, b.shape, "zip");
  Ref out(shape);
  const size_t n = shape.size();
  for (int64_t i = 0; i < out.numel(); ++i) {
    const auto index = out.unflat(i);
    auto pick = [&](const Ref& r) {
      std::vector<int64_t> idx(r.shape.size());
      for (size_t d = 0; d < r.shape.size(); ++d) {
        const size_t od = n - r.shape.size() + d;
        idx[d] = r.shape[d] == 1 ? 0 : index[od];
      }
      return r.at(idx);
    };
    out.v[i] = f(pick(a), pick(b));
  }
  return out;
}

}  // namespace loom::test
