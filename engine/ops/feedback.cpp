// feedback.cpp: the feedback transformer's per-step attention over its memory,
// and the append that grows that memory without copying it.
//
// feedback_attention records inputs {q, keys, values, P, s, u}, saved = {lse}
// (the log-sum-exp of each (b, h) row of scores, so the backward recomputes the
// probabilities instead of keeping an [n, B, H] tensor per step) and reals = {scale}.
#include <cmath>

#include "engine/ops/op_helpers.h"

#include "engine/kernels/feedback.h"

namespace loom {

namespace {

constexpr const char* kOp = "feedback_attention";

// Checks that t has `rank` axes; `layout` names them for the message ("[B, H, D]").
void check_rank(const Tensor& t, int64_t rank, const char* what, const char* layout) {
  LOOM_CHECK(t.dim() == rank, kOp, ": ", what, " must be ", layout, ", got shape ", shape_str(t.shape()));
}

// Checks t.size(axis) == expected; `dim` and `source` name the dimension and where it came from.
void check_size(const Tensor& t, int64_t axis, int64_t expected, const char* what, const char* dim,
                const char* source, const Tensor& from) {
  LOOM_CHECK(t.size(axis) == expected, kOp, ": ", what, " of shape ", shape_str(t.shape()), " has ", dim, " = ",
             t.size(axis), ", but ", source, " of shape ", shape_str(from.shape()), " has ", dim, " = ", expected);
}

// The kernels read keys/values through their strides but want unit stride on the last axis.
Tensor unit_last_stride(const Tensor& t) {
  return t.size(-1) <= 1 || t.strides().back() == 1 ? t : dense(t);
}

}  // namespace

Tensor feedback_attention(const Tensor& q, const Tensor& keys, const Tensor& values, const Tensor& P,
                          const Tensor& s, const Tensor& u, double scale) {
  detail::check_float(kOp, q);
  for (const Tensor* t : {&keys, &values, &P, &s, &u}) detail::check_same(kOp, q, *t);
  check_rank(q, 3, "q", "[B, H, D]");
  check_rank(keys, 4, "keys", "[n, B, H, D]");
  check_rank(values, 4, "values", "[n, B, H, Dv]");
  check_rank(P, 3, "key_pos_embeddings", "[R, H, D]");
  check_rank(s, 2, "key_pos_bias", "[R, H]");
  check_rank(u, 2, "query_pos_bias", "[H, D]");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t n = keys.size(0), R = P.size(0);
  check_size(keys, 1, B, "keys", "B", "q", q);
  check_size(keys, 2, H, "keys", "H", "q", q);
  check_size(keys, 3, D, "keys", "D", "q", q);
  LOOM_CHECK(n >= 1, kOp, ": the memory is empty (keys of shape ", shape_str(keys.shape()),
             "); a step with no memory skips attention");
  check_size(values, 0, n, "values", "n", "keys", keys);
  check_size(values, 1, B, "values", "B", "q", q);
  check_size(values, 2, H, "values", "H", "q", q);
  check_size(P, 1, H, "key_pos_embeddings", "H", "q", q);
  check_size(P, 2, D, "key_pos_embeddings", "D", "q", q);
  LOOM_CHECK(n <= R, kOp, ": the memory has n = ", n, " slots but key_pos_embeddings of shape ",
             shape_str(P.shape()), " has only R = ", R, " relative positions");
  check_size(s, 0, R, "key_pos_bias", "R", "key_pos_embeddings", P);
  check_size(s, 1, H, "key_pos_bias", "H", "q", q);
  check_size(u, 0, H, "query_pos_bias", "H", "q", q);
  check_size(u, 1, D, "query_pos_bias", "D", "q", q);
  LOOM_CHECK(std::isfinite(scale), kOp, ": scale must be finite, got ", scale);

  const int64_t Dv = values.size(3);
  Tensor out = Tensor::empty({B, H, Dv}, q.dtype(), q.device());
  Tensor lse = Tensor::empty({B, H}, q.dtype(), q.device());
  backend_for(q).feedback_attention({.q = dense(q), .keys = unit_last_stride(keys), .values = unit_last_stride(values),
                                     .P = dense(P), .s = dense(s), .u = dense(u), .scale = scale, .out = out, .lse = lse});
  if (needs_grad({&q, &keys, &values, &P, &s, &u}))
    record({OpId::feedback_attention, {q, keys, values, P, s, u}, {lse}, {}, {scale}}, out);
  return out;
}

Tensor feedback_memory_append(const Tensor& buffer, const Tensor& rows, const Tensor& row) {
  constexpr const char* op = "feedback_memory_append";
  detail::check_defined(op, buffer, "buffer");
  detail::check_same(op, buffer, row);
  LOOM_CHECK(buffer.dim() >= 1 && buffer.is_contiguous(), op, ": buffer must be a contiguous tensor [capacity, ...], got ",
             buffer.describe());
  LOOM_CHECK(!buffer.requires_grad(), op, ": the buffer (", buffer.describe(),
             ") must not require grad: gradients flow through the rows, not the buffer");
  const Shape row_shape(buffer.shape().begin() + 1, buffer.shape().end());
  LOOM_CHECK(row.shape() == row_shape, op, ": row of shape ", shape_str(row.shape()),
             " does not match a row of the buffer of shape ", shape_str(buffer.shape()));
  const int64_t n = rows.defined() ? rows.size(0) : 0;
  if (rows.defined()) {
    // rows must be the prefix view an earlier append returned: same storage, same start.
    const bool prefix = rows.same_storage(buffer) && rows.offset() == buffer.offset() && rows.dim() == buffer.dim() &&
                        Shape(rows.shape().begin() + 1, rows.shape().end()) == row_shape && rows.is_contiguous();
    LOOM_CHECK(prefix, op, ": rows (", rows.describe(), ") are not the first rows of the buffer (",
               buffer.describe(), "); pass the view the previous append returned");
  }
  LOOM_CHECK(n < buffer.size(0), op, ": the buffer of shape ", shape_str(buffer.shape()), " is full (", n,
             " rows written, capacity ", buffer.size(0), ")");

  const int64_t row_numel = shape_numel(row_shape);
  const Tensor slot = buffer.as_strided(row_shape, contiguous_strides(row_shape), buffer.offset() + n * row_numel);
  // The raw kernel, not copy_: copy_ would bump the storage version, and the views of
  // rows [0, n) that autodiff saved for earlier reads would then look modified,
  // although this write never touches them.
  backend_for(buffer).copy(row, slot);

  Shape shape = buffer.shape();
  shape[0] = n + 1;
  Tensor out = buffer.as_strided(shape, contiguous_strides(shape), buffer.offset());
  const bool rows_grad = rows.defined() && rows.requires_grad();
  if (is_grad_enabled() && (rows_grad || row.requires_grad())) {
    const Tensor new_row = unsqueeze(row, 0);
    if (rows.defined()) record({OpId::concat, {rows, new_row}, {}, {0, n, 1}}, out);
    else record({OpId::concat, {new_row}, {}, {0, 1}}, out);
  }
  return out;
}

// ---- backward rules ----------------------------------------------------------------
//
// The backward rule of feedback_attention.
//
// The backend's fused backward kernel recomputes the probabilities from the
// saved log-sum-exp and produces every input's gradient in one pass over the
// memory (engine/cpu/feedback.cpp has the formulas). The gradients of the
// position tables cover all R rows (rows the step did not read get zero), so the
// walker adds them like any other gradient.
//
// feedback_memory_append records itself as a concat, whose rule is in shape.cpp.

namespace {

// The layouts the kernel reads: contiguous, except keys/values which only need a
// unit stride on the last axis (the model passes prefix views of its memory;
// unit_last_stride above).
// inputs {q, keys, values, P, s, u}; saved {lse}; reals {scale}.
Grads feedback_attention_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor q = contiguous(n.input(0));
  const Tensor keys = unit_last_stride(n.input(1));
  const Tensor values = unit_last_stride(n.input(2));
  const Tensor P = contiguous(n.input(3)), s = contiguous(n.input(4)), u = contiguous(n.input(5));
  auto overwritten = [&](size_t i, const Tensor& like) {
    return n.needs_input_grad(i) ? Tensor::empty(like.shape(), like.dtype(), like.device()) : Tensor();
  };
  auto accumulated = [&](size_t i, const Tensor& like) {
    return n.needs_input_grad(i) ? Tensor::zeros(like.shape(), like.dtype(), like.device()) : Tensor();
  };
  Grads grads{overwritten(0, q),     overwritten(1, keys),   overwritten(2, values),
              accumulated(3, P),     accumulated(4, s),      accumulated(5, u)};
  backend_for(q).feedback_attention_backward({.grad_out = contiguous(g), .q = q, .keys = keys, .values = values,
                                              .P = P, .s = s, .u = u, .out = n.output, .lse = n.saved[0],
                                              .scale = n.reals[0], .grad_q = grads[0], .grad_keys = grads[1],
                                              .grad_values = grads[2], .grad_P = grads[3], .grad_s = grads[4],
                                              .grad_u = grads[5]});
  return grads;
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration feedback_rules[] = {
    {OpId::feedback_attention, {feedback_attention_rule, /*inputs=*/true, /*output=*/true}},
};
}  // namespace

}  // namespace loom
