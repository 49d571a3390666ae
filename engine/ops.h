// ops.h: loom's whole op API, in one place.
//
// Every function here checks its arguments (errors name the op and the shapes),
// runs the kernel of the input's device, and, when an input requires grad,
// records itself so that backward() can differentiate it (autodiff/ holds the
// rules). Ops marked "not differentiable" never record.
//
// Conventions: axes may be negative (counted from the end); binary ops follow
// numpy broadcasting; tensors of one call share a dtype and a device.
#pragma once

#include <vector>

#include "engine/random.h"
#include "engine/tensor.h"

namespace loom {

// ---- elementwise: unary (engine/ops/elementwise.cpp) ---------------------------
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);           // 1 / sqrt(x)
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor squared_relu(const Tensor& x);    // max(x, 0)^2 (Primer)
Tensor elu(const Tensor& x, double alpha = 1.0);
Tensor gelu(const Tensor& x);            // exact: x * Phi(x)
Tensor silu(const Tensor& x);            // x * sigmoid(x) (SiLU, swish)
Tensor pow(const Tensor& x, double exponent);

// ---- elementwise: binary, with broadcasting (engine/ops/elementwise.cpp) ---------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);
// Comparisons give 1 or 0 in a's dtype. Not differentiable.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, double b);
// cond != 0 ? a : b, all three broadcast together (cond may be any dtype).
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// x where mask == 0, value where mask != 0; mask broadcasts to x.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, double b) { return div(a, b); }
inline Tensor operator+(double a, const Tensor& b) { return add(b, a); }
inline Tensor operator-(double a, const Tensor& b) { return add(neg(b), a); }
inline Tensor operator*(double a, const Tensor& b) { return mul(b, a); }

// ---- reduce (engine/ops/reduce.cpp) -------------------------------------------------
// An empty axis list reduces over all axes.
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor max(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim = false);  // int64; not differentiable
// Sums x down to `shape` (undoes broadcasting): the gradient of expand.
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- linalg (engine/ops/linalg.cpp) -------------------------------------------------
// numpy matmul: [M,K]·[K,N]; batched [...,M,K]·[...,K,N] with broadcast batch dims;
// a 1-D operand is a vector. Transposed views are passed to GEMM without a copy.
Tensor matmul(const Tensor& a, const Tensor& b);
// A linear layer: x [..., in] · Wᵀ + b -> [..., out], for weight W [out, in] and bias b
// [out] (undefined: none). One GEMM that starts its output from the bias rows instead
// of zeros, so the bias costs no pass over the output of its own.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// A weight W [in, out] that every step of a recurrence multiplies by: y_t = x_t·W,
// x_t [rows_t, in] (the feedback transformer's per-token linears). Through matmul,
// each step's backward makes its own weight gradient x_tᵀ·dy_t, a full [in, out]
// buffer for a product of rank rows_t, and the walker adds L of them. Here each
// step's backward only files dy_t, and the weight gradient is one product Xᵀ·G
// over all the steps' rows, made after every step's backward:
//   StepWeight w = step_weight(W, capacity);   // capacity: the rows of all steps
//   y_t = stepped_matmul(x_t, w);              // at each step
// step_weight records a node whose output, `token` (one zero), every
// stepped_matmul takes as an input: the walker reaches that node after them all.
// With a bias b [out], y_t = x_t·W + b: each step's output starts as the bias rows,
// and db, the column sums of G, is made once beside dW. Without gradients (grad
// mode off, or neither W nor b requiring grad) stepped_matmul is x·W (+ b), and no
// buffer is made. The buffers hold capacity × (in + out) elements; where the
// backend packs weights for such products (Backend::panel_width), W and Wᵀ are
// packed once more, each about in × out elements, and the steps and their
// backward read those.
struct StepWeight {
  Tensor weight;      // W [in, out]
  Tensor bias;        // b [out], or undefined
  Tensor token;       // [1] zero: the step_weight node's output
  Tensor inputs;      // X [capacity, in]: each step's x_t, filed by its forward
  Tensor grads;       // G [capacity, out]: each step's dy_t, filed by its backward
  // W and Wᵀ packed once for the steps' products, where the backend packs
  // (Backend::panel_width; the CPU's engine/cpu/panel_matmul.h), else undefined.
  Tensor panels, panels_t;
  int64_t rows = 0;   // rows filed so far
};
StepWeight step_weight(const Tensor& weight, int64_t capacity, const Tensor& bias = Tensor());
Tensor stepped_matmul(const Tensor& x, StepWeight& w);

