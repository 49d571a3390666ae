// feedback.cpp: the Feedback Transformer (models/FAMILIES.md §3).
//
// For t = 0 … L−1, with the memory M_{<t} = m_0 … m_{t−1}:
//   h^{(0)} = Emb[token_t]
//   h^{(l)} = u + FFN_l(LN_ff(u)),  u = h^{(l−1)} + Attn_l(LN_sa(h^{(l−1)}), M_{<t})   (u = h^{(l−1)} at t = 0)
//   m_t     = Σ_{l=0..N} softmax(weights)_l h^{(l)}
// then logits = generator(LN(h^{(N)})) over all steps at once.
//
// The memory and its gradients
// ----------------------------
// Step t attends over the keys and values of m_0 … m_{t−1}. labml keeps them in a
// preallocated Stack: k_t = W^K m_t is computed once, written into row t, and each
// step reads the rows written so far as a view. A custom autograd function routes
// the views' gradients to the k_t that made each row: every read adds its gradient
// into a shared buffer, and the read of step t+1 hands row t's total back to k_t
// (complete by then, because every later read runs its backward first).
//
// loom does the same through FeedbackMemory (engine/ops.h): feedback_memory_append
// writes k_t into row t of a preallocated buffer, and each read's backward adds its
// gradient of rows [0, s) into the memory's gradient buffer in place. The appends
// form a chain (each takes the previous one's output token, and every read takes the
// newest), so the walker reaches the append of row t only after every read of it,
// and that node hands row t's total to k_t. O(L) memory and projections, and no
// [s, B, H, D] gradient per read for the walker to sum.
// tests/test_feedback.cpp compares logits and gradients with a naive composition that
// stacks and re-projects the whole memory at every step.
//
// The original variant has per-layer keys and values. A memory row never changes once
// written, so neither do a layer's key and value of it: each step projects only the new
// memory vector, with each layer's weights, into per-layer buffers. Same numbers as
// re-projecting the whole memory at every step, at O(L) instead of O(L²) work.
//
// Relative positions: step t reads the last t rows of each table (row 4096 − distance).
// A forward narrows each table once to its last L − 1 rows, so a step's gradient for the
// tables covers L − 1 rows instead of 4096.
#include "models/families/feedback.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/record.h"

