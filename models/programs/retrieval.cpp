// retrieval.cpp: the associative-retrieval model and its training protocol (see retrieval.h).
#include "models/programs/retrieval.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "autodiff/grad_mode.h"
#include "engine/error.h"
#include "models/blocks/optim.h"

namespace loom::models {

// ---- configuration -----------------------------------------------------------------

namespace {

// The positive integer that follows `prefix` in `name`, or 0.
int64_t suffix_number(const std::string& name, const std::string& prefix) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return 0;
  int64_t n = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || n > 1000000) return 0;
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

}  // namespace

void parse_retrieval_model(const std::string& feature_map, const std::string& rule, RetrievalModelConfig& c) {
  if (feature_map == "softmax") {
    c.feature_map = RetrievalFeatureMap::softmax;
  } else if (feature_map == "linear") {
    c.feature_map = RetrievalFeatureMap::linear;
  } else if (int64_t nu = suffix_number(feature_map, "dpfp")) {
    c.feature_map = RetrievalFeatureMap::dpfp;
    c.feature_arg = nu;
  } else if (int64_t m = suffix_number(feature_map, "favor")) {
    c.feature_map = RetrievalFeatureMap::favor;
    c.feature_arg = m;
  } else {
    throw Error("retrieval model: unknown feature map '" + feature_map +
                "' (expected softmax, linear, dpfp<nu> such as dpfp2, or favor<m> such as favor64)");
  }
  if (rule == "sum") c.rule = RetrievalRule::sum;
  else if (rule == "delta") c.rule = RetrievalRule::delta;
  else throw Error("retrieval model: unknown rule '" + rule + "' (expected sum or delta)");
  LOOM_CHECK(!(c.feature_map == RetrievalFeatureMap::softmax && c.rule == RetrievalRule::delta),
             "retrieval model: softmax attention has no delta rule (use rule sum)");
}

std::string feature_map_name(const RetrievalModelConfig& c) {
  switch (c.feature_map) {
    case RetrievalFeatureMap::softmax: return "softmax";
    case RetrievalFeatureMap::linear: return "linear";
    case RetrievalFeatureMap::dpfp: return "dpfp" + std::to_string(c.feature_arg);
    case RetrievalFeatureMap::favor: return "favor" + std::to_string(c.feature_arg);
  }
  return "?";
}

// ---- the model -----------------------------------------------------------------------

namespace {

int64_t checked_num_keys(const RetrievalModelConfig& c) {
  LOOM_CHECK(c.num_keys >= 1, "retrieval model: num_keys must be at least 1, got ", c.num_keys);
  LOOM_CHECK(c.hidden >= 1, "retrieval model: hidden must be at least 1, got ", c.hidden);
  if (c.feature_map == RetrievalFeatureMap::dpfp)
    LOOM_CHECK(c.feature_arg >= 1 && c.feature_arg <= 2 * c.hidden - 1, "retrieval model: DPFP nu must be in [1, ",
               2 * c.hidden - 1, "] for hidden size ", c.hidden, ", got ", c.feature_arg);
  if (c.feature_map == RetrievalFeatureMap::favor)
    LOOM_CHECK(c.feature_arg >= 1, "retrieval model: FAVOR+ needs m >= 1 random features, got ", c.feature_arg);
  return c.num_keys;
}

// The authors' key embedding size int(2S · 1.1), in exact integer arithmetic.
int64_t embedding_dim_for(int64_t num_keys) { return 22 * num_keys / 10; }

// Overwrites t (a parameter) with U(-bound, bound).
void reinit_uniform(const Tensor& t, double bound, Generator& gen) {
  NoGradGuard no_grad;
  copy_(t, uniform(t.shape(), -bound, bound, gen, t.dtype(), t.device()));
}

// x W_xᵀ + b for x = [one-hot(value); E[key]] and W_x = [W_v, W_e] (a Linear's
// weight [out, S + e]), with two lookups instead of a product per pair: the
// one-hot half picks a column of W_v, and E[key] W_eᵀ is a row of the projected
// table E W_eᵀ [S, out] (S rows to project instead of B·L).
Tensor project_pairs(const Linear& layer, const Tensor& table, const Tensor& keys, const Tensor& values,
                     int64_t num_keys) {
  const Tensor& w = layer.weight;
  const int64_t e = w.size(1) - num_keys;
  const Tensor value_rows = contiguous(transpose(narrow(w, 1, 0, num_keys), 0, 1));  // [S, out]
  const Tensor key_rows = matmul(table, transpose(narrow(w, 1, num_keys, e), 0, 1));  // [S, out]
  return embedding(key_rows, keys) + embedding(value_rows, values) + layer.bias;
}

// one_hot[..., s] = (ids[...] == s), in dtype: [..., S].
Tensor one_hot(const Tensor& ids, int64_t n, DType dtype, Device device) {
  return eq(unsqueeze(cast(ids, dtype), -1), Tensor::arange(n, dtype, device));
}

// The sum normalisation's eps (engine/ops/sum_normalise.cpp), as labml's.
constexpr double kSumNormaliseEps = 1e-6;

}  // namespace

