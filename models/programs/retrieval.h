// retrieval.h: the single-layer model of Schlag, Irie and Schmidhuber's
// associative-retrieval experiments (datasets/associative_retrieval.h), and
// their training protocol.
//
// With S keys and S values, e = ⌊2.2·S⌋ and hidden size d (64):
//   x_i = [one-hot(value_i); E[key_i]]       E: a trainable [S, e] table, N(0, 1)
//   k_i = W_k x_i + b_k                     (d)
//   v_i = one-hot(value_i)                  (S; not projected)
//   q   = W_q E[query] + b_q                (d)
//   β_i = σ(w_β·x_i + b_β)                  (delta rule only)
// and the read-out ŷ ∈ ℝ^S, by one of
//   softmax: ŷ = Σ_i softmax_i(q·k_i / √d) v_i (the softmax-attention baseline)
//   sum:     W = Σ_i v_i φ(k_i)ᵀ, z = Σ_i φ(k_i);  ŷ = W φ(q) / (z·φ(q) + 1e-6)
//   delta:   with φ'(x) = φ(x) / (Σ_j φ(x)_j + 1e-6), from W_0 = 0, per i:
//            v̄_i = W φ'(k_i);  W += β_i (v_i − v̄_i) φ'(k_i)ᵀ;   ŷ = W_L φ'(q)
// φ ∈ {linear: ELU+1; DPFP ν (Schlag et al.'s deterministic parameter-free
// projection, 2dν features); FAVOR+ m (Choromanski et al.'s 2m positive random
// features, a fresh orthogonal projection drawn at every forward)}.
// Loss: ½‖one-hot(target) − ŷ‖², the mean over queries (all zeros gives 0.5).
//
// How it is computed (no per-sample loops; every step is a few batched ops):
// W_k x is two row lookups, in W_vᵀ (the one-hot half) and in the projected
// table E W_eᵀ (S rows to project, not B·L pairs), and likewise q and β;
// the sum rule and softmax are evaluated in attention form, ŷ = A·one-hot(V)
// with A = φ(q)·φ(K)ᵀ, which is W φ(q) without forming W; the delta rule is the
// engine's fused delta_rule op, read with the query at the last step (one query
// per sequence, differentiable) or, for many queries per sequence (evaluation,
// no gradient), from the op's final fast weight.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "datasets/associative_retrieval.h"
#include "models/blocks/layers.h"

namespace loom::models {

enum class RetrievalFeatureMap { softmax, linear, dpfp, favor };
enum class RetrievalRule { sum, delta };

struct RetrievalModelConfig {
  int64_t num_keys = 0;  // S
  int64_t hidden = 64;   // d
  RetrievalFeatureMap feature_map = RetrievalFeatureMap::linear;
  int64_t feature_arg = 0;  // ν for dpfp, m for favor
  RetrievalRule rule = RetrievalRule::sum;
  uint64_t seed = 1;
};

// "softmax", "linear", "dpfp<ν>", "favor<m>" (e.g. "dpfp2", "favor64") and
// "sum" / "delta" into a config; errors name the bad value.
void parse_retrieval_model(const std::string& feature_map, const std::string& rule, RetrievalModelConfig& config);
// The inverse: "dpfp2", "favor64", ...
std::string feature_map_name(const RetrievalModelConfig& config);

class RetrievalModel : public Module {
 public:
  explicit RetrievalModel(const RetrievalModelConfig& config);

  // keys, values int64 [B, L] in [0, S); queries int64 [B, Q] -> ŷ [B, Q, S] in the
  // parameters' dtype and device. With the delta rule and Q > 1 no gradient is
  // available (an error says so when one is asked for).
  Tensor forward(const Tensor& keys, const Tensor& values, const Tensor& queries);

  // φ over the last axis, without any normalisation: [..., d] -> [..., feature_dim()].
  // FAVOR+ uses favor_projection as it stands (forward redraws it first).
  Tensor features(const Tensor& x) const;
  int64_t feature_dim() const;
  // A fresh [d, m] FAVOR+ projection: blocks of d orthonormal columns (Gram–Schmidt
  // of a Gaussian block in double), column j scaled by the norm of row j of that
  // block, as in the authors' code.
  Tensor draw_favor_projection();

  RetrievalModelConfig config;
  int64_t embedding_dim;  // e
  Generator init_gen;     // draws the initial parameters (seeded by config.seed)
  Embedding key_embedding;
  Linear key, query;
  std::unique_ptr<Linear> beta;  // delta rule only
  Tensor favor_projection;       // the one the latest forward used (FAVOR+ only)
  bool redraw_favor = true;      // false keeps favor_projection fixed (gradient checks)

 private:
  Generator favor_gen_;
};

// The batch as int64 tensors [B, L], [B, L], [B, Q], [B, Q] and the mask [B, Q] in dtype.
struct RetrievalTensors {
  Tensor keys, values, queries, targets, mask;
};
RetrievalTensors to_tensors(const datasets::RetrievalBatch& batch, DType dtype, Device device);

// ŷ [B, Q, S] for an evaluation batch (call it without gradients), as the
// authors evaluate: each sequence's queries in chunks of at most `chunk` (their
// training batch size), one forward per chunk, sequence after sequence, so that
// FAVOR+ draws a fresh projection for every chunk. Padded queries (mask 0, at the
// end of a row) are not run and predict zeros. The other feature maps give the
// same ŷ however the queries are chunked, so they take one forward for all.
Tensor evaluation_predictions(RetrievalModel& model, const RetrievalTensors& batch, int64_t chunk);

// ½‖one-hot(target) − ŷ‖² summed over the S values, averaged over the queries
// with mask 1. prediction [B, Q, S]; targets int64 [B, Q]; mask [B, Q] in the
// prediction's dtype.
Tensor retrieval_loss(const Tensor& prediction, const Tensor& targets, const Tensor& mask);

// The authors' protocol: Adam (PyTorch form) at a constant rate, evaluate every
// eval_interval steps, stop once the evaluation loss is <= stop_loss, or once
// more than `patience` evaluations in a row did not improve on the best, or at
// max_steps. Evaluations run in chunks of batch_size queries (evaluation_predictions).
struct RetrievalProtocol {
  int64_t batch_size = 32;
  double lr = 1e-3;
  int64_t eval_interval = 100;
  int64_t eval_sequences = 20;
  int64_t eval_max_queries = 200;
  int64_t eval_length = 0;  // pairs per evaluation sequence; 0: the training length
  double stop_loss = 0.001;
  int64_t patience = 10;
  int64_t max_steps = 100000;
};

struct RetrievalRun {
  double best_eval_loss = 0.0;
  int64_t best_step = 0;
  double final_eval_loss = NAN;  // the last evaluation's (NaN when there was none)
  int64_t steps = 0;
  std::string stop_reason;  // "solved", "no improvement", "step cap"
  double seconds = 0.0;     // wall time of the whole run
  std::vector<std::pair<int64_t, double>> evaluations;  // (step, eval loss)
};


// Trains `model` on `data` under `protocol`; on_eval(step, loss) after each evaluation.
RetrievalRun train_retrieval(RetrievalModel& model, const datasets::AssociativeRetrieval& data,
                             const RetrievalProtocol& protocol,
                             const std::function<void(int64_t, double)>& on_eval = {});

}  // namespace loom::models
