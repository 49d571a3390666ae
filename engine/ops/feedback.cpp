// feedback.cpp: the feedback transformer's per-step attention over its memory,
// and the memory that grows by one row per step without copying (engine/ops.h).
//
// feedback_attention records inputs {q, keys, values, P, s, u}, saved = {lse}
// (the log-sum-exp of each (b, h) row of scores, so the backward recomputes the
// probabilities instead of keeping an [n, B, H] tensor per step) and reals = {scale}.
// Read from a FeedbackMemory it records feedback_memory_attention: inputs {q, the
// keys' token, the values' token, P, s, u}, saved {lse, the rows it read of keys and
// values, then the keys' and the values' gradient state (MemoryGrads below)}.
// feedback_memory_append records inputs {row, the previous token}, saved {the
// gradient state}, ints {t}.
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
using detail::unit_last_stride;

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

FeedbackMemory feedback_memory(const Tensor& buffer, int64_t pending_reads) {
  constexpr const char* op = "feedback_memory";
  detail::check_defined(op, buffer, "buffer");
  LOOM_CHECK(buffer.dim() >= 1 && buffer.is_contiguous(), op, ": buffer must be a contiguous tensor [capacity, ...], got ",
             buffer.describe());
  LOOM_CHECK(!buffer.requires_grad(), op, ": the buffer (", buffer.describe(),
             ") must not require grad: gradients flow to the appended rows, not the buffer");
  LOOM_CHECK(pending_reads >= 0, op, ": pending_reads must be >= 0 (0 adds every read's gradient at once), got ",
             pending_reads);
  FeedbackMemory m;
  m.buffer = buffer;
  m.token = Tensor::zeros({1}, buffer.dtype(), buffer.device());
  m.pending_reads = pending_reads;
  return m;
}

namespace {

// The gradient state of one memory as the records keep it: the buffer every row's
// gradient collects in, and the reads filed but not yet added (see engine/ops.h).
// Without pending buffers (pending_reads 0, or a memory no read can take) every read
// adds into grads at once.
struct MemoryGrads {
  Tensor grads, weights, rows, filed;  // filed: int64 [3] {reads filed, the rows they read, reads filed in all}
  static constexpr size_t kSaved = 4;

  static MemoryGrads of(const FeedbackMemory& m) { return {m.grads, m.pending_weights, m.pending_rows, m.filed}; }
  static MemoryGrads saved_at(const std::vector<Tensor>& saved, size_t first) {
    return {saved.at(first), saved.at(first + 1), saved.at(first + 2), saved.at(first + 3)};
  }
  void save_into(std::vector<Tensor>& saved) const {
    for (const Tensor* t : {&grads, &weights, &rows, &filed}) saved.push_back(*t);
  }
  bool defers() const { return filed.defined(); }
  int64_t capacity() const { return weights.size(0); }
  int64_t& count() const { return filed.data<int64_t>()[0]; }
  int64_t& rows_read() const { return filed.data<int64_t>()[1]; }
  int64_t& filed_in_all() const { return filed.data<int64_t>()[2]; }

