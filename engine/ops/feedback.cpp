// feedback.cpp: the feedback transformer's per-step attention over its memory,
// and the memory that grows by one row per step without copying (engine/ops.h).
//
// feedback_attention records inputs {q, keys, values, P, s, u}, saved = {lse}
// (the log-sum-exp of each (b, h) row of scores, so the backward recomputes the
// probabilities instead of keeping an [n, B, H] tensor per step) and reals = {scale}.
// Read from a FeedbackMemory it records feedback_memory_attention: inputs {q, the
// keys' token, the values' token, P, s, u}, saved {lse, the rows it read of keys and
// values, and the same rows of their gradient buffers}. feedback_memory_append
// records inputs {row, the previous token}, saved {the gradient buffer}, ints {t}.
#include <array>
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

// Checks the operands, runs the forward kernel, and returns out; lse receives the
// log-sum-exp of each (b, h) row.
Tensor attend(const Tensor& q, const Tensor& keys, const Tensor& values, const Tensor& P, const Tensor& s,
              const Tensor& u, double scale, Tensor& lse) {
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
  lse = Tensor::empty({B, H}, q.dtype(), q.device());
  backend_for(q).feedback_attention({.q = dense(q), .keys = unit_last_stride(keys), .values = unit_last_stride(values),
                                     .P = dense(P), .s = dense(s), .u = dense(u), .scale = scale, .out = out, .lse = lse});
  return out;
}

// Row t of a memory-shaped tensor [capacity, ...], as a view.
Tensor memory_row(const Tensor& m, int64_t t) {
  const Shape row_shape(m.shape().begin() + 1, m.shape().end());
  const int64_t row_numel = shape_numel(row_shape);
  return m.as_strided(row_shape, contiguous_strides(row_shape), m.offset() + t * row_numel);
}

// Rows [0, n) of a memory-shaped tensor, as a view.
Tensor memory_rows(const Tensor& m, int64_t n) {
  Shape shape = m.shape();
  shape[0] = n;
  return m.as_strided(shape, contiguous_strides(shape), m.offset());
}

}  // namespace

Tensor feedback_attention(const Tensor& q, const Tensor& keys, const Tensor& values, const Tensor& P,
                          const Tensor& s, const Tensor& u, double scale) {
  Tensor lse;
  Tensor out = attend(q, keys, values, P, s, u, scale, lse);
  if (needs_grad({&q, &keys, &values, &P, &s, &u}))
    record({OpId::feedback_attention, {q, keys, values, P, s, u}, {lse}, {}, {scale}}, out);
  return out;
}

// ---- the memory -------------------------------------------------------------------------

Tensor FeedbackMemory::view() const { return memory_rows(buffer, rows); }

FeedbackMemory feedback_memory(const Tensor& buffer) {
  constexpr const char* op = "feedback_memory";
  detail::check_defined(op, buffer, "buffer");
  LOOM_CHECK(buffer.dim() >= 1 && buffer.is_contiguous(), op, ": buffer must be a contiguous tensor [capacity, ...], got ",
             buffer.describe());
  LOOM_CHECK(!buffer.requires_grad(), op, ": the buffer (", buffer.describe(),
             ") must not require grad: gradients flow to the appended rows, not the buffer");
  FeedbackMemory m;
  m.buffer = buffer;
  m.token = Tensor::zeros({1}, buffer.dtype(), buffer.device());
  return m;
}

void feedback_memory_append(FeedbackMemory& m, const Tensor& row) {
  constexpr const char* op = "feedback_memory_append";
  detail::check_defined(op, m.buffer, "the memory's buffer (make the memory with feedback_memory)");
  detail::check_defined(op, row, "row");
  detail::check_same(op, m.buffer, row);
  const Shape row_shape(m.buffer.shape().begin() + 1, m.buffer.shape().end());
  LOOM_CHECK(row.shape() == row_shape, op, ": row of shape ", shape_str(row.shape()),
             " does not match a row of the memory's buffer of shape ", shape_str(m.buffer.shape()));
  LOOM_CHECK(m.rows < m.buffer.size(0), op, ": the memory's buffer of shape ", shape_str(m.buffer.shape()),
             " is full (", m.rows, " rows written, capacity ", m.buffer.size(0), ")");
  // The raw kernel, not copy_: copy_ would bump the storage version, and the views of
  // rows [0, rows) that earlier reads saved would then look modified, although this
  // write never touches them.
  backend_for(m.buffer).copy(row, memory_row(m.buffer, m.rows));
  if (is_grad_enabled() && (row.requires_grad() || m.token.requires_grad())) {
    if (!m.grads.defined()) m.grads = Tensor::zeros(m.buffer.shape(), m.buffer.dtype(), m.buffer.device());
    Tensor token = Tensor::zeros({1}, m.buffer.dtype(), m.buffer.device());
    record({OpId::feedback_memory_append, {row, m.token}, {m.grads}, {m.rows}}, token);
    m.token = token;
  }
  ++m.rows;
}