// ---- softmax and losses (engine/ops/softmax.cpp) ----------------------------------
Tensor softmax(const Tensor& x, int64_t axis = -1);
Tensor log_softmax(const Tensor& x, int64_t axis = -1);
// Mean over rows of -log softmax(logits)[target]; logits [N, C], targets int64 [N].
// Fused and numerically stable.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);

// ---- norm (engine/ops/norm.cpp) -----------------------------------------------------
// Normalises over the last axis; weight and bias [D] may be undefined (no affine).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);

// ---- index (engine/ops/index.cpp) ---------------------------------------------------
// weight [V, D], ids int64 of any shape -> [ids..., D].
Tensor embedding(const Tensor& weight, const Tensor& ids);
// ids int64 1-D; picks slices of x along axis.
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& ids);
// torch.gather: out[i][j] = x[ids[i][j]][j] for axis 0, etc.; ids int64 with x's rank.
Tensor gather(const Tensor& x, int64_t axis, const Tensor& ids);

// ---- shape: views (no copy) and copies (engine/ops/shape.cpp) -------------------------
Tensor reshape(const Tensor& x, const Shape& shape);  // one dim may be -1; copies only if it must
Tensor transpose(const Tensor& x, int64_t a, int64_t b);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor narrow(const Tensor& x, int64_t axis, int64_t start, int64_t length);
Tensor expand(const Tensor& x, const Shape& shape);    // broadcast view, -1 keeps a dim
Tensor squeeze(const Tensor& x, int64_t axis);
Tensor unsqueeze(const Tensor& x, int64_t axis);
Tensor contiguous(const Tensor& x);                    // x itself when already contiguous
Tensor clone(const Tensor& x);                         // always a fresh copy
Tensor cast(const Tensor& x, DType dtype);
Tensor concat(const std::vector<Tensor>& xs, int64_t axis);
Tensor stack(const std::vector<Tensor>& xs, int64_t axis);

// ---- random (engine/ops/random.cpp) --------------------------------------------------
Tensor uniform(const Shape& shape, double low, double high, Generator& gen,
               DType dtype = DType::f32, Device device = Device::cpu);
Tensor normal(const Shape& shape, double mean, double stddev, Generator& gen,
              DType dtype = DType::f32, Device device = Device::cpu);
Tensor bernoulli(const Shape& shape, double p, Generator& gen, DType dtype = DType::f32,
                 Device device = Device::cpu);
// Zeroes each element with probability p and scales the rest by 1/(1-p);
// the identity when !training or p == 0.
Tensor dropout(const Tensor& x, double p, Generator& gen, bool training = true);
// dropout(relu(x), p, gen, training) in one pass each way, with the composition's
// bits and the same draws from gen (the feed-forward blocks' ReLU and dropout).
Tensor relu_dropout(const Tensor& x, double p, Generator& gen, bool training = true);

// ---- conv (engine/ops/conv.cpp) ------------------------------------------------------
// Depth-wise causal 1-D convolution along axis 0 (the sequence axis):
// x [L, ..., C], weight [C, K] (or [1, K]: one kernel for all channels),
// bias [C] / [1] or undefined. out[t] = bias + sum_k weight[:, k] * x[t-K+1+k].
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias);

// ---- dpfp (engine/ops/dpfp.cpp) --------------------------------------------------------
// The DPFP_ν feature map (Schlag, Irie & Schmidhuber 2021; models/FAMILIES.md §2.3), over
// the last axis of x [..., n], without normalisation: r = relu(concat(x, -x)) (2n entries),
// block_i[j] = r[j] · r[(j - i) mod 2n] for i = 1..nu (labml's roll order), and the output
// [..., 2n·nu] is concat(block_1, ..., block_nu). 1 <= nu <= 2n - 1. Fused: one pass
// forward, one backward, which recomputes r from x (the output is not kept).
Tensor dpfp(const Tensor& x, int64_t nu);