RetrievalModel::RetrievalModel(const RetrievalModelConfig& c)
    : config(c),
      embedding_dim(embedding_dim_for(checked_num_keys(c))),
      init_gen(c.seed),
      key_embedding(c.num_keys, embedding_dim, init_gen),
      key(c.num_keys + embedding_dim, c.hidden, true, init_gen),
      query(embedding_dim, c.hidden, true, init_gen),
      favor_gen_(c.seed + 0x9e3779b97f4a7c15ULL) {
  register_module("key_embedding", key_embedding);
  register_module("key", key);
  register_module("query", query);
  // Biases keep PyTorch's default U(±1/√fan_in). The authors draw the two weights
  // from U(±1/√d) for the linear maps and Xavier-uniform for softmax attention.
  const double d = static_cast<double>(c.hidden);
  if (c.feature_map == RetrievalFeatureMap::softmax) {
    reinit_uniform(key.weight, std::sqrt(6.0 / (c.num_keys + embedding_dim + d)), init_gen);
    reinit_uniform(query.weight, std::sqrt(6.0 / (embedding_dim + d)), init_gen);
  } else {
    reinit_uniform(key.weight, 1.0 / std::sqrt(d), init_gen);
    reinit_uniform(query.weight, 1.0 / std::sqrt(d), init_gen);
  }
  if (c.rule == RetrievalRule::delta) {
    beta = std::make_unique<Linear>(c.num_keys + embedding_dim, 1, true, init_gen);
    register_module("beta", *beta);
  }
}

int64_t RetrievalModel::feature_dim() const {
  switch (config.feature_map) {
    case RetrievalFeatureMap::softmax:
    case RetrievalFeatureMap::linear: return config.hidden;
    case RetrievalFeatureMap::dpfp: return 2 * config.hidden * config.feature_arg;
    case RetrievalFeatureMap::favor: return 2 * config.feature_arg;
  }
  return 0;
}

Tensor RetrievalModel::draw_favor_projection() {
  const int64_t d = config.hidden, m = config.feature_arg;
  std::vector<double> w(d * m);  // [d, m] row-major
  for (int64_t start = 0; start < m; start += d) {
    const int64_t cols = std::min(d, m - start);
    const std::vector<double> g = normal({d, d}, 0.0, 1.0, favor_gen_, DType::f64).to_vector<double>();
    // Row norms of the Gaussian block: chi-distributed with d degrees of freedom.
    std::vector<double> norms(d, 0.0);
    for (int64_t a = 0; a < d; ++a)
      for (int64_t b = 0; b < d; ++b) norms[a] += g[a * d + b] * g[a * d + b];
    // Orthonormal columns by modified Gram–Schmidt on the block's columns (the Q of
    // a QR up to column signs, which FAVOR+'s paired ±u features do not see).
    std::vector<double> q = g;
    for (int64_t j = 0; j < d; ++j) {
      for (int64_t i = 0; i < j; ++i) {
        double dot = 0.0;
        for (int64_t a = 0; a < d; ++a) dot += q[a * d + i] * q[a * d + j];
        for (int64_t a = 0; a < d; ++a) q[a * d + j] -= dot * q[a * d + i];
      }
      double norm = 0.0;
      for (int64_t a = 0; a < d; ++a) norm += q[a * d + j] * q[a * d + j];
      norm = std::sqrt(norm);
      for (int64_t a = 0; a < d; ++a) q[a * d + j] /= norm;
    }
    for (int64_t a = 0; a < d; ++a)
      for (int64_t j = 0; j < cols; ++j) w[a * m + start + j] = q[a * d + j] * std::sqrt(norms[j]);
  }
  const Tensor& ref = key.weight;
  return cast(Tensor::from_vector(w, {d, m}), ref.dtype()).to(ref.device());
}

Tensor RetrievalModel::features(const Tensor& x) const {
  switch (config.feature_map) {
    case RetrievalFeatureMap::softmax: return x;
    case RetrievalFeatureMap::linear: return elu(x) + 1.0;
    // r = ReLU([x; −x]); block i is r · roll(r, i), rolled[j] = r[(j − i) mod 2d]: one fused op.
    case RetrievalFeatureMap::dpfp: return dpfp(x, config.feature_arg);
    case RetrievalFeatureMap::favor: {
      // exp(±xΩ − ‖x‖²/2) / √(2m), the log of the scale folded into the exponent.
      LOOM_CHECK(favor_projection.defined(), "retrieval model: no FAVOR+ projection drawn yet");
      const double m = static_cast<double>(config.feature_arg);
      const Tensor u = matmul(x, favor_projection);
      const Tensor offset = 0.5 * sum(x * x, {-1}, true) + (0.5 * std::log(m) + 0.5 * std::log(2.0));
      return concat({exp(u - offset), exp(neg(u) - offset)}, -1);
    }
  }
  return x;
}

