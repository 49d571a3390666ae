// sequence_classifier.cpp: the algorithmic tasks' classifier (see the header).
#include "models/families/sequence_classifier.h"

#include <algorithm>
#include <cmath>

#include "autodiff/grad_mode.h"
#include "engine/error.h"
#include "models/families/fast_weights.h"

namespace loom::models {

std::vector<std::string> sequence_layer_names() {
  std::vector<std::string> names{"lstm"};
  for (const char* kind : kFastLayers) names.push_back(kind);
  return names;
}

void check_sequence_classifier_config(const SequenceClassifierConfig& c) {
  LOOM_CHECK(c.vocab >= 1, "model.vocab: must be positive, got ", c.vocab);
  LOOM_CHECK(c.classes >= 2, "model.classes: must be at least 2, got ", c.classes);
  const std::vector<std::string> names = sequence_layer_names();
  if (std::find(names.begin(), names.end(), c.layer) == names.end()) {
    std::string list;
    for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
    LOOM_FAIL("model.layer: unknown layer '", c.layer, "' (expected one of ", list, ")");
  }
  LOOM_CHECK(c.d_model >= 1, "model.d_model: must be positive, got ", c.d_model);
  LOOM_CHECK(c.layers >= 1, "model.layers: must be at least 1, got ", c.layers);
  LOOM_CHECK(c.dropout >= 0.0 && c.dropout < 1.0, "model.dropout: must be in [0, 1), got ", c.dropout);
  if (c.layer != "lstm") {
    check_heads(c.d_model, c.heads);
    LOOM_CHECK(c.d_ff >= 1, "model.d_ff: must be positive, got ", c.d_ff);
  }
}

// ---- LSTM ------------------------------------------------------------------------------

LSTMLayer::LSTMLayer(int64_t input_size, int64_t hidden, Generator& gen) : hidden_size(hidden) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(hidden));
  weight_ih = register_parameter("weight_ih", uniform({4 * hidden, input_size}, -bound, bound, gen));
  weight_hh = register_parameter("weight_hh", uniform({4 * hidden, hidden}, -bound, bound, gen));
  bias_ih = register_parameter("bias_ih", uniform({4 * hidden}, -bound, bound, gen));
  bias_hh = register_parameter("bias_hh", uniform({4 * hidden}, -bound, bound, gen));
}

Tensor LSTMLayer::forward(const Tensor& x) const {
  LOOM_CHECK(x.dim() == 3 && x.size(2) == weight_ih.size(1), "LSTM: input ", x.describe(), " must be [L, B, ",
             weight_ih.size(1), "]");
  const int64_t L = x.size(0), B = x.size(1), in = x.size(2);
  // The input half of every gate at every step in one product; the recurrence in one op.
  const Tensor gates_x = matmul(reshape(x, {L * B, in}), transpose(weight_ih, 0, 1)) + (bias_ih + bias_hh);
  return lstm(reshape(gates_x, {L, B, 4 * hidden_size}), weight_hh);
}

namespace {

// An LSTM layer as a classifier layer: dropout on its input except for the first
// layer (nn.LSTM's dropout sits between layers; the embedding's dropout is the
// classifier's).
class LSTMSequenceLayer : public SequenceLayer {
 public:
  LSTMSequenceLayer(int64_t d_model, double dropout, bool first, Generator& gen)
      : lstm(d_model, d_model, gen), dropout_(dropout), first_(first) {
    register_module("lstm", lstm);
  }
  Tensor forward(const Tensor& x, Generator& dropout_gen) const override {
    return lstm.forward(first_ ? x : loom::dropout(x, dropout_, dropout_gen, training()));
  }
  LSTMLayer lstm;

