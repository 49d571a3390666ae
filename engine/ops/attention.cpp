// attention.cpp: fused scaled dot-product attention, sequence-first.
//
// out[i, b, h] = sum_j A[b, h, i, j] · v[j, b, h], A = dropout(softmax_j(scale · q_i · k_j)),
// with the causal mask when asked. The kernel works per (batch, head) and keeps
// only each row's logsumexp for the backward: the [Lq, Lk] probabilities are
// rebuilt from q, k and it, and the dropout mask from the Philox counters
// reserved here, so neither is stored.
//
// Record: inputs {q, k, v}, saved {lse}, ints {causal, seed, offset}, reals {scale, p}.
#include "engine/ops/op_helpers.h"

namespace loom {

namespace {

// The kernels read q, k, v in place through their strides, but need each row of
// features to be contiguous (detail::unit_last_stride).
using detail::unit_last_stride;

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal, double dropout_p,
                 Generator* gen) {
  const char* op = "attention";
  detail::check_float(op, q);
  detail::check_same(op, q, k);
  detail::check_same(op, q, v);
  auto shapes = [&] {
    return detail::concat("q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
  };
  LOOM_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
             ": q, k and v must be 4-D [L, B, H, D] (sequence first), got ", shapes());
  const int64_t Lq = q.size(0), Lk = k.size(0), B = q.size(1), H = q.size(2), D = q.size(3), Dv = v.size(3);
  LOOM_CHECK(k.size(1) == B && v.size(1) == B && k.size(2) == H && v.size(2) == H, op,
             ": q, k and v must agree on batch and heads (axes 1 and 2), got ", shapes());
  LOOM_CHECK(k.size(3) == D, op, ": q and k must have the same feature size (axis 3), got ", shapes());
  LOOM_CHECK(v.size(0) == Lk, op, ": k and v must have the same length (axis 0), got ", shapes());
  LOOM_CHECK(!causal || Lq <= Lk, op, ": causal attention needs Lq <= Lk (the queries are the last Lq of the Lk ",
             "positions), got ", shapes());
  LOOM_CHECK(Lk > 0 || Lq == 0, op, ": no keys to attend to, got ", shapes());
  LOOM_CHECK(dropout_p >= 0 && dropout_p < 1, op, ": dropout probability ", dropout_p, " is outside [0, 1)");
  LOOM_CHECK(dropout_p == 0 || gen != nullptr, op, ": dropout_p = ", dropout_p, " needs a generator");

  Backend::AttentionArgs args;
  args.scale = scale;
  args.causal = causal;
  args.dropout_p = dropout_p;
  if (dropout_p > 0) {
    // One Philox counter per 4 probabilities, causally masked ones included, so
    // that element (b, h, i, j) always maps to the same counter.
    const uint64_t blocks = (static_cast<uint64_t>(B * H * Lq * Lk) + 3) / 4;
    args.seed = gen->seed();
    args.offset = gen->advance(blocks);
  }

  Tensor out = Tensor::empty({Lq, B, H, Dv}, q.dtype(), q.device());
  Tensor lse = Tensor::empty({B, H, Lq}, q.dtype(), q.device());
  backend_for(q).attention(unit_last_stride(q), unit_last_stride(k), unit_last_stride(v), args, out, lse);
  if (needs_grad({&q, &k, &v}))
    record({OpId::attention,
            {q, k, v},
            {lse},
            {causal ? 1 : 0, static_cast<int64_t>(args.seed), static_cast<int64_t>(args.offset)},
            {scale, dropout_p}},
           out);
  return out;
}

// ---- backward rules ----------------------------------------------------------------
//
// Backward rule of fused attention.
//
// The backward kernel rebuilds the probabilities from q, k and the saved row
// logsumexps, and the dropout mask from the recorded Philox seed and offset
// (engine/cpu/attention.cpp has the formulas). It fills all three gradients in
// one pass; a gradient nobody asked for is dropped by the walker.

namespace {

// Like the forward, the kernel needs unit stride along the features only (unit_last_stride above).
// inputs {q, k, v}, saved {lse}, ints {causal, seed, offset}, reals {scale, p}.
Grads attention_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor q = unit_last_stride(n.input(0)), k = unit_last_stride(n.input(1)), v = unit_last_stride(n.input(2));
  Backend::AttentionArgs args;
  args.causal = n.ints[0] != 0;
  args.seed = static_cast<uint64_t>(n.ints[1]);
  args.offset = static_cast<uint64_t>(n.ints[2]);
  args.scale = n.reals[0];
  args.dropout_p = n.reals[1];
  Tensor gq = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor gk = Tensor::empty(k.shape(), k.dtype(), k.device());
  Tensor gv = Tensor::empty(v.shape(), v.dtype(), v.device());
  backend_for(g).attention_backward(unit_last_stride(g), q, k, v, n.saved[0], args, gq, gk, gv);
  return {gq, gk, gv};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration attention_rules[] = {
    {OpId::attention, {attention_rule, true, false}},
};
}  // namespace

}  // namespace loom
