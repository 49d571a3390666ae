// sequence_classifier.h: the model of the algorithmic tasks (datasets/code_execution.h,
// datasets/listops.h): read a token sequence, predict one class from its last token.
//
//   tokens [L, B] ─ Embedding ─ Dropout ─ layer 1 … layer N ─ LayerNorm ─ Linear ─→ logits [B, classes]
//                                                            (at each sequence's last real token)
//
// No positional encoding: every layer is recurrent and knows the order. Batches
// are right-padded (datasets::make_batch); every layer is causal, so the state at
// a sequence's last real token has never seen its padding and the result does not
// depend on what else is in the batch.
//
// Layers (config.layer):
//   lstm       the baseline: a standard LSTM (PyTorch's nn.LSTM equations, gates
//              i, f, g, o), hidden size d_model, stacked with dropout between
//              layers; the recurrence is the fused op lstm (engine/ops.h).
//   every fast layer of models/families/fast_weights.h (kFastLayers: delta_net, linear,
//              delta_delta, delta_mlp, delta_rnn, delta_lstm, rdn), in the block
//              of the authors' algorithmic code:
//              pre-norm, x + FastLayer(LN(x)), then x + FFN(LN(x)); ELU+1 features
//              with sum normalisation (softmax inside the op for rdn), no 1/√d
//              (model.fast_layer = layer, feature_map elu_plus_one,
//              attention_layer_norm true). delta_net is the Delta Net, linear the
//              linear transformer (sum rule).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "datasets/sequence_classification.h"
#include "datasets/task_readings.h"
#include "models/blocks/layers.h"

namespace loom::models {

struct SequenceClassifierConfig {
  int64_t vocab = 0;       // the task's vocabulary size
  int64_t classes = 0;     // the task's number of classes
  std::string layer = "lstm";
  int64_t d_model = 128;
  int64_t layers = 2;
  int64_t heads = 4;       // fast-weight layers only
  int64_t d_ff = 512;      // fast-weight layers only
  double dropout = 0.0;
  uint64_t seed = 1;       // initialisation; seed + 1 drives dropout
};

// The layer names config.layer accepts.
std::vector<std::string> sequence_layer_names();
// Throws loom::Error naming the bad field (model.<field>).
void check_sequence_classifier_config(const SequenceClassifierConfig& config);

// One LSTM layer, PyTorch's parameters and equations (nn.LSTM, one layer):
//   [i f g o] = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh   (weight_ih [4H, in], weight_hh [4H, H])
//   i, f, o = σ(·), g = tanh(·);  c_t = f⊙c_{t−1} + i⊙g;  h_t = o⊙tanh(c_t);  h_0 = c_0 = 0.
// Init U(−1/√H, 1/√H) for all four tensors. The input half of the gates is one
// product over all steps, x W_ihᵀ + b_ih + b_hh; the recurrence through W_hh is
// the fused op lstm (engine/ops.h), one kernel call each way.
class LSTMLayer : public Module {
 public:
  LSTMLayer(int64_t input_size, int64_t hidden_size, Generator& gen);
  Tensor forward(const Tensor& x) const;  // [L, B, in] -> [L, B, H]
  int64_t hidden_size;
  Tensor weight_ih, weight_hh, bias_ih, bias_hh;
};

// What the classifier needs from a layer: [L, B, d_model] -> [L, B, d_model].
class SequenceLayer : public Module {
 public:
  virtual Tensor forward(const Tensor& x, Generator& dropout_gen) const = 0;
};

class SequenceClassifier : public Module {
 public:
  explicit SequenceClassifier(const SequenceClassifierConfig& config);

  // tokens int64 [L, B]; lengths int64 [B], each in [1, L] -> logits [B, classes]
  // read at position lengths[b] − 1 of sequence b.
  Tensor forward(const Tensor& tokens, const Tensor& lengths);
  // tokens int64 [L, B] -> logits [L, B, classes] at every position (sequence
  // labelling: every layer is causal, so position t has read tokens 0 … t only).
  Tensor forward_every_token(const Tensor& tokens);

  const SequenceClassifierConfig& config() const { return config_; }
  Generator& dropout_generator() { return dropout_gen_; }

 private:
  Tensor hidden(const Tensor& tokens);  // [L, B, d_model] before the final norm
  SequenceClassifierConfig config_;
  Generator init_gen_, dropout_gen_;
  Embedding embedding_;
  std::vector<std::unique_ptr<SequenceLayer>> owned_;
  ModuleList layers_;
  LayerNorm norm_;
  Linear head_;
};

// ---- data and metrics -----------------------------------------------------------------

struct ClassifierTensors {
  Tensor tokens, lengths, labels;  // int64 [L, B], [B], [B]
  Tensor targets;                  // int64 [L, B] (datasets::kNoTarget past an end); tasks labelling every token only
};
ClassifierTensors to_tensors(const datasets::ClassificationBatch& batch, Device device = Device::cpu);

// Examples [first, first + count) of a split as one batch.
datasets::ClassificationBatch split_batch(const datasets::SequenceTask& task, datasets::Split split, int64_t first,
                                          int64_t count);

// The training loss and the predictions of one batch: for a task that labels
// every token, the mean cross entropy over the real tokens (the authors' loss,
// padding ignored) and the argmax at every position [L, B]; otherwise the mean
// cross entropy of the labels and the argmax per sequence [B].
struct BatchResult {
  Tensor loss;
  std::vector<int64_t> predicted;
};
BatchResult classify_batch(SequenceClassifier& model, const ClassifierTensors& batch, bool every_token);
// Adds a batch's predictions (from classify_batch) to `scorer`.
void score_batch(datasets::Scorer& scorer, const datasets::ClassificationBatch& batch,
                 const std::vector<int64_t>& predicted);

struct Evaluation {
  double loss = 0.0;             // mean cross entropy per labelled token (per label for one-label tasks)
  double accuracy = 0.0;         // sequences with every labelled position right (datasets/task_readings.h)
  double output_accuracy = NAN;  // non-blank positions right; NaN for tasks without a blank class
  int64_t examples = 0;
};
// The whole split (or its first `limit` examples when limit > 0), in batches of
// batch_size, without gradients, in eval mode (restores the training mode after).
Evaluation evaluate(SequenceClassifier& model, const datasets::SequenceTask& task, datasets::Split split,
                    int64_t batch_size, int64_t limit = 0);

}  // namespace loom::models