namespace loom::models {

// ---- modules (construction and state_dict names) ------------------------------------------

FeedbackAttention::FeedbackAttention(const ModelConfig& c, bool own_key_value, Generator& gen)
    : query(c.d_model, c.heads, c.d_model / c.heads, false, gen), output(c.d_model, c.d_model, true, gen) {
  const int64_t d_k = c.d_model / c.heads;
  // Own tensors first, as in labml's state_dict.
  key_pos_embeddings = register_parameter("key_pos_embeddings", Tensor::zeros({kRelativePositions, c.heads, d_k}));
  key_pos_bias = register_parameter("key_pos_bias", Tensor::zeros({kRelativePositions, c.heads}));
  query_pos_bias = register_parameter("query_pos_bias", Tensor::zeros({c.heads, d_k}));
  register_module("query", query);
  if (own_key_value) {
    key = std::make_unique<HeadProjection>(c.d_model, c.heads, d_k, false, gen);
    value = std::make_unique<HeadProjection>(c.d_model, c.heads, d_k, true, gen);
    register_module("key", *key);
    register_module("value", *value);
  }
  register_module("output", output);
}

FeedbackLayer::FeedbackLayer(const ModelConfig& c, bool own_key_value, Generator& gen)
    : attn(c, own_key_value, gen),
      feed_forward(c.d_model, c.d_ff, Activation::relu, c.dropout, gen),
      norm_self_attn(c.d_model),
      norm_ff(c.d_model) {
  register_module("attn", attn);
  register_module("feed_forward", feed_forward);
  register_module("norm_self_attn", norm_self_attn);
  register_module("norm_ff", norm_ff);
}

FeedbackStack::FeedbackStack(const ModelConfig& c, Generator& gen) : norm(c.d_model) {
  weights = register_parameter("weights", Tensor::ones({c.layers + 1}));
  for (int64_t l = 0; l < c.layers; ++l) {
    layers.push_back(std::make_unique<FeedbackLayer>(c, !c.shared_kv, gen));
    register_module("layers." + std::to_string(l), *layers.back());
  }
  // labml's clone_module_list deep-copies one prototype: every layer starts identical.
  {
    GradModeGuard no_grad(false);
    const NamedTensors prototype = layers[0]->named_parameters();
    for (size_t l = 1; l < layers.size(); ++l) {
      const NamedTensors copy = layers[l]->named_parameters();
      for (size_t i = 0; i < copy.size(); ++i) copy_(copy[i].second, prototype[i].second);
    }
  }
  register_module("norm", norm);
  if (c.shared_kv) {
    const int64_t d_k = c.d_model / c.heads;
    key = std::make_unique<HeadProjection>(c.d_model, c.heads, d_k, false, gen);
    value = std::make_unique<HeadProjection>(c.d_model, c.heads, d_k, false, gen);
    register_module("key", *key);
    register_module("value", *value);
  }
}

namespace {

const ModelConfig& checked(const ModelConfig& c) {
  LOOM_CHECK(c.vocab >= 1, "model.vocab: expected a positive integer, got ", c.vocab);
  LOOM_CHECK(c.layers >= 1, "model.layers: expected a positive integer, got ", c.layers);
  LOOM_CHECK(c.d_model >= 1, "model.d_model: expected a positive integer, got ", c.d_model);
  check_heads(c.d_model, c.heads);
  LOOM_CHECK(c.d_ff >= 1, "model.d_ff: expected a positive integer, got ", c.d_ff);
  LOOM_CHECK(c.max_seq_len >= 1 && c.max_seq_len <= FeedbackAttention::kRelativePositions,
             "model.max_seq_len: ", c.max_seq_len, " is outside [1, ", FeedbackAttention::kRelativePositions,
             "] (the feedback attention's relative positions)");
  // The fused step attention has no dropout on its probabilities (labml's default p is 0).
  LOOM_CHECK(c.dropout == 0.0, "model.dropout: the feedback family supports only 0, got ", c.dropout);
  return c;
}

}  // namespace

FeedbackTransformer::FeedbackTransformer(const ModelConfig& config)
    : LanguageModel(checked(config)),
      init_gen_(config_.seed),
      src_embed(config_.vocab, config_.d_model, init_gen_),
      transformer(config_, init_gen_),
      generator(config_.d_model, config_.vocab, true, init_gen_) {
  register_module("src_embed", src_embed);
  register_module("transformer", transformer);
  register_module("generator", generator);
}

// ---- the memory -----------------------------------------------------------------------------

// The per-sequence state of a forward or of decoding. Shared-KV: one key and one value
// memory; original: one of each per layer.
struct FeedbackState : DecodeState {
  std::vector<FeedbackMemory> keys, values;  // rows [capacity, B, H, d_k]: see the top
  int64_t batch = 0, capacity = 0, steps = 0;
};

std::unique_ptr<FeedbackState> FeedbackTransformer::new_state(int64_t batch, int64_t capacity) const {
  auto state = std::make_unique<FeedbackState>();
  state->batch = batch;
  state->capacity = capacity;
  const int64_t memories = config_.shared_kv ? 1 : config_.layers;
  const int64_t d_k = config_.d_model / config_.heads;
  // The buffers follow the parameters' dtype and device (float64 for gradient checks).
  const DType dtype = transformer.weights.dtype();
  const Device device = transformer.weights.device();
  // Shared-KV: every layer reads the one memory at each step, and the memory adds the
  // layers' gradients of its rows together (engine/ops.h); one read per step has
  // nothing to add together.
  const int64_t pending_reads = config_.shared_kv ? config_.layers : 0;
  for (int64_t i = 0; i < memories; ++i) {
    state->keys.push_back(
        feedback_memory(Tensor::empty({capacity, batch, config_.heads, d_k}, dtype, device), pending_reads));
    state->values.push_back(
        feedback_memory(Tensor::empty({capacity, batch, config_.heads, d_k}, dtype, device), pending_reads));
  }
  return state;
}

std::unique_ptr<DecodeState> FeedbackTransformer::start_decoding(int64_t batch) const {
  LOOM_CHECK(batch >= 1, "feedback: start_decoding needs a positive batch size, got ", batch);
  return new_state(batch, config_.max_seq_len);
}

// ---- one step -------------------------------------------------------------------------------

namespace {

// A Linear as the steps of one forward use it: y = x·Wᵀ + b for x [B, in].
// When gradients are recorded, Wᵀ is copied to a contiguous [in, out] tensor once per
// forward and multiplied, bias included, through stepped_matmul (engine/ops.h): each
// step files its input and, in the backward, its output's gradient, and the weight's
// and the bias's gradients are one product and one sum over all the steps' rows
// instead of L products of rank B and L sums. Without gradients (decoding) it is
// linear, which reads the weight in place.
struct StepLinear {
  Tensor weight, bias;                  // the Linear's: W [out, in], b [out] or undefined
  std::shared_ptr<StepWeight> stepped;  // when gradients are recorded
  StepLinear() = default;
  // step_rows: the rows all the steps of the forward bring together (L·B).
  StepLinear(const Linear& l, int64_t step_rows) : weight(l.weight), bias(l.bias) {
    if (is_grad_enabled() && (l.weight.requires_grad() || (l.bias.defined() && l.bias.requires_grad())))
      stepped = std::make_shared<StepWeight>(step_weight(contiguous(transpose(l.weight, 0, 1)), step_rows, l.bias));
  }
  Tensor operator()(const Tensor& x) const {
    return stepped ? stepped_matmul(x, *stepped) : linear(x, weight, bias);
  }
};

}  // namespace

// What every step of one forward (or decode call) shares: the layers' projections in
// step form, the memory mix, and the relative-position tables cut to the rows the
// steps can reach.
struct FeedbackTransformer::Tables {
  struct Layer {
    StepLinear query, output, layer1, layer2, key, value;  // key, value: original variant
    Tensor pos_emb, pos_bias;                              // the last rows of P and s
  };
  std::vector<Layer> layers;
  StepLinear key, value;  // shared-KV variant
  Tensor mix;             // softmax(weights) as [1, layers + 1]
};

FeedbackTransformer::Tables FeedbackTransformer::tables(int64_t rows_needed, int64_t step_rows) const {
  Tables t;
  const int64_t R = FeedbackAttention::kRelativePositions;
  for (const auto& layer : transformer.layers) {
    const FeedbackAttention& a = layer->attn;
    Tables::Layer s{StepLinear(a.query.linear, step_rows), StepLinear(a.output, step_rows),
                    StepLinear(layer->feed_forward.layer1, step_rows),
                    StepLinear(layer->feed_forward.layer2, step_rows)};
    if (a.key) {
      s.key = StepLinear(a.key->linear, step_rows);
      s.value = StepLinear(a.value->linear, step_rows);
    }
    s.pos_emb = narrow(a.key_pos_embeddings, 0, R - rows_needed, rows_needed);
    s.pos_bias = narrow(a.key_pos_bias, 0, R - rows_needed, rows_needed);
    t.layers.push_back(std::move(s));
  }
  if (transformer.key) {
    t.key = StepLinear(transformer.key->linear, step_rows);
    t.value = StepLinear(transformer.value->linear, step_rows);
  }
  t.mix = reshape(softmax(transformer.weights, 0), {1, config_.layers + 1});
  return t;
}

// One token for the whole batch: ids int64 [B] -> h^{(N)} [B, d_model]. With `remember`,
// the step's memory vector is projected and appended for the steps after it.
Tensor FeedbackTransformer::step(const Tensor& ids, FeedbackState& state, const Tables& tables, bool remember) {
  const int64_t B = state.batch, H = config_.heads, d_k = config_.d_model / H;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d_k));
  const bool has_memory = state.steps > 0;

  std::vector<Tensor> hs{src_embed.forward(ids)};  // h^{(0)}, then each layer's output
  for (size_t l = 0; l < transformer.layers.size(); ++l) {
    const FeedbackLayer& layer = *transformer.layers[l];
    const Tables::Layer& w = tables.layers[l];
    Tensor x = hs.back();
    if (has_memory) {  // step 0 has no memory: the attention sub-block is skipped
      const FeedbackMemory& keys = state.keys[config_.shared_kv ? 0 : l];
      const FeedbackMemory& values = state.values[config_.shared_kv ? 0 : l];
      const Tensor q = reshape(w.query(layer.norm_self_attn.forward(x)), {B, H, d_k});
      const Tensor a = feedback_attention(q, keys, values, w.pos_emb, w.pos_bias,
                                          layer.attn.query_pos_bias, scale);
      x = x + w.output(reshape(a, {B, H * d_k}));
    }
    // FeedForward with ReLU; its dropout is 0 (checked at construction).
    x = x + w.layer2(relu(w.layer1(layer.norm_ff.forward(x))));
    hs.push_back(x);
  }

  if (remember) {
    // m_t = Σ_l softmax(weights)_l h^{(l)}: one [1, N+1]·[N+1, B·d] product.
    const Tensor m = reshape(matmul(tables.mix, reshape(stack(hs, 0), {config_.layers + 1, -1})),
                             {B, config_.d_model});
    auto heads = [&](const Tensor& y) { return reshape(y, {B, H, d_k}); };
    if (config_.shared_kv) {
      feedback_memory_append(state.keys[0], heads(tables.key(m)));
      feedback_memory_append(state.values[0], heads(tables.value(m)));
    } else {
      for (size_t l = 0; l < transformer.layers.size(); ++l) {
        feedback_memory_append(state.keys[l], heads(tables.layers[l].key(m)));
        feedback_memory_append(state.values[l], heads(tables.layers[l].value(m)));
      }
    }
  }
  ++state.steps;
  return hs.back();
}