 private:
  double dropout_;
  bool first_;
};

// The fast-weights block of models/families/fast_weights.h (its fast layer is
// model.fast_layer = config.layer), in the form of the authors' algorithmic code:
// pre-norm, ELU+1 with sum normalisation where the layer has a feature map.
class FastWeightsSequenceLayer : public SequenceLayer {
 public:
  FastWeightsSequenceLayer(const ModelConfig& config, Generator& gen) : block(config, gen) {
    register_module("block", block);
  }
  Tensor forward(const Tensor& x, Generator& dropout_gen) const override {
    return block.forward(x, {}, nullptr, dropout_gen);  // no state: zeros
  }
  FastWeightsLayer block;
};

ModelConfig fast_weights_config(const SequenceClassifierConfig& c) {
  ModelConfig m;
  m.family = "fast_weights";
  m.vocab = c.vocab;
  m.d_model = c.d_model;
  m.heads = c.heads;
  m.d_ff = c.d_ff;
  m.layers = c.layers;
  m.dropout = c.dropout;
  m.seed = c.seed;
  m.fast_layer = c.layer;
  // rdn normalises q and k with a softmax inside its op and reads no feature map.
  if (c.layer != "rdn") m.feature_map = "elu_plus_one";
  m.attention_layer_norm = true;
  check_fast_weights_config(m);
  return m;
}

const SequenceClassifierConfig& checked(const SequenceClassifierConfig& c) {
  check_sequence_classifier_config(c);
  return c;
}

}  // namespace

// ---- the classifier ------------------------------------------------------------------------

SequenceClassifier::SequenceClassifier(const SequenceClassifierConfig& config)
    : config_(checked(config)),
      init_gen_(config.seed),
      dropout_gen_(config.seed + 1),
      embedding_(config.vocab, config.d_model, init_gen_),
      norm_(config.d_model),
      head_(config.d_model, config.classes, true, init_gen_) {
  register_module("embedding", embedding_);
  for (int64_t l = 0; l < config.layers; ++l) {
    if (config.layer == "lstm")
      owned_.push_back(std::make_unique<LSTMSequenceLayer>(config.d_model, config.dropout, l == 0, init_gen_));
    else
      owned_.push_back(std::make_unique<FastWeightsSequenceLayer>(fast_weights_config(config), init_gen_));
    layers_.append(*owned_.back());
  }
  register_module("layers", layers_);
  register_module("norm", norm_);
  register_module("head", head_);
}

Tensor SequenceClassifier::hidden(const Tensor& tokens) {
  LOOM_CHECK(tokens.defined() && tokens.dtype() == DType::i64 && tokens.dim() == 2,
             "sequence classifier: tokens must be int64 [L, B], got ", tokens.defined() ? tokens.describe() : "undefined");
  Tensor x = loom::dropout(embedding_.forward(tokens), config_.dropout, dropout_gen_, training());
  for (const auto& layer : owned_) x = layer->forward(x, dropout_gen_);
  return x;
}

Tensor SequenceClassifier::forward(const Tensor& tokens, const Tensor& lengths) {
  LOOM_CHECK(tokens.defined() && tokens.dtype() == DType::i64 && tokens.dim() == 2,
             "sequence classifier: tokens must be int64 [L, B], got ", tokens.defined() ? tokens.describe() : "undefined");
  const int64_t L = tokens.size(0), B = tokens.size(1);
  LOOM_CHECK(lengths.defined() && lengths.dtype() == DType::i64 && lengths.dim() == 1 && lengths.size(0) == B,
             "sequence classifier: lengths must be int64 [B] with B = ", B, ", got ",
             lengths.defined() ? lengths.describe() : "undefined");
  // Row (lengths[b] − 1)·B + b of the flattened [L·B, d] output is sequence b's last token.
  const std::vector<int64_t> n = lengths.to(Device::cpu).to_vector<int64_t>();
  std::vector<int64_t> last_rows(B);
  for (int64_t b = 0; b < B; ++b) {
    LOOM_CHECK(n[b] >= 1 && n[b] <= L, "sequence classifier: lengths[", b, "] = ", n[b], " is outside [1, L = ", L, "]");
    last_rows[b] = (n[b] - 1) * B + b;
  }
  const Tensor x = hidden(tokens);
  const Tensor rows = Tensor::from_vector(last_rows, {B}).to(x.device());
  const Tensor last = index_select(reshape(x, {L * B, config_.d_model}), 0, rows);  // [B, d]
  return head_.forward(norm_.forward(last));
}

Tensor SequenceClassifier::forward_every_token(const Tensor& tokens) { return head_.forward(norm_.forward(hidden(tokens))); }

// ---- data and metrics -------------------------------------------------------------------------

ClassifierTensors to_tensors(const datasets::ClassificationBatch& b, Device device) {
  ClassifierTensors t{Tensor::from_vector(b.tokens, {b.length, b.batch}).to(device),
                      Tensor::from_vector(b.lengths, {b.batch}).to(device),
                      Tensor::from_vector(b.labels, {b.batch}).to(device), Tensor()};
  if (!b.targets.empty()) t.targets = Tensor::from_vector(b.targets, {b.length, b.batch}).to(device);
  return t;
}