Tensor RetrievalModel::forward(const Tensor& keys, const Tensor& values, const Tensor& queries) {
  LOOM_CHECK(keys.dtype() == DType::i64 && values.dtype() == DType::i64 && queries.dtype() == DType::i64,
             "retrieval model: keys, values and queries must be int64, got ", keys.describe(), ", ",
             values.describe(), ", ", queries.describe());
  LOOM_CHECK(keys.dim() == 2 && values.shape() == keys.shape(), "retrieval model: keys ", keys.describe(),
             " and values ", values.describe(), " must both be [B, L]");
  LOOM_CHECK(queries.dim() == 2 && queries.size(0) == keys.size(0), "retrieval model: queries ",
             queries.describe(), " must be [B, Q] with B = ", keys.size(0));
  const int64_t S = config.num_keys, B = keys.size(0), L = keys.size(1), Q = queries.size(1);
  const DType dtype = key.weight.dtype();
  const Device device = key.weight.device();
  // embedding() reports ids outside [0, S) with the table's shape.
  const Tensor& table = key_embedding.weight;                    // E [S, e]
  const Tensor k = project_pairs(key, table, keys, values, S);   // [B, L, d]
  const Tensor q = embedding(query.forward(table), queries);     // [B, Q, d]: rows of E W_qᵀ + b_q

  if (config.feature_map == RetrievalFeatureMap::softmax) {
    const Tensor scores = matmul(q, transpose(k, 1, 2)) / std::sqrt(static_cast<double>(config.hidden));
    return matmul(softmax(scores, -1), one_hot(values, S, dtype, device));  // [B, Q, S]
  }
  if (config.feature_map == RetrievalFeatureMap::favor && (redraw_favor || !favor_projection.defined()))
    favor_projection = draw_favor_projection();
  const Tensor phi_k = features(k), phi_q = features(q);  // [B, L, p], [B, Q, p]

  if (config.rule == RetrievalRule::sum) {
    // W φ(q) = Σ_i v_i (φ(k_i)·φ(q)) and z·φ(q) = Σ_i φ(k_i)·φ(q).
    const Tensor a = matmul(phi_q, transpose(phi_k, 1, 2));  // [B, Q, L]
    return matmul(a, one_hot(values, S, dtype, device)) / (sum(a, {-1}, true) + 1e-6);
  }

  // Delta rule, sequence-first with one head: [L, B, 1, ·].
  const int64_t p = feature_dim();
  const auto seq_first = [&](const Tensor& t) { return unsqueeze(transpose(t, 0, 1), 2); };
  const Tensor k_seq = seq_first(sum_normalise(phi_k, kSumNormaliseEps));
  const Tensor v_seq = seq_first(one_hot(values, S, dtype, device));
  const Tensor beta_seq = seq_first(sigmoid(project_pairs(*beta, table, keys, values, S)));
  const Tensor q_read = sum_normalise(phi_q, kSumNormaliseEps);  // [B, Q, p]
  if (Q == 1) {
    // y_t = W_t q_t: reading the query at every step, the last read is ŷ = W_L φ'(q).
    const Tensor q_seq = seq_first(expand(q_read, {B, L, p}));
    const Tensor y = delta_rule(q_seq, k_seq, v_seq, beta_seq);  // [L, B, 1, S]
    return reshape(narrow(y, 0, L - 1, 1), {B, 1, S});
  }
  LOOM_CHECK(!needs_grad(parameters()), "retrieval model: with the delta rule, ", Q,
             " queries per sequence are for evaluation only (no gradient); train with one query per sequence");
  Tensor w_last;
  delta_rule(k_seq, k_seq, v_seq, beta_seq, Tensor(), &w_last);              // W_L [B, 1, S, p]
  return matmul(q_read, transpose(reshape(w_last, {B, S, p}), 1, 2));        // [B, Q, S]
}