// ---- sum_normalise (engine/ops/sum_normalise.cpp) --------------------------------------
// The sum normalisation of the fast weights' feature maps, over the last axis of
// x [..., n]: x / (Σ x + eps), so that a read W φ(q) is a weighted average of W's
// columns. elu_plus_one_normalised is the same of φ = ELU(x) + 1 (Katharopoulos
// et al.'s map). Fused: one pass forward and one backward, with the bits of the
// composition `phi / (sum(phi, {-1}, true) + eps)` on the CPU. eps >= 0.
Tensor sum_normalise(const Tensor& phi, double eps);
Tensor elu_plus_one_normalised(const Tensor& x, double eps);

// ---- attention (engine/ops/attention.cpp) ---------------------------------------------
// Scaled dot-product attention, sequence-first (labml's layout):
// q [Lq, B, H, D], k [Lk, B, H, D], v [Lk, B, H, Dv] -> [Lq, B, H, Dv].
// scores[i, j] = scale * q_i . k_j. With `causal`, query i is position Lk - Lq + i
// and sees keys j <= Lk - Lq + i, so new queries can attend to a KV cache.
// Softmax over keys, then dropout on the probabilities when dropout_p > 0 (gen
// required). Fused: the [Lq, Lk] probabilities are not kept for the backward.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                 double dropout_p = 0.0, Generator* gen = nullptr);

// ---- delta_rule (engine/ops/delta_rule.cpp) ---------------------------------------------
// The fast-weight recurrence of linear transformers (models/FAMILIES.md §2.2), per batch
// item and head, with W_0 = initial_state or 0, W of shape [Dv, Dk]:
//   delta rule:  vbar_t = W_{t-1} k_t;  W_t = W_{t-1} + beta_t (v_t - vbar_t) k_tᵀ;  y_t = W_t q_t
//   sum rule (beta undefined): W_t = W_{t-1} + v_t k_tᵀ;  y_t = W_t q_t
// q, k [L, B, H, Dk] (features already applied), v [L, B, H, Dv], beta [L, B, H, 1]
// -> y [L, B, H, Dv]. initial_state [B, H, Dv, Dk] or undefined (no gradient flows
// to it). When final_state is given it receives W_L. The backward does not store
// W_t per step: it rebuilds them backwards from W_L (models/FAMILIES.md §2.5).
Tensor delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                  const Tensor& initial_state = Tensor(), Tensor* final_state = nullptr);

// ---- delta_rnn (engine/ops/delta_rnn.cpp) -----------------------------------------------
// The recurrent part of the Delta RNN ("Going Beyond Linear Transformers with Recurrent Fast
// Weight Programmers", Irie et al. 2021, eq. 12): a recurrent fast weight R [D, D] per
// batch item and head, written by the delta rule and read with the softmax of the
// previous output. With R_0 = initial_R or 0, y_0 = initial_y or 0:
//   R_t = R_{t-1} + gamma_t (rv_t - R_{t-1} rk_t) rk_tᵀ
//   y_t = z_t + R_t softmax(y_{t-1})              (softmax over D, max-subtracted)
// z [L, B, H, D] (the feed-forward fast part, e.g. a delta_rule output), rk [L, B, H, D]
// (keys, softmax-normalised by the caller), rv [L, B, H, D], gamma [L, B, H, 1]
// (sigmoid-ed by the caller) -> y [L, B, H, D]. initial_R [B, H, D, D] and initial_y
// [B, H, D] may be undefined (zeros); no gradient flows to them. When given, final_R and
// final_y receive R_L and y_L. Like delta_rule, the backward rebuilds R_t backwards from
// R_L instead of storing it per step.
Tensor delta_rnn(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma,
                 const Tensor& initial_R = Tensor(), const Tensor& initial_y = Tensor(), Tensor* final_R = nullptr,
                 Tensor* final_y = nullptr);
