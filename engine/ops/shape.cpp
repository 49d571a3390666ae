// shape.cpp: views (reshape, permute, narrow, expand, ...), copies (contiguous,
// clone, cast, concat, stack) and the in-place ops.
//
// A view is a new Tensor handle onto the same storage with other shape/strides/
// offset; it copies nothing. Views are recorded like any op, so gradients flow
// back through them to the tensor they look into.
#include <algorithm>
#include <numeric>
#include <optional>

#include "engine/ops/op_helpers.h"

namespace loom {

namespace {

// Strides that let `x` be viewed with `shape` without a copy, or empty when the
// layout does not allow it (the algorithm of PyTorch's computeStride): walk the
// old dims in chunks that are contiguous among themselves and split each chunk
// into new dims.
std::optional<Strides> view_strides(const Tensor& x, const Shape& shape) {
  const Shape& old_shape = x.shape();
  const Strides& old_strides = x.strides();
  Strides strides(shape.size(), 0);
  if (x.numel() == 0 || old_shape.empty()) return contiguous_strides(shape);
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.empty() ? 1 : old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[d];
    if (d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base_stride = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return strides;
}

Shape infer_shape(const Tensor& x, Shape shape) {
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      LOOM_CHECK(infer_at < 0, "reshape: only one dimension may be -1, got ", shape_str(shape));
      infer_at = static_cast<int64_t>(i);
    } else {
      LOOM_CHECK(shape[i] >= 0, "reshape: negative dimension in ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer_at >= 0) {
    LOOM_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot reshape ", shape_str(x.shape()), " into ",
               shape_str(shape));
    shape[infer_at] = x.numel() / known;
  }
  LOOM_CHECK(shape_numel(shape) == x.numel(), "reshape: cannot reshape ", shape_str(x.shape()), " (",
             x.numel(), " elements) into ", shape_str(shape));
  return shape;
}

Tensor record_view(OpId id, const Tensor& x, Tensor out, std::vector<int64_t> ints = {}) {
  if (needs_grad({&x})) record({id, {x}, {}, std::move(ints)}, out);
  return out;
}

}  // namespace

Tensor reshape(const Tensor& x, const Shape& requested) {
  detail::check_defined("reshape", x);
  const Shape shape = infer_shape(x, requested);
  const std::optional<Strides> strides = view_strides(x, shape);
  Tensor out;
  if (strides) {
    out = x.as_strided(shape, *strides, x.offset());
  } else {  // the layout does not allow a view: copy first
    const Tensor packed = dense(x);
    out = packed.as_strided(shape, contiguous_strides(shape), packed.offset());
  }
  return record_view(OpId::reshape, x, out);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  detail::check_defined("permute", x);
  const int64_t n = x.dim();
  LOOM_CHECK(static_cast<int64_t>(dims.size()) == n, "permute: ", dims.size(), " dims given for a tensor of shape ",
             shape_str(x.shape()));
  std::vector<int64_t> perm(n);
  std::vector<bool> seen(n, false);
  Shape shape(n);
  Strides strides(n);
  for (int64_t i = 0; i < n; ++i) {
    const int d = normalize_axis(dims[i], n, "permute");
    LOOM_CHECK(!seen[d], "permute: dimension ", d, " appears twice");
    seen[d] = true;
    perm[i] = d;
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  return record_view(OpId::permute, x, x.as_strided(shape, strides, x.offset()), perm);
}

Tensor transpose(const Tensor& x, int64_t a, int64_t b) {
  detail::check_defined("transpose", x);
  std::vector<int64_t> dims(x.dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_axis(a, x.dim(), "transpose")], dims[normalize_axis(b, x.dim(), "transpose")]);
  return permute(x, dims);
}

Tensor narrow(const Tensor& x, int64_t axis, int64_t start, int64_t length) {
  detail::check_defined("narrow", x);
  const int d = normalize_axis(axis, x.dim(), "narrow");
  const int64_t size = x.shape()[d];
  if (start < 0) start += size;
  LOOM_CHECK(start >= 0 && length >= 0 && start + length <= size, "narrow: range [", start, ", ", start + length,
             ") is out of bounds for axis ", d, " of size ", size, " (shape ", shape_str(x.shape()), ")");
  Shape shape = x.shape();
  shape[d] = length;
  Tensor out = x.as_strided(shape, x.strides(), x.offset() + start * x.strides()[d]);
  return record_view(OpId::narrow, x, out, {d, start, length});
}

Tensor expand(const Tensor& x, const Shape& requested) {
  detail::check_defined("expand", x);
  LOOM_CHECK(requested.size() >= x.shape().size(), "expand: cannot expand ", shape_str(x.shape()), " to ",
             shape_str(requested), " (fewer dimensions)");
  Shape shape = requested;
  const size_t lead = requested.size() - x.shape().size();
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t have = i < lead ? 1 : x.shape()[i - lead];
    if (shape[i] == -1) {
      LOOM_CHECK(i >= lead, "expand: -1 is not allowed for a new leading dimension in ", shape_str(requested));
      shape[i] = have;
    }
    LOOM_CHECK(have == shape[i] || have == 1, "expand: cannot expand ", shape_str(x.shape()), " to ",
               shape_str(requested));
  }
  return record_view(OpId::expand, x, detail::broadcast_view(x, shape));
}

