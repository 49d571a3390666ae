// index.cpp: embedding, index_select and gather.
//
// All three copy elements picked by int64 ids. Every id is range-checked here,
// on the host, before a kernel runs: a bad id becomes an error that says which
// id, where it sits in ids and what the valid range was, never a read outside
// the tensor. The ids are recorded as a saved tensor (not an input), so they
// never receive a gradient; the backward rules (below) send the
// output gradient back with index_add / scatter_add.
#include <string>

#include "engine/ops/op_helpers.h"

namespace loom {

namespace {

// Throws unless every element of `ids` (contiguous) lies in [0, bound).
// `target` says what the ids index into, for the message.
void check_ids_in_range(const char* op, const Tensor& ids, int64_t bound, const std::string& target) {
  const Tensor host = ids.device() == Device::cpu ? ids : ids.to(Device::cpu);
  const int64_t* p = host.data<int64_t>();
  const int64_t n = host.numel();
  for (int64_t i = 0; i < n; ++i) {
    // One unsigned compare catches both negative and too-large ids.
    if (static_cast<uint64_t>(p[i]) < static_cast<uint64_t>(bound)) continue;
    // Only on failure: turn the flat position back into a multi-index.
    Shape position(ids.dim());
    int64_t rest = i;
    for (int64_t d = ids.dim() - 1; d >= 0; --d) {
      position[d] = rest % ids.shape()[d];
      rest /= ids.shape()[d];
    }
    const std::string valid = bound > 0 ? detail::concat("valid: 0 <= id < ", bound) : "the axis is empty";
    LOOM_FAIL(op, ": index ", p[i], " at position ", shape_str(position), " of ids ", shape_str(ids.shape()),
              " is out of range for ", target, " (", valid, ")");
  }
}

void check_ids(const char* op, const Tensor& x, const Tensor& ids) {
  detail::check_index(op, ids);
  LOOM_CHECK(ids.device() == x.device(), op, ": ids ", ids.describe(), " are not on the device of ", x.describe());
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  detail::check_float("embedding", weight);
  check_ids("embedding", weight, ids);
  LOOM_CHECK(weight.dim() == 2, "embedding: weight must be 2-D [V, D], got ", weight.describe());
  const int64_t V = weight.shape()[0], D = weight.shape()[1];
  // The kernel takes 1-D ids: flatten a contiguous copy (no copy when already contiguous).
  const Tensor dense_ids = dense(ids);
  check_ids_in_range("embedding", dense_ids, V, detail::concat("weight ", weight.describe()));
  const int64_t n = ids.numel();
  const Tensor flat_ids = dense_ids.as_strided({n}, {1}, dense_ids.offset());

  Shape shape = ids.shape();
  shape.push_back(D);
  Tensor out = Tensor::empty(shape, weight.dtype(), weight.device());
  backend_for(weight).index_select(weight, 0, flat_ids, out.as_strided({n, D}, {D, 1}, out.offset()));
  if (needs_grad({&weight})) record({OpId::embedding, {weight}, {flat_ids}}, out);
  return out;
}

Tensor index_select(const Tensor& x, int64_t axis, const Tensor& ids) {
  detail::check_defined("index_select", x);
  check_ids("index_select", x, ids);
  const int a = normalize_axis(axis, x.dim(), "index_select");
  LOOM_CHECK(ids.dim() == 1, "index_select: ids must be 1-D, got ", ids.describe());
  const Tensor dense_ids = dense(ids);
  check_ids_in_range("index_select", dense_ids, x.shape()[a],
                     detail::concat("axis ", a, " of x ", x.describe()));

  Shape shape = x.shape();
  shape[a] = ids.numel();
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  backend_for(x).index_select(x, a, dense_ids, out);
  if (needs_grad({&x})) record({OpId::index_select, {x}, {dense_ids}, {a}}, out);
  return out;
}

Tensor gather(const Tensor& x, int64_t axis, const Tensor& ids) {
  detail::check_defined("gather", x);
  check_ids("gather", x, ids);
  const int a = normalize_axis(axis, x.dim(), "gather");
  LOOM_CHECK(ids.dim() == x.dim(), "gather: ids must have the rank of x ", x.describe(), ", got ids ",
             ids.describe());
  for (int d = 0; d < x.dim(); ++d) {
    LOOM_CHECK(d == a || ids.shape()[d] <= x.shape()[d], "gather: ids ", shape_str(ids.shape()), " exceed x ",
               shape_str(x.shape()), " in dim ", d, " (", ids.shape()[d], " > ", x.shape()[d],
               "); only the gather axis ", a, " may be larger");
  }
  const Tensor dense_ids = dense(ids);
  check_ids_in_range("gather", dense_ids, x.shape()[a], detail::concat("axis ", a, " of x ", x.describe()));

  Tensor out = Tensor::empty(ids.shape(), x.dtype(), x.device());
  backend_for(x).gather(x, a, dense_ids, out);
  if (needs_grad({&x})) record({OpId::gather, {x}, {dense_ids}, {a}}, out);
  return out;
}

// ---- backward rules ----------------------------------------------------------------
//
// Backward rules of embedding, index_select and gather.
//
// Each op copies elements picked by ids, so the input's gradient sends every
// element of the output gradient back to the slot it was copied from: added into
// zeros, where repeated ids accumulate (index_add / scatter_add). The ids are
// saved[0] (already flattened for embedding); ints[0] is the axis.

namespace {

// Row ids[i] of the weight gets the gradient of output row i.
Grads embedding_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor& ids = n.saved[0];
  const Shape& shape = n.input_shapes[0];
  Tensor grad = Tensor::zeros(shape, g.dtype(), g.device());
  backend_for(g).index_add(grad, 0, ids, reshape(g, {ids.numel(), shape[1]}));
  return {grad};
}

Grads index_select_rule(const RecordedOp& n, const Tensor& g) {
  Tensor grad = Tensor::zeros(n.input_shapes[0], g.dtype(), g.device());
  backend_for(g).index_add(grad, static_cast<int>(n.ints[0]), n.saved[0], g);
  return {grad};
}

Grads gather_rule(const RecordedOp& n, const Tensor& g) {
  Tensor grad = Tensor::zeros(n.input_shapes[0], g.dtype(), g.device());
  backend_for(g).scatter_add(grad, static_cast<int>(n.ints[0]), n.saved[0], g);
  return {grad};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration index_rules[] = {
    {OpId::embedding, {embedding_rule, false, false}},
    {OpId::index_select, {index_select_rule, false, false}},
    {OpId::gather, {gather_rule, false, false}},
};
}  // namespace

}  // namespace loom