// ---- delta_lstm (engine/ops/delta_lstm.cpp) ---------------------------------------------
// The recurrent part of the Delta LSTM (Irie et al. 2021, the authors' v4).
// Per batch item and head, three gates g = 0 (input i), 1 (update u), 2 (output o), each with
// its own recurrent fast weight R_g [D, D] (R_g,0 = initial_R or 0), and with
// s_t = softmax(h_{t-1}) over D (max-subtracted; h_0 = initial_h or 0, c_0 = initial_c or 0):
//   R_g,t = R_g,t-1 + gamma_g,t (rv_g,t - R_g,t-1 rk_g,t) rk_g,tᵀ
//   i_t = σ(z_i,t + R_i,t s_t);  u_t = z_u,t + R_u,t s_t;  o_t = σ(z_o,t + R_o,t s_t)
//   c_t = i_t ⊙ u_t + (1 - i_t) ⊙ c_{t-1}   (coupled input/forget gate);   h_t = o_t ⊙ c_t
// z (the feed-forward fast parts), rk (keys, already softmax-normalised by the caller), rv
// [L, B, H, 3, D]; gamma [L, B, H, 3, 1] (already sigmoid-ed) -> h [L, B, H, D].
// initial_R [B, H, 3, D, D], initial_h, initial_c [B, H, D], each undefined = zeros; no
// gradient flows to them. final_R, final_h, final_c (same shapes) receive the states after
// step L when given. The backward rebuilds R_g,t backwards from R_g,L instead of storing it.
Tensor delta_lstm(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma,
                  const Tensor& initial_R = Tensor(), const Tensor& initial_h = Tensor(),
                  const Tensor& initial_c = Tensor(), Tensor* final_R = nullptr, Tensor* final_h = nullptr,
                  Tensor* final_c = nullptr);

// ---- feedback (engine/ops/feedback.cpp) --------------------------------------------------
// One step of the feedback transformer's attention over its memory (models/FAMILIES.md §3.2).
// Per batch item b and head h, over the memory slots j = 0 … n−1 (oldest first):
//   score_j = scale · ((q + u)·keys_j + q·P[R−n+j] + s[R−n+j])
//   out     = Σ_j softmax_j(score) · values_j
// q [B, H, D], keys [n, B, H, D], values [n, B, H, Dv], key_pos_embeddings P [R, H, D],
// key_pos_bias s [R, H], query_pos_bias u [H, D] -> out [B, H, Dv]; 1 <= n <= R.
// The relative-position tables are read from their end (the last row is distance 1),
// so the last rows of a larger table select the same rows as the whole table.
// Fused: the backward recomputes the scores from a saved log-sum-exp per (b, h).
Tensor feedback_attention(const Tensor& q, const Tensor& keys, const Tensor& values,
                          const Tensor& key_pos_embeddings, const Tensor& key_pos_bias,
                          const Tensor& query_pos_bias, double scale);

// The memory that feedback attention reads: keys (or values) [capacity, B, H, D],
// grown by one row per step without copying the rows already there, and read by
// feedback_attention at every later step.
//   FeedbackMemory m = feedback_memory(Tensor::empty({capacity, B, H, D}));
//   feedback_memory_append(m, k_t);                 // step t: writes row t
//   out = feedback_attention(q, keys, values, ...); // reads rows [0, rows)
// Gradients: a read at step s has a gradient for each of the s rows it saw. Rather
// than a fresh [s, B, H, D] tensor per read that the walker then sums, every read's
// backward adds into one buffer `grads` of the memory's shape, and row t's gradient
// is taken from it (copied out, the slot zeroed) by the node of the append that
// wrote it. That node runs after every read of row t: each append's output `token`
// (one zero) is an input of the next append and of the reads between them, so the
// appends form a chain that the walker walks back from the newest. One memory must
// be appended to and read in step order; earlier views share its buffer.
//
// Several reads per step (the layers of a shared-key/value feedback transformer):
// a read's gradient of the memory is an outer product per row, dk_j = ds_j (q + u) and
// dv_j = α_j do, and adding each into `grads` at once would read and write the whole
// buffer once per read. Instead each read files its factors (ds_j or α_j for every
// row, q + u or do once), and the append's node below the step adds the filed reads
// together, each row of the buffer read and written once per step. The sums, and so
// the bits, are the same as adding each read at once: the same multiply-adds in the
// same order. `pending_reads` is how many reads can be filed between two appends'
// nodes (a further read adds the filed ones first; 0 adds every read at once).
struct FeedbackMemory {
  Tensor buffer;      // [capacity, ...]: row t is the t-th append's row
  Tensor grads;       // the same shape, zeros: made by the first append that records
  Tensor token;       // [1] zero: the newest append's output (when it recorded)
  int64_t rows = 0;   // rows appended so far
  int64_t pending_reads = 8;
  // Made with grads when pending_reads > 0: per filed read p, weights[p] [capacity, ...]
  // (the row's factor, one per leading index), rows[p] [...] (the factor every row
  // shares); filed int64 [3] on the CPU: {reads filed, the rows they read, reads
  // filed since the memory was made}.
  Tensor pending_weights, pending_rows, filed;
  Tensor view() const;  // rows [0, rows) of the buffer (no copy)
};
FeedbackMemory feedback_memory(const Tensor& buffer, int64_t pending_reads = 8);
void feedback_memory_append(FeedbackMemory& memory, const Tensor& row);
// feedback_attention over the rows appended so far: the same values as
// feedback_attention(q, keys.view(), values.view(), ...), with the gradients above.
Tensor feedback_attention(const Tensor& q, const FeedbackMemory& keys, const FeedbackMemory& values,
                          const Tensor& key_pos_embeddings, const Tensor& key_pos_bias,
                          const Tensor& query_pos_bias, double scale);