Tensor squeeze(const Tensor& x, int64_t axis) {
  detail::check_defined("squeeze", x);
  const int d = normalize_axis(axis, x.dim(), "squeeze");
  LOOM_CHECK(x.shape()[d] == 1, "squeeze: axis ", d, " has size ", x.shape()[d], ", not 1 (shape ",
             shape_str(x.shape()), ")");
  Shape shape = x.shape();
  Strides strides = x.strides();
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  return record_view(OpId::reshape, x, x.as_strided(shape, strides, x.offset()));
}

Tensor unsqueeze(const Tensor& x, int64_t axis) {
  detail::check_defined("unsqueeze", x);
  const int d = normalize_axis(axis, x.dim() + 1, "unsqueeze");
  Shape shape = x.shape();
  Strides strides = x.strides();
  const int64_t stride = d < x.dim() ? x.strides()[d] * x.shape()[d] : 1;
  shape.insert(shape.begin() + d, 1);
  strides.insert(strides.begin() + d, stride);
  return record_view(OpId::reshape, x, x.as_strided(shape, strides, x.offset()));
}

Tensor contiguous(const Tensor& x) {
  detail::check_defined("contiguous", x);
  if (x.is_contiguous()) return x;
  return record_view(OpId::contiguous, x, dense(x));
}

Tensor clone(const Tensor& x) {
  detail::check_defined("clone", x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x).copy(x, out);
  return record_view(OpId::contiguous, x, out);
}

Tensor cast(const Tensor& x, DType dtype) {
  detail::check_defined("cast", x);
  if (x.dtype() == dtype) return x;
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  backend_for(x).copy(x, out);
  // Gradients flow only between floating-point types.
  if (is_floating(dtype) && is_floating(x.dtype())) return record_view(OpId::cast, x, out);
  return out;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  LOOM_CHECK(!xs.empty(), "concat: no tensors given");
  const Tensor& first = xs[0];
  detail::check_defined("concat", first);
  const int d = normalize_axis(axis, first.dim(), "concat");
  Shape shape = first.shape();
  int64_t total = 0;
  std::vector<int64_t> ints{d};
  for (size_t i = 0; i < xs.size(); ++i) {
    detail::check_same("concat", first, xs[i]);
    Shape s = xs[i].shape();
    bool match = s.size() == shape.size();
    for (size_t k = 0; match && k < s.size(); ++k)
      if (static_cast<int>(k) != d && s[k] != shape[k]) match = false;
    LOOM_CHECK(match, "concat: tensor ", i, " has shape ", shape_str(s), ", which does not match ",
               shape_str(first.shape()), " outside axis ", d);
    total += s[d];
    ints.push_back(s[d]);
  }
  shape[d] = total;
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  int64_t start = 0;
  for (const Tensor& x : xs) {
    Shape part = out.shape();
    part[d] = x.shape()[d];
    backend_for(x).copy(x, out.as_strided(part, out.strides(), start * out.strides()[d]));
    start += x.shape()[d];
  }
  if (needs_grad(xs)) record({OpId::concat, xs, {}, ints}, out);
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t axis) {
  LOOM_CHECK(!xs.empty(), "stack: no tensors given");
  detail::check_defined("stack", xs[0]);
  const int d = normalize_axis(axis, xs[0].dim() + 1, "stack");
  for (size_t i = 0; i < xs.size(); ++i) {
    detail::check_same("stack", xs[0], xs[i]);
    LOOM_CHECK(xs[i].shape() == xs[0].shape(), "stack: tensor ", i, " has shape ", shape_str(xs[i].shape()),
               " but tensor 0 has ", shape_str(xs[0].shape()));
  }
  Shape shape = xs[0].shape();
  shape.insert(shape.begin() + d, static_cast<int64_t>(xs.size()));
  Tensor out = Tensor::empty(shape, xs[0].dtype(), xs[0].device());
  for (size_t i = 0; i < xs.size(); ++i) {
    Shape part = shape;
    part[d] = 1;
    Tensor slot = out.as_strided(part, out.strides(), static_cast<int64_t>(i) * out.strides()[d]);
    Strides st = slot.strides();
    Shape sh = slot.shape();
    sh.erase(sh.begin() + d);
    st.erase(st.begin() + d);
    backend_for(out).copy(xs[i], slot.as_strided(sh, st, slot.offset()));
  }
  if (needs_grad(xs)) record({OpId::stack, xs, {}, {d}}, out);
  return out;
}

// ---- in place ------------------------------------------------------------------------