Tensor FeedbackTransformer::logits(const std::vector<Tensor>& outputs) const {
  return generator.forward(transformer.norm.forward(stack(outputs, 0)));
}

// ---- forward, decoding ----------------------------------------------------------------------

namespace {

void check_tokens(const Tensor& tokens, const char* where) {
  LOOM_CHECK(tokens.defined() && tokens.dtype() == DType::i64 && tokens.dim() == 2, "feedback: ", where,
             " expects int64 tokens [L, B], got ", tokens.defined() ? tokens.describe() : "an undefined tensor");
}

// Row t of tokens [L, B] as ids [B].
Tensor token_row(const Tensor& tokens, int64_t t) { return reshape(narrow(tokens, 0, t, 1), {tokens.size(1)}); }

}  // namespace

Tensor FeedbackTransformer::forward(const Tensor& tokens) {
  check_tokens(tokens, "forward");
  const int64_t L = tokens.size(0), B = tokens.size(1);
  LOOM_CHECK(L >= 1 && B >= 1, "feedback: forward needs at least one step and one sequence, got tokens ",
             tokens.describe());
  LOOM_CHECK(L <= config_.max_seq_len, "feedback: sequence length ", L,
             " exceeds the memory capacity max_seq_len = ", config_.max_seq_len);
  // Fresh buffers every forward: the graph of an earlier forward may still hold views of
  // its own. The last step's memory vector is never read: L − 1 rows suffice.
  const auto state = new_state(B, std::max<int64_t>(L - 1, 1));
  const Tables t = tables(std::max<int64_t>(L - 1, 1), L * B);
  std::vector<Tensor> outputs;
  for (int64_t i = 0; i < L; ++i) outputs.push_back(step(token_row(tokens, i), *state, t, i + 1 < L));
  return logits(outputs);
}

