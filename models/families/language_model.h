// language_model.h: what every family provides to the training and generation
// programs, and the hyperparameters they are built from.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/random.h"
#include "models/blocks/module.h"

namespace loom::models {

// Hyperparameters of a model (the "model" object of a JSON config). Defaults are
// the labml experiments' (models/FAMILIES.md §2.1, §3.1, §4.1); fields a family does not
// use are ignored by it.
struct ModelConfig {
  std::string family = "transformer";  // transformer | primer_ez | fast_weights | feedback
  int64_t vocab = 65;
  int64_t d_model = 512;
  int64_t heads = 8;
  int64_t d_ff = 2048;
  int64_t layers = 6;
  double dropout = 0.0;
  uint64_t seed = 0;  // initialisation and dropout
  // primer_ez: depth-wise conv kernels after Q/K/V: "per_channel" (labml's default:
  // one 3-tap kernel per head channel, shared by the heads), "shared" (one kernel
  // for everything) or "per_head" (one kernel per head and channel).
  std::string conv_kernels = "per_channel";
  int64_t conv_width = 3;
  // transformer, primer_ez: the feed-forward's activation, "relu", "squared_relu",
  // "gelu" or "silu"; empty: the family's (primer_ez: squared_relu, transformer: relu).
  std::string activation;
  // fast_weights: "dpfp" (default) or "elu_plus_one" features; "delta" (default)
  // or "sum" update rule; layer norm on the attention input (the paper's form).
  std::string feature_map = "dpfp";
  int64_t dpfp_nu = 1;
  std::string update_rule = "delta";
  bool attention_layer_norm = false;
  // fast_weights: the layer's fast part (models/families/fast_weights.h): "delta_net" (default),
  // "linear", "delta_delta", "delta_mlp", "delta_rnn", "delta_lstm" or "rdn"; and the
  // number of fast blocks (two fast matrices each) of delta_mlp.
  std::string fast_layer = "delta_net";
  int64_t fast_net_depth = 1;
  // feedback: shared key/value projections (labml's default) or per-layer (original).
  bool shared_kv = true;
  int64_t max_seq_len = 512;  // feedback memory capacity; positional tables for transformers
};

// What is wrong with model.heads, or "" when nothing is: the heads must be
// positive and divide d_model. The config reader and every model check it through
// these two, so the check and its message are written once (models/programs/config.cpp).
std::string heads_problem(int64_t d_model, int64_t heads);
// Throws loom::Error "model.heads: <the problem>" when there is one.
void check_heads(int64_t d_model, int64_t heads);

// Per-sequence state carried by incremental decoding: a KV cache, the fast
// weights, or the feedback memory. Each family defines its own.
struct DecodeState {
  virtual ~DecodeState() = default;
  // The state as named tensors, for a checkpoint of a run that carries it across
  // batches (data.carry_over); load_tensors takes them back. Families that carry
  // nothing across batches have none.
  virtual NamedTensors tensors() const { return {}; }
  virtual void load_tensors(const NamedTensors& tensors);
};

class LanguageModel : public Module {
 public:
  // tokens int64 [L, B] -> logits [L, B, vocab].
  virtual Tensor forward(const Tensor& tokens) = 0;

  // Incremental decoding: feed tokens int64 [T, B] after those already fed,
  // get logits [T, B, vocab]; the prefix is never recomputed.
  virtual std::unique_ptr<DecodeState> start_decoding(int64_t batch) const = 0;
  virtual Tensor decode(DecodeState& state, const Tensor& tokens) = 0;

  // Forward+backward FLOPs per token at a sequence length (for MFU).
  virtual double training_flops_per_token(int64_t seq_len) const = 0;
  // The part of those FLOPs that the fused recurrence kernels do (engine/kernels/),
  // forward and backward; 0 for a family without them.
  virtual double recurrence_training_flops_per_token() const { return 0; }

  // How many positions one decoding state holds (the positional table, the
  // feedback memory); 0: unlimited (recurrent state). generate slides a window past it.
  virtual int64_t context_length() const { return 0; }

  const ModelConfig& config() const { return config_; }
  Generator& dropout_generator() { return dropout_gen_; }

 protected:
  explicit LanguageModel(ModelConfig config) : config_(std::move(config)), dropout_gen_(config_.seed + 1) {}
  ModelConfig config_;
  Generator dropout_gen_;
};

// Builds the family named by config.family; throws naming the family otherwise.
// Refuses (check_memory) a model whose parameters alone cannot fit in memory.
std::unique_ptr<LanguageModel> make_model(const ModelConfig& config);

// About how many parameters (and saved buffers) `config` makes: the embedding,
// the output layer and per layer the attention and feed-forward weights, which
// dominate every family. Computed in double, so no size can overflow it.
double estimate_parameters(const ModelConfig& config);

// Throws, before anything is allocated, when estimate_parameters(config) times
// bytes_per_parameter plus extra_bytes exceeds the machine's physical memory:
// "to train the model needs about 1.2 TB (...) but this machine has 31 GiB".
void check_memory(const ModelConfig& config, double bytes_per_parameter, double extra_bytes, const char* purpose);

}  // namespace loom::models