namespace {
void check_writable(const char* op, const Tensor& dst) {
  detail::check_defined(op, dst);
  LOOM_CHECK(!(is_grad_enabled() && (dst.requires_grad() || dst.grad_fn())), op,
             ": cannot write in place into a tensor that requires grad while grad mode is on (",
             dst.describe(), "); use GradModeGuard/NoGradGuard for optimizer updates");
}
}  // namespace

void copy_(const Tensor& dst, const Tensor& src) {
  check_writable("copy_", dst);
  detail::check_defined("copy_", src);
  LOOM_CHECK(src.device() == dst.device(), "copy_: source ", src.describe(), " and destination ", dst.describe(),
             " are on different devices");
  const Shape shape = broadcast_shapes(dst.shape(), src.shape(), "copy_");
  LOOM_CHECK(shape == dst.shape(), "copy_: source ", shape_str(src.shape()), " does not broadcast to ",
             shape_str(dst.shape()));
  backend_for(dst).copy(detail::broadcast_view(src, shape), dst);
  dst.bump_version();
  ran(OpId::copy_, dst);  // never recorded: tell a watching test
}

void fill_(const Tensor& dst, double value) {
  check_writable("fill_", dst);
  backend_for(dst).fill(dst, value);
  dst.bump_version();
  ran(OpId::fill_, dst);  // never recorded: tell a watching test
}

void add_(const Tensor& dst, const Tensor& src, double alpha) {
  check_writable("add_", dst);
  detail::check_same("add_", dst, src);
  const Shape shape = broadcast_shapes(dst.shape(), src.shape(), "add_");
  LOOM_CHECK(shape == dst.shape(), "add_: source ", shape_str(src.shape()), " does not broadcast to ",
             shape_str(dst.shape()));
  Backend& be = backend_for(dst);
  Tensor scaled = src;
  if (alpha != 1.0) {
    scaled = Tensor::empty(src.shape(), src.dtype(), src.device());
    be.binary(BinaryOp::mul, src, detail::broadcast_view(detail::scalar_like(alpha, src), src.shape()), scaled);
  }
  be.binary(BinaryOp::add, dst, detail::broadcast_view(scaled, shape), dst);
  dst.bump_version();
  ran(OpId::add_, dst);  // never recorded: tell a watching test
}

void mul_(const Tensor& dst, double value) {
  check_writable("mul_", dst);
  backend_for(dst).binary(BinaryOp::mul, dst, detail::broadcast_view(detail::scalar_like(value, dst), dst.shape()),
                          dst);
  dst.bump_version();
  ran(OpId::mul_, dst);  // never recorded: tell a watching test
}

// ---- backward rules ----------------------------------------------------------------
//
// Backward rules of views and copies.

namespace {

Grads reshape_rule(const RecordedOp& n, const Tensor& g) { return {reshape(g, n.input_shapes[0])}; }

// Undo the permutation: out axis i came from input axis perm[i].
Grads permute_rule(const RecordedOp& n, const Tensor& g) {
  return {permute(g, inverse_permutation(n.ints))};
}

// The slice's gradient lands in its window of a zero tensor.
Grads narrow_rule(const RecordedOp& n, const Tensor& g) {
  Tensor out = Tensor::zeros(n.input_shapes[0], g.dtype(), g.device());
  copy_(narrow(out, n.ints[0], n.ints[1], n.ints[2]), g);
  return {out};
}

// ...or, when the input's gradient already has a running sum, lands in its window there.
void narrow_add_into(const RecordedOp& n, const Tensor& g, const Tensor& sum) {
  add_(narrow(sum, n.ints[0], n.ints[1], n.ints[2]), g);
}

// expand's gradient is g summed back to the input shape, and cast's is g cast
// back to the input dtype: backward() does both for every edge.
Grads identity_rule(const RecordedOp&, const Tensor& g) { return {g}; }

Grads concat_rule(const RecordedOp& n, const Tensor& g) {
  Grads grads;
  int64_t start = 0;
  for (size_t i = 1; i < n.ints.size(); ++i) {
    grads.push_back(narrow(g, n.ints[0], start, n.ints[i]));
    start += n.ints[i];
  }
  return grads;
}

Grads stack_rule(const RecordedOp& n, const Tensor& g) {
  Grads grads;
  const int64_t axis = n.ints[0];
  for (int64_t i = 0; i < g.size(axis); ++i) grads.push_back(squeeze(narrow(g, axis, i, 1), axis));
  return grads;
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration shape_rules[] = {
    {OpId::reshape, {reshape_rule, false, false}},
    {OpId::permute, {permute_rule, false, false}},
    {OpId::narrow, {narrow_rule, false, false, narrow_add_into}},
    {OpId::expand, {identity_rule, false, false}},
    {OpId::contiguous, {identity_rule, false, false}},
    {OpId::cast, {identity_rule, false, false}},
    {OpId::concat, {concat_rule, false, false}},
    {OpId::stack, {stack_rule, false, false}},
};
}  // namespace

}  // namespace loom