  // Adds the filed reads into grads and empties the list.
  void add_filed() const {
    if (!defers() || count() == 0) return;
    const int64_t cap = grads.size(0), D = grads.size(-1), M = grads.numel() / (cap * std::max<int64_t>(D, 1));
    backend_for(grads).feedback_memory_gradient({.grads = reshape(grads, {cap, M, D}),
                                                 .weights = reshape(weights, {capacity(), cap, M}),
                                                 .rows = reshape(rows, {capacity(), M, D}),
                                                 .count = count(),
                                                 .n = rows_read()});
    count() = 0;
  }
  // Makes room for `reads` more filed reads of n rows (adding the filed ones when full)
  // and returns the first free slot, or -1 when they cannot be filed (add at once).
  int64_t reserve(int64_t n, int64_t reads) const {
    if (!defers()) return -1;
    if (count() > 0 && (count() + reads > capacity() || rows_read() != n)) add_filed();
    if (count() + reads > capacity()) return -1;
    rows_read() = n;
    const int64_t slot = count();
    count() += reads;
    filed_in_all() += reads;
    return slot;
  }
  // Slot p of weights, as the [n, ...] rows a read of n rows files its factors in.
  Tensor weights_slot(int64_t p, int64_t n) const { return memory_rows(memory_row(weights, p), n); }
  Tensor rows_slot(int64_t p) const { return memory_row(rows, p); }
};

}  // namespace

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
    if (!m.grads.defined()) {
      m.grads = Tensor::zeros(m.buffer.shape(), m.buffer.dtype(), m.buffer.device());
      if (m.pending_reads > 0 && m.buffer.dim() == 4) {  // the shape reads take: [capacity, B, H, D]
        const Shape& shape = m.buffer.shape();
        m.pending_weights = Tensor::empty({m.pending_reads, shape[0], shape[1], shape[2]}, m.buffer.dtype(),
                                          m.buffer.device());
        m.pending_rows = Tensor::empty({m.pending_reads, shape[1], shape[2], shape[3]}, m.buffer.dtype(),
                                       m.buffer.device());
        m.filed = Tensor::zeros({3}, DType::i64);
      }
    }
    Tensor token = Tensor::zeros({1}, m.buffer.dtype(), m.buffer.device());
    std::vector<Tensor> saved;
    MemoryGrads::of(m).save_into(saved);
    record({OpId::feedback_memory_append, {row, m.token}, std::move(saved), {m.rows}}, token);
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
    std::vector<Tensor> saved{lse, key_rows, value_rows};
    MemoryGrads::of(keys).save_into(saved);
    MemoryGrads::of(values).save_into(saved);
    record({OpId::feedback_memory_attention, {q, keys.token, values.token, P, s, u}, std::move(saved), {}, {scale}},
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

// Where a read's gradient of keys (or values) goes: added into `add_into` at once, or
// filed as factors into `weights` (feedback_memory_gradient adds them later).
struct MemoryGradTarget {
  Tensor add_into, weights;
};

// Runs the backward kernel with grad_out = g. Returns the gradients of q, P, s, u
// (inputs 0, 3, 4, 5 of both records; undefined where not needed).
std::array<Tensor, 4> attention_backward(const RecordedOp& n, const Tensor& g, const BackwardOperands& x,
                                         const MemoryGradTarget& keys, const MemoryGradTarget& values) {
  std::array<Tensor, 4> grads{n.needs_input_grad(0) ? Tensor::empty(x.q.shape(), x.q.dtype(), x.q.device()) : Tensor(),
                              zeros_if_needed(n, 3, x.P), zeros_if_needed(n, 4, x.s), zeros_if_needed(n, 5, x.u)};
  backend_for(x.q).feedback_attention_backward({.grad_out = g, .q = x.q, .keys = x.keys,
                                                .values = x.values, .P = x.P, .s = x.s, .u = x.u, .out = n.output,
                                                .lse = n.saved[0], .scale = n.reals[0], .grad_q = grads[0],
                                                .grad_keys = keys.add_into, .grad_values = values.add_into,
                                                .grad_P = grads[1], .grad_s = grads[2], .grad_u = grads[3],
                                                .key_weights = keys.weights, .value_weights = values.weights});
  return grads;
}

// inputs {q, keys, values, P, s, u}; saved {lse}; reals {scale}.
Grads feedback_attention_rule(const RecordedOp& n, const Tensor& g) {
  const BackwardOperands x{contiguous(n.input(0)), unit_last_stride(n.input(1)), unit_last_stride(n.input(2)),
                           contiguous(n.input(3)),  contiguous(n.input(4)),       contiguous(n.input(5))};
  const Tensor grad_keys = zeros_if_needed(n, 1, x.keys), grad_values = zeros_if_needed(n, 2, x.values);
  const auto [dq, dP, ds, du] = attention_backward(n, contiguous(g), x, {grad_keys, {}}, {grad_values, {}});
  return {dq, grad_keys, grad_values, dP, ds, du};
}

// inputs {q, keys' token, values' token, P, s, u}; saved {lse, keys, values, the keys'
// and the values' MemoryGrads}; reals {scale}. The tokens' gradients are zeros: they
// only carry the walk to the appends.
//
// The reads of one step run between two appends' nodes and all read the same n rows.
// Each files its factors (engine/ops.h): the keys' ds_j with the row q + u, the values'
// α_j with the row do. When a memory cannot file the read, the filed reads are added
// first and this one is added at once, which keeps the order of the additions.
Grads feedback_memory_attention_rule(const RecordedOp& n, const Tensor& g) {
  const BackwardOperands x{contiguous(n.input(0)), n.saved[1], n.saved[2],
                           contiguous(n.input(3)), contiguous(n.input(4)), contiguous(n.input(5))};
  const int64_t rows_read = x.keys.size(0);
  const MemoryGrads keys = MemoryGrads::saved_at(n.saved, 3), values = MemoryGrads::saved_at(n.saved, 3 + MemoryGrads::kSaved);
  const bool want_keys = n.needs_input_grad(1), want_values = n.needs_input_grad(2);
  // One memory for both (its reads need two slots at once) reserves them together.
  const bool one_memory = want_keys && want_values && keys.defers() && keys.filed.same_storage(values.filed);
  int64_t key_slot = -1, value_slot = -1;
  if (one_memory) {
    key_slot = keys.reserve(rows_read, 2);
    value_slot = key_slot < 0 ? -1 : key_slot + 1;
  } else {
    if (want_keys) key_slot = keys.reserve(rows_read, 1);
    if (want_values) value_slot = values.reserve(rows_read, 1);
  }
  auto target = [&](bool wanted, const MemoryGrads& m, int64_t slot) -> MemoryGradTarget {
    if (!wanted) return {};
    if (slot >= 0) return {{}, m.weights_slot(slot, rows_read)};
    m.add_filed();  // what was filed before this read comes first
    return {memory_rows(m.grads, rows_read), {}};
  };
  const Tensor grad_out = contiguous(g);
  const auto [dq, dP, ds, du] =
      attention_backward(n, grad_out, x, target(want_keys, keys, key_slot), target(want_values, values, value_slot));
  // The factors every row shares: q + u for the keys (rounded as the kernel rounds it), do for the values.
  if (key_slot >= 0) backend_for(x.q).copy(add(x.q, x.u), keys.rows_slot(key_slot));
  if (value_slot >= 0) backend_for(x.q).copy(grad_out, values.rows_slot(value_slot));
  auto token_grad = [&](size_t i) { return n.needs_input_grad(i) ? Tensor::zeros({1}, g.dtype(), g.device()) : Tensor(); };
  return {dq, token_grad(1), token_grad(2), dP, ds, du};
}

// inputs {row, previous token}; saved {the memory's MemoryGrads}; ints {t}. The reads
// filed since the last append's node are added first. Row t of the buffer then holds
// the sum of every read's gradient of row t (those reads ran first: each took this
// node's token or a later one). It is copied out and zeroed, so a second backward
// through a retained graph starts from zero again.
Grads feedback_memory_append_rule(const RecordedOp& n, const Tensor& g) {
  const MemoryGrads memory = MemoryGrads::saved_at(n.saved, 0);
  if (memory.defers() && memory.count() > 0) {
    // Every filed read is of this step's successor: it read rows [0, t] exactly.
    LOOM_CHECK(memory.rows_read() == n.ints[0] + 1, "feedback_memory_append: internal error: reads of ",
               memory.rows_read(), " rows were filed when the append of row ", n.ints[0], " ran");
    memory.add_filed();
  }
  const Tensor slot = memory_row(memory.grads, n.ints[0]);
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