Tensor feedback_attention(const Tensor& q, const FeedbackMemory& keys, const FeedbackMemory& values, const Tensor& P,
                          const Tensor& s, const Tensor& u, double scale) {
  detail::check_defined(kOp, keys.buffer, "the keys' memory (make it with feedback_memory)");
  detail::check_defined(kOp, values.buffer, "the values' memory (make it with feedback_memory)");
  LOOM_CHECK(keys.rows == values.rows, kOp, ": the keys' memory has ", keys.rows, " rows but the values' has ",
             values.rows, "; append to both before each read");
  Tensor lse;
  const Tensor key_rows = keys.view(), value_rows = values.view();
  Tensor out = attend(q, key_rows, value_rows, P, s, u, scale, lse);
  if (needs_grad({&q, &keys.token, &values.token, &P, &s, &u})) {
    auto grads_of = [](const FeedbackMemory& m) { return m.grads.defined() ? memory_rows(m.grads, m.rows) : Tensor(); };
    record({OpId::feedback_memory_attention, {q, keys.token, values.token, P, s, u},
            {lse, key_rows, value_rows, grads_of(keys), grads_of(values)}, {}, {scale}},
           out);
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
// The reads of a FeedbackMemory add their key and value gradients into the memory's
// buffers (the kernel adds into grad_keys and grad_values); the append of row t hands
// row t's sum to the row's producer when every read of it has run.

namespace {

// The layouts the kernel reads: contiguous, except keys/values which only need a
// unit stride on the last axis (the model passes prefix views of its memory;
// unit_last_stride above).
struct BackwardOperands {
  Tensor q, keys, values, P, s, u;
};

// Zeros shaped like `like` where input i needs a gradient (the kernel adds into them).
Tensor zeros_if_needed(const RecordedOp& n, size_t i, const Tensor& like) {
  return n.needs_input_grad(i) ? Tensor::zeros(like.shape(), like.dtype(), like.device()) : Tensor();
}

// Runs the backward kernel; grad_keys, grad_values are added into. Returns the
// gradients of q, P, s, u (inputs 0, 3, 4, 5 of both records; undefined where not needed).
std::array<Tensor, 4> attention_backward(const RecordedOp& n, const Tensor& g, const BackwardOperands& x,
                                         const Tensor& grad_keys, const Tensor& grad_values) {
  std::array<Tensor, 4> grads{n.needs_input_grad(0) ? Tensor::empty(x.q.shape(), x.q.dtype(), x.q.device()) : Tensor(),
                              zeros_if_needed(n, 3, x.P), zeros_if_needed(n, 4, x.s), zeros_if_needed(n, 5, x.u)};
  backend_for(x.q).feedback_attention_backward({.grad_out = contiguous(g), .q = x.q, .keys = x.keys,
                                                .values = x.values, .P = x.P, .s = x.s, .u = x.u, .out = n.output,
                                                .lse = n.saved[0], .scale = n.reals[0], .grad_q = grads[0],
                                                .grad_keys = grad_keys, .grad_values = grad_values,
                                                .grad_P = grads[1], .grad_s = grads[2], .grad_u = grads[3]});
  return grads;
}

// inputs {q, keys, values, P, s, u}; saved {lse}; reals {scale}.
Grads feedback_attention_rule(const RecordedOp& n, const Tensor& g) {
  const BackwardOperands x{contiguous(n.input(0)), unit_last_stride(n.input(1)), unit_last_stride(n.input(2)),
                           contiguous(n.input(3)),  contiguous(n.input(4)),       contiguous(n.input(5))};
  const Tensor grad_keys = zeros_if_needed(n, 1, x.keys), grad_values = zeros_if_needed(n, 2, x.values);
  const auto [dq, dP, ds, du] = attention_backward(n, g, x, grad_keys, grad_values);
  return {dq, grad_keys, grad_values, dP, ds, du};
}

// inputs {q, keys' token, values' token, P, s, u}; saved {lse, keys, values, the keys'
// and the values' gradient rows}; reals {scale}. The tokens' gradients are zeros: they
// only carry the walk to the appends.
Grads feedback_memory_attention_rule(const RecordedOp& n, const Tensor& g) {
  const BackwardOperands x{contiguous(n.input(0)), n.saved[1], n.saved[2],
                           contiguous(n.input(3)), contiguous(n.input(4)), contiguous(n.input(5))};
  const Tensor grad_keys = n.needs_input_grad(1) ? n.saved[3] : Tensor();
  const Tensor grad_values = n.needs_input_grad(2) ? n.saved[4] : Tensor();
  const auto [dq, dP, ds, du] = attention_backward(n, g, x, grad_keys, grad_values);
  auto token_grad = [&](size_t i) { return n.needs_input_grad(i) ? Tensor::zeros({1}, g.dtype(), g.device()) : Tensor(); };
  return {dq, token_grad(1), token_grad(2), dP, ds, du};
}

// inputs {row, previous token}; saved {gradient buffer}; ints {t}. Row t of the buffer
// holds the sum of every read's gradient of row t (those reads ran first: each took
// this node's token or a later one). It is copied out and zeroed, so a second
// backward through a retained graph starts from zero again.
Grads feedback_memory_append_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor slot = memory_row(n.saved[0], n.ints[0]);
  Tensor grad_row;
  if (n.needs_input_grad(0)) {
    grad_row = Tensor::empty(slot.shape(), slot.dtype(), slot.device());
    backend_for(slot).copy(slot, grad_row);
  }
  backend_for(slot).fill(slot, 0.0);  // the raw kernel: the reads saved views of this buffer
  return {grad_row, n.needs_input_grad(1) ? Tensor::zeros({1}, g.dtype(), g.device()) : Tensor()};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration feedback_rules[] = {
    {OpId::feedback_attention, {feedback_attention_rule, /*inputs=*/true, /*output=*/true}},
    {OpId::feedback_memory_attention, {feedback_memory_attention_rule, /*inputs=*/true, /*output=*/true}},
    {OpId::feedback_memory_append, {feedback_memory_append_rule, /*inputs=*/false, /*output=*/false}},
};
}  // namespace

}  // namespace loom
