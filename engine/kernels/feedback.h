// feedback.h: the kernel spec of feedback_attention (engine/ops.h): its operands
// and how the kernels of both backends (engine/cpu/feedback.cpp,
// cuda/feedback.cu) index them.
//
// keys and values are [n, B, H, *] memory tensors read through their strides
// (SequenceRows: unit stride on the last axis); q [B, H, D], P [R, H, D],
// s [R, H] and u [H, D] are contiguous. Slot j of the memory uses row R − n + j of the
// position tables (the last row is distance 1). The accessors are LOOM_HD, so
// both compilers build the same indexing.
#pragma once

#include <cstdint>

#include "engine/host_device.h"
#include "engine/backend.h"
#include "engine/kernels/sequence_rows.h"
#include "engine/tensor.h"

namespace loom {

// The feedback_attention kernels' operands (engine/op_list.h): q, P, s, u
// contiguous; keys/values [n, B, H, *] with unit stride on the last axis (any
// other strides). Writes out [B, H, Dv] and lse [B, H], each row's log-sum-exp of
// the scores.
struct FeedbackAttentionArgs {
  Tensor q, keys, values, P, s, u;
  double scale = 1.0;
  Tensor out, lse;
};

// grad_out, out, lse contiguous. grad_q is overwritten; grad_keys, grad_values
// (contiguous [n, B, H, *]), grad_P, grad_s and grad_u are added into (zero them
// first): a memory read by many steps collects every read's gradient in one
// buffer. Undefined gradients are skipped.
//
// The keys' gradient of one read is an outer product per (j, b, h), dk_j = ds_j (q + u),
// and the values' is dv_j = α_j do. Instead of adding them, the kernel can file the
// factors that vary with j: key_weights [n, B, H] receives ds_j and value_weights
// [n, B, H] α_j (contiguous, overwritten; give at most one of grad_keys/key_weights,
// and of grad_values/value_weights). feedback_memory_gradient adds them later.
struct FeedbackAttentionBackwardArgs {
  Tensor grad_out, q, keys, values, P, s, u, out, lse;
  double scale = 1.0;
  Tensor grad_q, grad_keys, grad_values, grad_P, grad_s, grad_u;
  Tensor key_weights, value_weights;
};

// The filed factors of `count` reads of the rows [0, n) of a memory, added into its
// gradient buffer: for j < n, every row i = b·H + h and p = 0, 1, ..., count − 1 in
// that order,
//   grads[j, i, :] += weights[p, j, i] · rows[p, i, :]
// each p as its own rounded multiply-add, so the sums are the ones adding each read's
// outer product at once would make. grads [capacity, B·H, D], weights [P, capacity, B·H]
// and rows [P, B·H, D] contiguous; count <= P, n <= capacity.
struct FeedbackMemoryGradientArgs {
  Tensor grads, weights, rows;
  int64_t count = 0, n = 0;
};

namespace feedback {

// The inputs of one call, as raw pointers.
template <class T>
struct Inputs {
  int64_t n, B, H, D, Dv, R;
  const T *q, *P, *s, *u;
  SequenceRows<T> k, v;  // the memory: keys and values [n, B, H, *]
  T scale;

  LOOM_HD const T* q_row(int64_t b, int64_t h) const { return q + (b * H + h) * D; }
  LOOM_HD const T* P_row(int64_t j, int64_t h) const { return P + ((R - n + j) * H + h) * D; }
  LOOM_HD T s_at(int64_t j, int64_t h) const { return s[(R - n + j) * H + h]; }
};

template <class T, class Args>
Inputs<T> inputs_of(const Args& a) {
  return {a.keys.size(0),      a.q.size(0),      a.q.size(1),      a.q.size(2),
          a.values.size(3),    a.P.size(0),      a.q.template data<T>(), a.P.template data<T>(),
          a.s.template data<T>(), a.u.template data<T>(), rows_of<T>(a.keys), rows_of<T>(a.values),
          static_cast<T>(a.scale)};
}

// The gradients the backward writes (null: not wanted).
// k_weights, v_weights: the filed factors ds_j and α_j, [n, B, H] (see above).
template <class T>
struct Grads {
  T *q = nullptr, *k = nullptr, *v = nullptr, *P = nullptr, *s = nullptr, *u = nullptr;
  T *k_weights = nullptr, *v_weights = nullptr;
};

template <class T>
Grads<T> grads_of(const FeedbackAttentionBackwardArgs& a) {
  return {data_or_null<T>(a.grad_q),      data_or_null<T>(a.grad_keys),    data_or_null<T>(a.grad_values),
          data_or_null<T>(a.grad_P),      data_or_null<T>(a.grad_s),       data_or_null<T>(a.grad_u),
          data_or_null<T>(a.key_weights), data_or_null<T>(a.value_weights)};
}

}  // namespace feedback

}  // namespace loom