BatchResult classify_batch(SequenceClassifier& model, const ClassifierTensors& batch, bool every_token) {
  BatchResult r;
  if (!every_token) {
    const Tensor logits = model.forward(batch.tokens, batch.lengths);
    r.loss = cross_entropy(logits, batch.labels);
    r.predicted = argmax(logits, 1).to(Device::cpu).to_vector<int64_t>();
    return r;
  }
  LOOM_CHECK(batch.targets.defined(), "sequence classifier: the task labels every token but the batch has no targets");
  const int64_t L = batch.tokens.size(0), B = batch.tokens.size(1);
  const Tensor logits = reshape(model.forward_every_token(batch.tokens), {L * B, model.config().classes});
  // The loss reads the real tokens' rows only, as a cross entropy that ignores padding.
  const std::vector<int64_t> targets = batch.targets.to(Device::cpu).to_vector<int64_t>();
  std::vector<int64_t> rows, labels;
  for (int64_t i = 0; i < L * B; ++i)
    if (targets[i] != datasets::kNoTarget) rows.push_back(i), labels.push_back(targets[i]);
  const int64_t n = static_cast<int64_t>(rows.size());
  const Tensor real = index_select(logits, 0, Tensor::from_vector(rows, {n}).to(logits.device()));
  r.loss = cross_entropy(real, Tensor::from_vector(labels, {n}).to(logits.device()));
  r.predicted = argmax(logits, 1).to(Device::cpu).to_vector<int64_t>();
  return r;
}

void score_batch(datasets::Scorer& scorer, const datasets::ClassificationBatch& b, const std::vector<int64_t>& predicted) {
  if (b.targets.empty()) {
    for (int64_t s = 0; s < b.batch; ++s) scorer.add_label(predicted.at(s), b.labels[s]);
    return;
  }
  for (int64_t s = 0; s < b.batch; ++s) {
    std::vector<int64_t> p(b.lengths[s]), t(b.lengths[s]);
    for (int64_t i = 0; i < b.lengths[s]; ++i) {
      p[i] = predicted.at(i * b.batch + s);
      t[i] = b.targets[i * b.batch + s];
    }
    scorer.add_sequence(p, t);
  }
}

datasets::ClassificationBatch split_batch(const datasets::SequenceTask& task, datasets::Split split, int64_t first,
                                          int64_t count) {
  std::vector<datasets::LabelledSequence> examples;
  examples.reserve(count);
  for (int64_t i = first; i < first + count; ++i) examples.push_back(task.example(split, i));
  return datasets::make_batch(examples);
}

Evaluation evaluate(SequenceClassifier& model, const datasets::SequenceTask& task, datasets::Split split,
                    int64_t batch_size, int64_t limit) {
  LOOM_CHECK(batch_size >= 1, "evaluate: batch_size must be positive, got ", batch_size);
  const int64_t total = limit > 0 ? std::min(limit, task.split_size(split)) : task.split_size(split);
  const bool was_training = model.training();
  model.eval();
  NoGradGuard no_grad;
  const Device device = model.parameters().front().device();
  datasets::Scorer scorer(task.blank_class());
  double loss_sum = 0.0, weight_sum = 0.0;
  for (int64_t first = 0; first < total; first += batch_size) {
    const int64_t count = std::min(batch_size, total - first);
    const datasets::ClassificationBatch batch = split_batch(task, split, first, count);
    const BatchResult r = classify_batch(model, to_tensors(batch, device), task.labels_every_token());
    // Weighted by what the loss averages over: labelled tokens, or sequences.
    double weight = static_cast<double>(count);
    if (task.labels_every_token()) {
      weight = 0.0;
      for (int64_t n : batch.lengths) weight += static_cast<double>(n);
    }
    loss_sum += r.loss.item() * weight;
    weight_sum += weight;
    score_batch(scorer, batch, r.predicted);
  }
  model.train(was_training);
  Evaluation e;
  e.examples = total;
  e.loss = loss_sum / weight_sum;
  e.accuracy = scorer.accuracy();
  e.output_accuracy = scorer.output_accuracy();
  return e;
}

}  // namespace loom::models