Tensor FeedbackTransformer::decode(DecodeState& base, const Tensor& tokens) {
  auto* state = dynamic_cast<FeedbackState*>(&base);
  LOOM_CHECK(state != nullptr, "feedback: decode was given a state that start_decoding of a feedback model did not make");
  check_tokens(tokens, "decode");
  const int64_t T = tokens.size(0);
  LOOM_CHECK(tokens.size(1) == state->batch, "feedback: decode got tokens ", shape_str(tokens.shape()),
             " for a state of batch size ", state->batch);
  LOOM_CHECK(T >= 1, "feedback: decode needs at least one token, got tokens ", shape_str(tokens.shape()));
  LOOM_CHECK(state->steps + T <= state->capacity, "feedback: decoding ", T, " more tokens after ", state->steps,
             " exceeds the memory capacity max_seq_len = ", state->capacity);
  GradModeGuard no_grad(false);
  const Tables t = tables(FeedbackAttention::kRelativePositions, 0);  // no gradients: no step rows
  std::vector<Tensor> outputs;
  for (int64_t i = 0; i < T; ++i) outputs.push_back(step(token_row(tokens, i), *state, t, true));
  return logits(outputs);
}

// ---- cost -----------------------------------------------------------------------------------

// Forward FLOPs (2 per multiply-add) averaged over the L tokens of a sequence, times 3
// for forward + backward. Step t attends over t memory slots (mean (L−1)/2); step 0 skips
// the attention sub-block; the last step's memory vector is not projected. Counts what
// this implementation computes: the original variant projects each memory vector once
// per layer (labml re-projects the whole memory every step; the results are the same).
double FeedbackTransformer::training_flops_per_token(int64_t seq_len) const {
  const double d = static_cast<double>(config_.d_model), N = static_cast<double>(config_.layers);
  const double L = static_cast<double>(std::max<int64_t>(seq_len, 1));
  const double attending = (L - 1) / L;  // share of steps with a memory
  const double slots = (L - 1) / 2;      // mean memory length
  const double per_layer = attending * (2 * d * d      // query
                                        + 6 * slots * d  // (q+u)·k, q·P, Σ α v
                                        + 2 * d * d)     // output
                           + 4 * d * static_cast<double>(config_.d_ff);
  const double memory = 2 * (N + 1) * d + attending * (config_.shared_kv ? 1.0 : N) * 4 * d * d;
  const double head = 2 * d * static_cast<double>(config_.vocab);
  return 3.0 * (N * per_layer + memory + head);
}

std::unique_ptr<LanguageModel> make_feedback(const ModelConfig& config) {
  return std::make_unique<FeedbackTransformer>(config);
}

}  // namespace loom::models