Tensor evaluation_predictions(RetrievalModel& model, const RetrievalTensors& batch, int64_t chunk) {
  LOOM_CHECK(chunk >= 1, "retrieval evaluation: the chunk of queries must be at least 1, got ", chunk);
  if (model.config.feature_map != RetrievalFeatureMap::favor)
    return model.forward(batch.keys, batch.values, batch.queries);
  const int64_t B = batch.queries.size(0), Q = batch.queries.size(1), S = model.config.num_keys;
  const std::vector<double> real_queries = cast(sum(batch.mask, {1}), DType::f64).to_vector<double>();
  std::vector<Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    const Tensor keys = narrow(batch.keys, 0, b, 1), values = narrow(batch.values, 0, b, 1);
    const Tensor queries = narrow(batch.queries, 0, b, 1);
    const int64_t n = std::llround(real_queries[b]);
    std::vector<Tensor> chunks;
    for (int64_t start = 0; start < n; start += chunk)
      chunks.push_back(model.forward(keys, values, narrow(queries, 1, start, std::min(chunk, n - start))));
    if (n < Q) chunks.push_back(Tensor::zeros({1, Q - n, S}, batch.mask.dtype(), batch.mask.device()));
    rows.push_back(concat(chunks, 1));
  }
  return concat(rows, 0);
}

Tensor retrieval_loss(const Tensor& prediction, const Tensor& targets, const Tensor& mask) {
  LOOM_CHECK(prediction.dim() == 3 && targets.dtype() == DType::i64 && targets.dim() == 2 &&
                 targets.size(0) == prediction.size(0) && targets.size(1) == prediction.size(1) &&
                 mask.shape() == targets.shape(),
             "retrieval_loss: expected prediction [B, Q, S], int64 targets [B, Q] and mask [B, Q], got ",
             prediction.describe(), ", ", targets.describe(), ", ", mask.describe());
  const Tensor diff = prediction - one_hot(targets, prediction.size(2), prediction.dtype(), prediction.device());
  const Tensor per_query = 0.5 * sum(diff * diff, {-1});  // [B, Q]
  return sum(per_query * mask) / sum(mask);
}

// ---- training --------------------------------------------------------------------------

RetrievalTensors to_tensors(const datasets::RetrievalBatch& b, DType dtype, Device device) {
  return {Tensor::from_vector(b.keys, {b.batch, b.length}).to(device),
          Tensor::from_vector(b.values, {b.batch, b.length}).to(device),
          Tensor::from_vector(b.query_keys, {b.batch, b.queries}).to(device),
          Tensor::from_vector(b.targets, {b.batch, b.queries}).to(device),
          cast(Tensor::from_vector(b.query_mask, {b.batch, b.queries}), dtype).to(device)};
}

RetrievalRun train_retrieval(RetrievalModel& model, const datasets::AssociativeRetrieval& data,
                             const RetrievalProtocol& protocol, const std::function<void(int64_t, double)>& on_eval) {
  LOOM_CHECK(protocol.batch_size >= 1 && protocol.eval_interval >= 1 && protocol.max_steps >= 1 &&
                 protocol.patience >= 0 && protocol.lr > 0.0,
             "train_retrieval: batch_size, eval_interval and max_steps must be positive, patience >= 0, lr > 0");
  const auto start = std::chrono::steady_clock::now();
  const DType dtype = model.key.weight.dtype();
  const Device device = model.key.weight.device();
  AdamOptions options;
  options.form = AdamForm::pytorch;  // torch.optim.Adam with its defaults, as the authors
  Adam adam(model.named_parameters(), options, LrSchedule::constant(protocol.lr));

  RetrievalRun run;
  run.best_eval_loss = INFINITY;
  int64_t strikes = 0;
  for (int64_t step = 1; step <= protocol.max_steps; ++step) {
    model.train();
    const RetrievalTensors t = to_tensors(data.training_batch(protocol.batch_size, step), dtype, device);
    const Tensor loss = retrieval_loss(model.forward(t.keys, t.values, t.queries), t.targets, t.mask);
    loss.backward();
    adam.step();
    adam.zero_grad();
    run.steps = step;
    if (step % protocol.eval_interval != 0) continue;

    double eval_loss;
    {
      NoGradGuard no_grad;
      model.eval();
      const uint64_t index = static_cast<uint64_t>(step / protocol.eval_interval);
      const RetrievalTensors e = to_tensors(
          data.evaluation_batch(protocol.eval_sequences, protocol.eval_max_queries, index, protocol.eval_length),
          dtype, device);
      eval_loss = retrieval_loss(evaluation_predictions(model, e, protocol.batch_size), e.targets, e.mask).item();
    }
    run.evaluations.emplace_back(step, eval_loss);
    run.final_eval_loss = eval_loss;
    if (on_eval) on_eval(step, eval_loss);
    if (eval_loss < run.best_eval_loss) {
      run.best_eval_loss = eval_loss;
      run.best_step = step;
      strikes = 0;
    } else {
      ++strikes;
    }
    if (eval_loss <= protocol.stop_loss) {
      run.stop_reason = "solved";
      break;
    }
    if (strikes > protocol.patience) {
      run.stop_reason = "no improvement";
      break;
    }
  }
  if (run.stop_reason.empty()) run.stop_reason = "step cap";
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return run;
}

}  // namespace loom::models