// ---- recurrent_delta_net (engine/ops/recurrent_delta_net.cpp) --------------------------
// The Recurrent Delta Net, RDN (Irie et al. 2021): a delta-rule fast weight whose slow
// net is recurrent through a_t = tanh(y_{t-1}). Per batch item and head, with W [D, D]
// starting at initial_W or 0 and y_0 = initial_y or 0:
//   a_t = tanh(y_{t-1})
//   q_t = softmax(qx_t + Rq a_t);  k_t = softmax(kx_t + Rk a_t)   (softmax over D)
//   v_t = vx_t + Rv a_t;           beta_t = sigmoid(bx_t + rb·a_t)
//   W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) k_tᵀ;  y_t = W_t q_t
// qx, kx, vx [L, B, H, D] and bx [L, B, H, 1] are the slow net's feed-forward parts
// (pre-activation); Rq, Rk, Rv [H, D, D] and rb [H, D] its recurrent parameters, shared
// by the batch, with (Rq a)[i] = Σ_j Rq[h, i, j] a[j]. -> y [L, B, H, D]. initial_W
// [B, H, D, D] and initial_y [B, H, D] may be undefined (zeros); no gradient flows to
// them. final_W, final_y receive W_L and y_L when given. Every other input gets a
// gradient; the backward rebuilds W_t backwards from W_L instead of storing it per step.
Tensor recurrent_delta_net(const Tensor& qx, const Tensor& kx, const Tensor& vx, const Tensor& bx,
                           const Tensor& Rq, const Tensor& Rk, const Tensor& Rv, const Tensor& rb,
                           const Tensor& initial_W = Tensor(), const Tensor& initial_y = Tensor(),
                           Tensor* final_W = nullptr, Tensor* final_y = nullptr);

// ---- lstm (engine/ops/lstm.cpp) -----------------------------------------------------------
// The LSTM recurrence (PyTorch's nn.LSTM equations, gates i f g o, h_0 = c_0 = 0) over all
// steps, from its input half already computed for every step by one product:
//   gates_x [L, B, 4H] = x W_ihᵀ + b_ih + b_hh          (gate q of unit j in column q·H + j)
//   a_t = gates_x[t] + h_{t−1} W_hhᵀ;  i, f, o = σ(a_i, a_f, a_o);  g = tanh(a_g)
//   c_t = f ⊙ c_{t−1} + i ⊙ g;  h_t = o ⊙ tanh(c_t)
// weight_hh [4H, H] -> h [L, B, H]. Gradients flow to gates_x and weight_hh; the
// backward keeps the activated gates and c_t of every step (engine/kernels/lstm.h).
Tensor lstm(const Tensor& gates_x, const Tensor& weight_hh);

// ---- in place (never recorded; for optimizers, gradient accumulation, init) -----------
// They refuse a tensor that requires grad while grad mode is on.
void copy_(const Tensor& dst, const Tensor& src);  // src broadcasts to dst; casts
void fill_(const Tensor& dst, double value);
void add_(const Tensor& dst, const Tensor& src, double alpha = 1.0);  // dst += alpha * src
void mul_(const Tensor& dst, double value);

}  // namespace loom
