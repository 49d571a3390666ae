// test_fast_weights.cpp: the Fast Weights Transformer against an independent
// composition, its gradients, training, incremental decoding, names and config errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>

#include "autodiff/grad_mode.h"
#include "engine/ops.h"
#include "models/programs/config.h"
#include "models/programs/context_probe.h"
#include "models/families/fast_weights.h"
#include "models/programs/generate.h"
#include "models/blocks/optim.h"
#include "tests/family_test_utils.h"
#include "tests/fused_check.h"

namespace loom::test {

namespace {

using models::ModelConfig;
using models::NamedTensors;

ModelConfig tiny_config() {
  ModelConfig c;
  c.family = "fast_weights";
  c.vocab = 11;
  c.d_model = 16;
  c.heads = 2;
  c.d_ff = 24;
  c.layers = 2;
  c.dpfp_nu = 2;
  c.seed = 3;
  return c;
}

// Replaces every parameter by random values (so the layers differ, and the
// LayerNorms are not the identity), in the parameter's dtype.
void randomise_parameters(const models::Module& m, uint64_t seed, double scale = 0.5) {
  NoGradGuard no_grad;
  uint64_t k = 0;
  for (auto& [name, t] : m.named_parameters()) {
    Tensor r = random_f64(t.shape(), seed + k++, -scale, scale);
    if (contains(name, "norm") && contains(name, "weight")) r = r + 1.0;  // LayerNorm gains near 1
    copy_(t, r);
  }
}

Tensor param(const NamedTensors& ps, const std::string& name) {
  for (const auto& [n, t] : ps)
    if (n == name) return t;
  FAIL("no parameter named ", name);
  return Tensor();
}


// ---- the model written out independently, from models/FAMILIES.md §2 ------------------------

// DPFP from the formula: feature (i-1)·2d + j = r[j] · r[(j - i) mod 2d], r = ReLU([x; -x]),
// gathered with index_select; then φ / (Σ φ + 1e-6).
Tensor naive_dpfp(const Tensor& x, int64_t nu) {
  const int64_t d = x.size(-1), n = 2 * d;
  const Tensor r = maximum(concat({x, mul(x, -1.0)}, -1), Tensor::scalar(0.0, x.dtype()));
  std::vector<int64_t> left, right;
  for (int64_t i = 1; i <= nu; ++i)
    for (int64_t j = 0; j < n; ++j) {
      left.push_back(j);
      right.push_back(((j - i) % n + n) % n);
    }
  const int64_t m = static_cast<int64_t>(left.size());
  const Tensor phi = index_select(r, -1, Tensor::from_vector(left, {m})) *
                     index_select(r, -1, Tensor::from_vector(right, {m}));
  return phi / (sum(phi, {-1}, true) + 1e-6);
}

// ELU+1 = x + 1 for x > 0, exp(x) otherwise; then sum normalisation.
Tensor naive_elu_plus_one(const Tensor& x) {
  const Tensor phi = where(gt(x, 0.0), x + 1.0, exp(x));
  return phi / (sum(phi, {-1}, true) + 1e-6);
}

// The recurrence one step at a time: vbar = W k, W += beta (v - vbar) kᵀ (or v kᵀ), y = W q.
Tensor naive_recurrence(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta) {
  const int64_t L = q.size(0), B = q.size(1), H = q.size(2), Dk = q.size(3), Dv = v.size(3);
  Tensor W = Tensor::zeros({B, H, Dv, Dk}, q.dtype());
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < L; ++t) {
    const Tensor qt = narrow(q, 0, t, 1).reshape({B, H, Dk, 1});
    const Tensor kt = narrow(k, 0, t, 1).reshape({B, H, Dk, 1});
    const Tensor vt = narrow(v, 0, t, 1).reshape({B, H, Dv, 1});
    Tensor u = vt;
    if (beta.defined()) u = narrow(beta, 0, t, 1).reshape({B, H, 1, 1}) * (vt - matmul(W, kt));
    W = W + matmul(u, transpose(kt, 2, 3));
    ys.push_back(matmul(W, qt).reshape({1, B, H, Dv}));
  }
  return concat(ys, 0);
}

Tensor naive_linear(const NamedTensors& ps, const Tensor& x, const std::string& prefix, bool bias) {
  Tensor y = matmul(x, transpose(param(ps, prefix + ".weight"), 0, 1));
  return bias ? y + param(ps, prefix + ".bias") : y;
}

Tensor naive_layer_norm(const NamedTensors& ps, const Tensor& x, const std::string& prefix) {
  const Tensor centred = x - mean(x, {-1}, true);
  const Tensor var = mean(centred * centred, {-1}, true);
  return centred / sqrt(var + 1e-5) * param(ps, prefix + ".weight") + param(ps, prefix + ".bias");
}

Tensor naive_logits(const ModelConfig& c, const NamedTensors& ps, const Tensor& tokens) {
  const int64_t L = tokens.size(0), B = tokens.size(1), H = c.heads, dk = c.d_model / c.heads;
  Tensor x = index_select(param(ps, "src_embed.weight"), 0, tokens.reshape({L * B})).reshape({L, B, c.d_model});
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "transformer.layers." + std::to_string(l) + ".";
    const Tensor a_in = c.attention_layer_norm ? naive_layer_norm(ps, x, p + "norm_self_attn") : x;
    auto heads = [&](const std::string& name, int64_t size) {
      return naive_linear(ps, a_in, p + "attn." + name, false).reshape({L, B, H, size});
    };
    auto phi = [&](const Tensor& t) {
      return c.feature_map == "dpfp" ? naive_dpfp(t, c.dpfp_nu) : naive_elu_plus_one(t);
    };
    const Tensor beta = c.update_rule == "delta" ? sigmoid(heads("interpolation_weight.0.linear", 1)) : Tensor();
    const Tensor y = naive_recurrence(phi(heads("query.linear", dk)), phi(heads("key.linear", dk)),
                                      heads("value.linear", dk), beta);
    x = x + naive_linear(ps, y.reshape({L, B, c.d_model}), p + "attn.output", true);
    const Tensor z = naive_layer_norm(ps, x, p + "norm_ff");
    x = x + naive_linear(ps, relu(naive_linear(ps, z, p + "feed_forward.layer1", true)), p + "feed_forward.layer2",
                         true);
  }
  return naive_linear(ps, naive_layer_norm(ps, x, "transformer.norm"), "generator", true);
}

std::unique_ptr<models::LanguageModel> tiny_model(const ModelConfig& c, DType dtype, uint64_t seed = 17) {
  auto model = models::make_model(c);
  if (dtype != DType::f32) model->to(dtype);
  randomise_parameters(*model, seed);
  return model;
}

double max_abs_relative(const Tensor& a, const Tensor& b) {
  return relative_difference(cast(a, DType::f64).to_vector<double>(), cast(b, DType::f64).to_vector<double>());
}

}  // namespace

// ---- (a) forward against the independent composition ----------------------------------

TEST_CASE("fast_weights: logits equal an independent step-by-step composition (float64)") {
  struct Variant {
    const char* name;
    std::string feature_map, update_rule;
    int64_t nu;
    bool attention_layer_norm;
  };
  const Variant variants[] = {
      {"labml default (DPFP nu=1, delta)", "dpfp", "delta", 1, false},
      {"DPFP nu=2", "dpfp", "delta", 2, false},
      {"DPFP nu=3, attention layer norm", "dpfp", "delta", 3, true},
      {"ELU+1, delta", "elu_plus_one", "delta", 1, false},
      {"DPFP, sum rule", "dpfp", "sum", 1, false},
      {"ELU+1, sum rule (linear transformer), attention layer norm", "elu_plus_one", "sum", 1, true},
  };
  for (const Variant& v : variants) {
    INFO("variant: ", std::string(v.name));
    ModelConfig c = tiny_config();
    c.feature_map = v.feature_map;
    c.update_rule = v.update_rule;
    c.dpfp_nu = v.nu;
    c.attention_layer_norm = v.attention_layer_norm;
    auto model = tiny_model(c, DType::f64);
    const Tensor tokens = random_tokens(9, 3, c.vocab, 5);
    NoGradGuard no_grad;
    const Tensor logits = model->forward(tokens);
    CHECK(logits.shape() == (Shape{9, 3, c.vocab}));
    CHECK(logits.dtype() == DType::f64);
    const Tensor expected = naive_logits(c, model->named_parameters(), tokens);
    CHECK(max_abs_relative(logits, expected) < 1e-10);
  }
}

TEST_CASE("fast_weights: DPFP follows labml's roll order and sums to 1") {
  // d = 2: r = (r0, r1, r2, r3) = ReLU(x0, x1, -x0, -x1); nu = 1 pairs r[j] with r[j-1 mod 4].
  const Tensor x = Tensor::from_vector<double>({0.5, -2.0}, {2});
  const std::vector<double> phi = models::dpfp_features(x, 1, 0.0).to_vector<double>();
  // r = (0.5, 0, 0, 2): products r0·r3, r1·r0, r2·r1, r3·r2 = (1, 0, 0, 0), normalised.
  REQUIRE(phi.size() == 4);
  CHECK(phi[0] == doctest::Approx(1.0));
  CHECK(phi[1] == 0.0);
  CHECK(phi[2] == 0.0);
  CHECK(phi[3] == 0.0);
  const Tensor y = Tensor::from_vector<double>({0.3, 0.7, -0.2}, {3});
  const std::vector<double> p = models::dpfp_features(y, 2, 0.0).to_vector<double>();
  // r = (0.3, 0.7, 0, 0, 0, 0.2); nu = 2 block 2 pairs r[j] with r[j-2 mod 6].
  const double r[6] = {0.3, 0.7, 0.0, 0.0, 0.0, 0.2};
  std::vector<double> raw;
  for (int i = 1; i <= 2; ++i)
    for (int j = 0; j < 6; ++j) raw.push_back(r[j] * r[(j - i + 6) % 6]);
  double s = 0.0;
  for (double e : raw) s += e;
  REQUIRE(p.size() == 12);
  for (size_t j = 0; j < raw.size(); ++j) CHECK(p[j] == doctest::Approx(raw[j] / s));
}

// ---- (b) gradients ---------------------------------------------------------------------

TEST_CASE("fast_weights: float64 gradients of the loss match central differences") {
  ModelConfig c = tiny_config();
  auto model = tiny_model(c, DType::f64);
  const Tensor tokens = random_tokens(7, 2, c.vocab, 9);
  const Tensor targets = random_tokens(7, 2, c.vocab, 10).reshape({14});
  auto loss = [&] { return cross_entropy(model->forward(tokens).reshape({14, c.vocab}), targets); };
  loss().backward();

  std::mt19937_64 rng(4);
  int checked = 0;
  for (const auto& item : model->named_parameters()) {
    const auto& name = item.first;
    const auto& t = item.second;
    INFO("parameter: ", name);
    // labml's layers own norm_self_attn but never use it: no gradient reaches it.
    if (contains(name, "norm_self_attn")) {
      CHECK(!t.grad().defined());
      continue;
    }
    REQUIRE(t.grad().defined());
    const std::vector<double> grad = t.grad().to_vector<double>();
    for (int sample = 0; sample < 3; ++sample) {
      const int64_t i = static_cast<int64_t>(rng() % t.numel());
      double* element = t.data<double>() + i;
      const double saved = *element, eps = 1e-6;
      double up, down;
      {
        NoGradGuard no_grad;
        *element = saved + eps;
        up = loss().item();
        *element = saved - eps;
        down = loss().item();
        *element = saved;
      }
      const double numeric = (up - down) / (2 * eps);
      INFO("element ", i, ": analytic ", grad[i], ", numeric ", numeric);
      CHECK(std::abs(grad[i] - numeric) <= 1e-8 + 1e-5 * std::abs(numeric));
      ++checked;
    }
  }
  CHECK(checked >= 3 * 20);
}

// ---- (c) training --------------------------------------------------------------------------

TEST_CASE("fast_weights: a tiny model overfits one batch") {
  ModelConfig c = tiny_config();
  c.d_model = 32;
  c.heads = 4;
  c.d_ff = 64;
  c.dpfp_nu = 1;
  auto model = models::make_model(c);
  const Tensor tokens = random_tokens(16, 4, c.vocab, 1);
  const Tensor targets = random_tokens(16, 4, c.vocab, 2);
  const std::pair<double, double> losses = overfit_one_batch(*model, tokens, targets, 150, 1e-2, models::AdamForm::labml);
  const double first = losses.first, late = losses.second;
  INFO("loss: first ", first, ", lowest of the last quarter ", late);
  CHECK(first > 2.0);  // about log(11) = 2.4 at the start
  CHECK(late < 0.05);
}

// ---- (d) incremental decoding ---------------------------------------------------------------

TEST_CASE("fast_weights: incremental decoding equals the full forward, token by token and in chunks") {
  for (const std::string rule : {"delta", "sum"}) {
    INFO("update rule: ", rule);
    ModelConfig c = tiny_config();
    c.update_rule = rule;
    auto model = tiny_model(c, DType::f32);
    model->eval();
    const int64_t L = 13, B = 3;
    const Tensor tokens = random_tokens(L, B, c.vocab, 7);
    NoGradGuard no_grad;
    const Tensor full = model->forward(tokens);
    for (const std::vector<int64_t>& chunks : {std::vector<int64_t>(L, 1), std::vector<int64_t>{3, 1, 5, 4}}) {
      INFO("chunks of ", chunks.size() == static_cast<size_t>(L) ? "1" : "3, 1, 5, 4");
      auto state = model->start_decoding(B);
      std::vector<Tensor> parts;
      int64_t start = 0;
      for (int64_t n : chunks) {
        parts.push_back(model->decode(*state, narrow(tokens, 0, start, n)));
        start += n;
      }
      REQUIRE(start == L);
      const Tensor decoded = concat(parts, 0);
      REQUIRE(decoded.shape() == full.shape());
      CHECK(max_abs_relative(decoded, full) < 1e-5);
    }
  }
}

TEST_CASE("fast_weights: greedy generation with the carried W equals recomputing the whole text each step") {
  ModelConfig c = tiny_config();
  auto model = tiny_model(c, DType::f32, 23);
  model->eval();
  const std::vector<int64_t> prompt = {1, 4, 2};
  Generator gen(0);
  const std::vector<int64_t> generated = models::generate_tokens(*model, prompt, 12, {}, gen);
  // labml's sampling: run the whole text so far, take the argmax at the last position.
  std::vector<int64_t> text = prompt;
  NoGradGuard no_grad;
  for (size_t n = 0; n < generated.size(); ++n) {
    const int64_t L = static_cast<int64_t>(text.size());
    const Tensor logits = model->forward(Tensor::from_vector(text, {L, 1}));
    const int64_t next = argmax(narrow(logits, 0, L - 1, 1).reshape({c.vocab}), 0).to_vector<int64_t>()[0];
    INFO("token ", n);
    CHECK(generated[n] == next);
    text.push_back(next);
  }
}

TEST_CASE("fast_weights: decoding carries one W per layer and refuses a mismatched batch") {
  ModelConfig c = tiny_config();
  auto model = models::make_model(c);
  NoGradGuard no_grad;
  auto state = model->start_decoding(2);
  model->decode(*state, random_tokens(4, 2, c.vocab, 1));
  auto& s = dynamic_cast<models::FastWeightsState&>(*state);
  REQUIRE(s.layers.size() == 2);
  REQUIRE(s.layers[0].size() == 1);
  // [B, H, d_k, d_dot] with d_dot = 2·d_k·nu = 2·8·2.
  CHECK(s.layers[0][0].shape() == (Shape{2, 2, 8, 32}));
  const std::string msg = error_of([&] { model->decode(*state, random_tokens(1, 3, c.vocab, 1)); });
  CHECK(contains(msg, "fast_weights"));
  CHECK(contains(msg, "[1, 3]"));
  CHECK(contains(msg, "batch of 2"));
}

TEST_CASE("fast_weights: dropout draws from the model's generator in training mode only") {
  ModelConfig c = tiny_config();
  c.dropout = 0.3;
  auto model = models::make_model(c);
  const Tensor tokens = random_tokens(6, 2, c.vocab, 3);
  NoGradGuard no_grad;
  const Tensor a = model->forward(tokens), b = model->forward(tokens);
  CHECK(max_abs_relative(a, b) > 1e-3);  // fresh masks each call
  model->eval();
  const Tensor e1 = model->forward(tokens), e2 = model->forward(tokens);
  CHECK(max_abs_relative(e1, e2) == 0.0);
  // A model with the same seed draws the same masks.
  auto twin = models::make_model(c);
  CHECK(max_abs_relative(twin->forward(tokens), a) == 0.0);
}

// ---- (e) names and shapes -----------------------------------------------------------------------

TEST_CASE("fast_weights: the default config has labml's 89 state_dict entries and 18,997,313 parameters") {
  ModelConfig c;
  c.family = "fast_weights";
  auto model = models::make_model(c);
  // models/FAMILIES.md §2.4, in state_dict order.
  std::vector<std::pair<std::string, Shape>> expected = {{"src_embed.weight", {65, 512}}};
  for (int l = 0; l < 6; ++l) {
    const std::string p = "transformer.layers." + std::to_string(l) + ".";
    const std::vector<std::pair<std::string, Shape>> layer = {
        {"attn.query.linear.weight", {512, 512}},
        {"attn.key.linear.weight", {512, 512}},
        {"attn.value.linear.weight", {512, 512}},
        {"attn.interpolation_weight.0.linear.weight", {8, 512}},
        {"attn.output.weight", {512, 512}},
        {"attn.output.bias", {512}},
        {"feed_forward.layer1.weight", {2048, 512}},
        {"feed_forward.layer1.bias", {2048}},
        {"feed_forward.layer2.weight", {512, 2048}},
        {"feed_forward.layer2.bias", {512}},
        {"norm_self_attn.weight", {512}},
        {"norm_self_attn.bias", {512}},
        {"norm_ff.weight", {512}},
        {"norm_ff.bias", {512}},
    };
    for (const auto& [name, shape] : layer) expected.push_back({p + name, shape});
  }
  expected.push_back({"transformer.norm.weight", {512}});
  expected.push_back({"transformer.norm.bias", {512}});
  expected.push_back({"generator.weight", {65, 512}});
  expected.push_back({"generator.bias", {65}});

  const NamedTensors got = model->named_parameters();
  REQUIRE(got.size() == 89);
  REQUIRE(expected.size() == 89);
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("entry ", i);
    CHECK(got[i].first == expected[i].first);
    CHECK(got[i].second.shape() == expected[i].second);
    CHECK(got[i].second.dtype() == DType::f32);
  }
  CHECK(model->parameter_count() == 18997313);
  CHECK(model->named_buffers().empty());
}

TEST_CASE("fast_weights: layers start identical; the sum rule has no interpolation_weight") {
  ModelConfig c = tiny_config();
  auto model = models::make_model(c);
  std::map<std::string, std::vector<float>> layer0;
  for (const auto& [name, t] : model->named_parameters())
    if (name.rfind("transformer.layers.0.", 0) == 0) layer0[name.substr(21)] = t.to_vector<float>();
  int compared = 0;
  for (const auto& item : model->named_parameters()) {
    const auto& name = item.first;
    const auto& t = item.second;
    if (name.rfind("transformer.layers.1.", 0) == 0) {
      INFO(name);
      CHECK(t.to_vector<float>() == layer0.at(name.substr(21)));
      ++compared;
    }
  }
  CHECK(compared == 14);
  // ...but a layer's projections differ from one another.
  CHECK(layer0.at("attn.query.linear.weight") != layer0.at("attn.key.linear.weight"));

  c.update_rule = "sum";
  for (const auto& item : models::make_model(c)->named_parameters()) {
    const std::string& name = item.first;
    CHECK_MESSAGE(!contains(name, "interpolation_weight"), name);
  }
}

TEST_CASE("fast_weights: training_flops_per_token counts the products and the recurrence") {
  ModelConfig c;
  c.family = "fast_weights";
  auto model = models::make_model(c);
  // 6 per matrix weight (the embedding table is only looked up) + per layer and head
  // 3 passes (read, write, read out) over W [64, 128] at 2 FLOPs, x3 with the backward.
  double matrix_weights = 0;
  for (const auto& [name, t] : model->named_parameters())
    if (t.dim() == 2 && name != "src_embed.weight") matrix_weights += static_cast<double>(t.numel());
  const double recurrence = 6.0 * 8 * 64 * 128 * 3 * 2 * 3;
  CHECK(model->training_flops_per_token(128) == doctest::Approx(6.0 * matrix_weights + recurrence));
  CHECK(model->training_flops_per_token(1024) == model->training_flops_per_token(128));
}

// ---- (f) config errors -------------------------------------------------------------------------------

TEST_CASE("fast_weights: config errors name the key") {
  auto error_for = [](auto change) {
    ModelConfig c = tiny_config();
    change(c);
    return error_of([&] { models::make_model(c); });
  };
  std::string msg = error_for([](ModelConfig& c) { c.feature_map = "relu"; });
  CHECK(contains(msg, "model.feature_map"));
  CHECK(contains(msg, "'relu'"));
  msg = error_for([](ModelConfig& c) { c.dpfp_nu = 0; });
  CHECK(contains(msg, "model.dpfp_nu"));
  CHECK(contains(msg, "got 0"));
  msg = error_for([](ModelConfig& c) { c.dpfp_nu = 16; });  // d_k = 8: at most 15
  CHECK(contains(msg, "model.dpfp_nu"));
  CHECK(contains(msg, "[1, 15]"));
  msg = error_for([](ModelConfig& c) { c.update_rule = "hebb"; });
  CHECK(contains(msg, "model.update_rule"));
  CHECK(contains(msg, "'hebb'"));
  msg = error_for([](ModelConfig& c) { c.heads = 3; });
  CHECK(contains(msg, "model.heads"));
  // dpfp_nu only matters with DPFP features.
  CHECK(error_for([](ModelConfig& c) {
          c.feature_map = "elu_plus_one";
          c.dpfp_nu = 0;
        }) == "");
}

// ---- (g) the other fast layers (model.fast_layer) -------------------------------------------------

namespace {

// The kinds the model builds: every test below covers each of them.
std::vector<std::string> fast_layers() { return {std::begin(models::kFastLayers), std::end(models::kFastLayers)}; }

ModelConfig tiny_layer_config(const std::string& kind) {
  ModelConfig c = tiny_config();
  c.fast_layer = kind;
  c.dpfp_nu = 1;
  if (kind == "delta_mlp") c.fast_net_depth = 2;
  if (kind == "delta_rnn" || kind == "delta_lstm") c.feature_map = "elu_plus_one";  // the authors' features
  return c;
}

// One delta-rule step per batch item and head, written out: W [B, H, Dv, Dk] +=
// beta (v - W k) kᵀ (beta undefined: v kᵀ); returns W q, read after the write.
Tensor naive_step(Tensor& W, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta) {
  const Tensor kc = unsqueeze(k, -1), vc = unsqueeze(v, -1);
  const Tensor u = beta.defined() ? unsqueeze(beta, -1) * (vc - matmul(W, kc)) : vc;
  W = W + matmul(u, transpose(kc, -1, -2));
  return squeeze(matmul(W, unsqueeze(q, -1)), -1);
}

Tensor at_step(const Tensor& x, int64_t t) { return squeeze(narrow(x, 0, t, 1), 0); }
Tensor part(const Tensor& x, int64_t start, int64_t length) { return narrow(x, -1, start, length); }

// The fast parts of the layers other than delta_net as one loop over time, from
// models/FAMILIES.md §2.7: per step every fast matrix's write, then its read, with
// matmul, softmax, sigmoid and tanh (the layers run delta_rule once per matrix over the
// whole sequence, or their fused op). p [L, B, H, width] is the slow projection.
Tensor naive_fast_part(const ModelConfig& c, const NamedTensors& ps, const std::string& prefix, const Tensor& p) {
  const int64_t L = p.size(0), B = p.size(1), H = c.heads, d = c.d_model / c.heads, hidden = c.d_ff / c.heads;
  auto phi = [&](const Tensor& t) { return c.feature_map == "dpfp" ? naive_dpfp(t, c.dpfp_nu) : naive_elu_plus_one(t); };
  auto fsize = [&](int64_t n) { return c.feature_map == "dpfp" ? 2 * n * c.dpfp_nu : n; };
  std::vector<Tensor> ys;
  if (c.fast_layer == "delta_delta") {
    Tensor W1 = Tensor::zeros({B, H, 3 * d + 1, fsize(d)}, p.dtype()), W2 = Tensor::zeros({B, H, d, fsize(d)}, p.dtype());
    for (int64_t t = 0; t < L; ++t) {
      const Tensor pt = at_step(p, t);
      const Tensor o = naive_step(W1, phi(part(pt, 0, d)), phi(part(pt, d, d)), part(pt, 2 * d, 3 * d + 1),
                                  sigmoid(part(pt, 5 * d + 1, 1)));
      ys.push_back(naive_step(W2, phi(part(o, 0, d)), phi(part(o, d, d)), part(o, 2 * d, d), sigmoid(part(o, 3 * d, 1))));
    }
  } else if (c.fast_layer == "delta_rnn") {
    Tensor W = Tensor::zeros({B, H, d, fsize(d)}, p.dtype()), R = Tensor::zeros({B, H, d, d}, p.dtype());
    Tensor y = Tensor::zeros({B, H, d}, p.dtype());
    for (int64_t t = 0; t < L; ++t) {
      const Tensor pt = at_step(p, t);
      const Tensor z = naive_step(W, phi(part(pt, 0, d)), phi(part(pt, d, d)), part(pt, 2 * d, d), sigmoid(part(pt, 3 * d, 1)));
      y = z + naive_step(R, softmax(y, -1), softmax(part(pt, 3 * d + 1, d), -1), part(pt, 4 * d + 1, d),
                         sigmoid(part(pt, 5 * d + 1, 1)));
      ys.push_back(y);
    }
  } else if (c.fast_layer == "delta_lstm") {
    Tensor W = Tensor::zeros({B, H, 3, d, fsize(d)}, p.dtype()), R = Tensor::zeros({B, H, 3, d, d}, p.dtype());
    Tensor h = Tensor::zeros({B, H, d}, p.dtype()), cell = h;
    for (int64_t t = 0; t < L; ++t) {
      const Tensor pt = at_step(p, t).reshape({B, H, 3, 5 * d + 2});  // gates i, u, o
      const Tensor z = naive_step(W, phi(part(pt, 0, d)), phi(part(pt, d, d)), part(pt, 2 * d, d), sigmoid(part(pt, 3 * d, 1)));
      const Tensor s_prev = unsqueeze(softmax(h, -1), 2);
      const Tensor r = naive_step(R, concat({s_prev, s_prev, s_prev}, 2), softmax(part(pt, 3 * d + 1, d), -1),
                                  part(pt, 4 * d + 1, d), sigmoid(part(pt, 5 * d + 1, 1)));
      auto gate = [&](int64_t g) { return squeeze(narrow(z + r, 2, g, 1), 2); };
      const Tensor i = sigmoid(gate(0)), u = gate(1), o = sigmoid(gate(2));
      cell = i * u + (1.0 - i) * cell;
      h = o * cell;
      ys.push_back(h);
    }
  } else if (c.fast_layer == "rdn") {
    Tensor W = Tensor::zeros({B, H, d, d}, p.dtype()), y = Tensor::zeros({B, H, d}, p.dtype());
    // (R a)[i] = Σ_j R[h, i, j] a[j], written as a broadcast product and a sum.
    auto apply = [&](const std::string& name, const Tensor& a) { return sum(param(ps, prefix + name) * unsqueeze(a, -2), {-1}); };
    for (int64_t t = 0; t < L; ++t) {
      const Tensor pt = at_step(p, t), a = tanh(y);
      const Tensor q = softmax(part(pt, 0, d) + apply("recurrent_query", a), -1);
      const Tensor k = softmax(part(pt, d, d) + apply("recurrent_key", a), -1);
      const Tensor v = part(pt, 2 * d, d) + apply("recurrent_value", a);
      const Tensor beta = sigmoid(part(pt, 3 * d, 1) + sum(param(ps, prefix + "recurrent_beta") * a, {-1}, true));
      y = naive_step(W, q, k, v, beta);
      ys.push_back(y);
    }
  } else {  // delta_mlp
    std::vector<Tensor> Ws;
    std::vector<std::pair<int64_t, int64_t>> dims;
    for (int64_t b = 0; b < c.fast_net_depth; ++b) {
      dims.push_back({d, hidden});
      dims.push_back({hidden, d});
    }
    for (const auto& [in, out] : dims) Ws.push_back(Tensor::zeros({B, H, out, fsize(in)}, p.dtype()));
    for (int64_t t = 0; t < L; ++t) {
      const Tensor pt = at_step(p, t);
      Tensor h = part(pt, 0, d), a;
      int64_t offset = d;
      for (size_t j = 0; j < dims.size(); ++j) {
        const auto [in, out] = dims[j];
        const Tensor input = phi(naive_layer_norm(ps, j % 2 == 0 ? h : a, prefix + "norms." + std::to_string(j)));
        const Tensor y = naive_step(Ws[j], input, phi(part(pt, offset, in)), part(pt, offset + in, out),
                                    sigmoid(part(pt, offset + in + out, 1)));
        offset += in + out + 1;
        if (j % 2 == 0) a = y;
        else h = h + y;
      }
      ys.push_back(h);
    }
  }
  return stack(ys, 0);  // [L, B, H, d]
}

// naive_logits with the fast part of another fast_layer.
Tensor naive_layer_logits(const ModelConfig& c, const NamedTensors& ps, const Tensor& tokens) {
  const int64_t L = tokens.size(0), B = tokens.size(1);
  Tensor x = index_select(param(ps, "src_embed.weight"), 0, tokens.reshape({L * B})).reshape({L, B, c.d_model});
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "transformer.layers." + std::to_string(l) + ".";
    const Tensor slow = naive_linear(ps, x, p + "attn.slow.linear", false);
    const Tensor projected = slow.reshape({L, B, c.heads, slow.size(-1) / c.heads});
    const Tensor y = naive_fast_part(c, ps, p + "attn.", projected);
    x = x + naive_linear(ps, y.reshape({L, B, c.d_model}), p + "attn.output", true);
    const Tensor z = naive_layer_norm(ps, x, p + "norm_ff");
    x = x + naive_linear(ps, relu(naive_linear(ps, z, p + "feed_forward.layer1", true)), p + "feed_forward.layer2",
                         true);
  }
  return naive_linear(ps, naive_layer_norm(ps, x, "transformer.norm"), "generator", true);
}

}  // namespace

TEST_CASE("fast_weights: every other fast_layer equals a per-step loop of its equations (float64)") {
  for (const char* kind : {"delta_delta", "delta_mlp", "delta_rnn", "delta_lstm", "rdn"})
    for (const char* map : {"dpfp", "elu_plus_one"}) {
      if (std::string(kind) == "rdn" && std::string(map) != "dpfp") continue;  // rdn reads no feature map
      INFO(std::string(kind), ", ", std::string(map));
      ModelConfig c = tiny_layer_config(kind);
      c.feature_map = map;
      auto model = tiny_model(c, DType::f64);
      const Tensor tokens = random_tokens(9, 3, c.vocab, 5);
      NoGradGuard no_grad;
      const Tensor logits = model->forward(tokens);
      CHECK(max_abs_relative(logits, naive_layer_logits(c, model->named_parameters(), tokens)) < 1e-10);
    }
  // linear is the sum rule of the delta_net layer, with the same names.
  ModelConfig c = tiny_layer_config("linear");
  auto model = tiny_model(c, DType::f64);
  const Tensor tokens = random_tokens(9, 3, c.vocab, 5);
  NoGradGuard no_grad;
  c.update_rule = "sum";
  CHECK(max_abs_relative(model->forward(tokens), naive_logits(c, model->named_parameters(), tokens)) < 1e-10);
}

TEST_CASE("fast_weights: every fast_layer decodes incrementally exactly as the full forward, carrying its whole state") {
  for (const std::string& kind : fast_layers()) {
    INFO("fast_layer ", kind);
    ModelConfig c = tiny_layer_config(kind);
    auto model = tiny_model(c, DType::f64);
    model->eval();
    const int64_t L = 11, B = 2;
    const Tensor tokens = random_tokens(L, B, c.vocab, 7);
    NoGradGuard no_grad;
    const Tensor full = model->forward(tokens);
    for (const std::vector<int64_t>& chunks : {std::vector<int64_t>(L, 1), std::vector<int64_t>{3, 1, 5, 2}}) {
      auto state = model->start_decoding(B);
      std::vector<Tensor> parts;
      int64_t start = 0;
      for (int64_t n : chunks) {
        parts.push_back(model->decode(*state, narrow(tokens, 0, start, n)));
        start += n;
      }
      CHECK(max_abs_relative(concat(parts, 0), full) < 1e-10);
      // Every entry of every layer's state is carried (a dropped one would restart from zeros).
      const auto& s = dynamic_cast<models::FastWeightsState&>(*state);
      for (const models::LayerState& layer : s.layers) {
        CHECK(!layer.empty());
        for (const Tensor& t : layer) CHECK((t.defined() && t.size(0) == B && !t.requires_grad()));
      }
    }
    // Decoding from zeros again reproduces the start: nothing leaks between states.
    auto fresh = model->start_decoding(B);
    CHECK(max_abs_relative(model->decode(*fresh, narrow(tokens, 0, 0, 4)), narrow(full, 0, 0, 4)) < 1e-10);
  }
}

TEST_CASE("fast_weights: every fast_layer's float64 gradients match central differences") {
  for (const std::string& kind : fast_layers()) {
    INFO("fast_layer ", kind);
    ModelConfig c = tiny_layer_config(kind);
    c.layers = 1;
    auto model = tiny_model(c, DType::f64);
    const Tensor tokens = random_tokens(6, 2, c.vocab, 9);
    const Tensor targets = random_tokens(6, 2, c.vocab, 10).reshape({12});
    auto loss = [&] { return cross_entropy(model->forward(tokens).reshape({12, c.vocab}), targets); };
    loss().backward();
    std::mt19937_64 rng(4);
    for (const auto& named : model->named_parameters()) {
      // Not a structured binding: clang 14 cannot capture one in INFO's lambda.
      const std::string& name = named.first;
      const Tensor& t = named.second;
      if (contains(name, "norm_self_attn")) continue;
      INFO("parameter: ", name);
      REQUIRE(t.grad().defined());
      const std::vector<double> grad = t.grad().to_vector<double>();
      for (int sample = 0; sample < 2; ++sample) {
        const int64_t i = static_cast<int64_t>(rng() % t.numel());
        double* element = t.data<double>() + i;
        const double saved = *element, eps = 1e-6;
        double up, down;
        {
          NoGradGuard no_grad;
          *element = saved + eps;
          up = loss().item();
          *element = saved - eps;
          down = loss().item();
          *element = saved;
        }
        const double numeric = (up - down) / (2 * eps);
        INFO("element ", i, ": analytic ", grad[i], ", numeric ", numeric);
        CHECK(std::abs(grad[i] - numeric) <= 1e-8 + 1e-5 * std::abs(numeric));
      }
    }
  }
}

TEST_CASE("fast_weights: estimate_parameters counts each fast_layer's layer exactly") {
  for (const std::string& kind : fast_layers()) {
    INFO("fast_layer ", kind);
    ModelConfig c = tiny_layer_config(kind);
    c.layers = 1;
    const int64_t one = models::make_model(c)->parameter_count();
    const double estimate_one = models::estimate_parameters(c);
    c.layers = 3;
    const int64_t three = models::make_model(c)->parameter_count();
    // The layers are what differs between the kinds; the estimate leaves out only the
    // final norm and the generator's bias.
    CHECK(models::estimate_parameters(c) - estimate_one == static_cast<double>(three - one));
    CHECK(estimate_one == doctest::Approx(static_cast<double>(one)).epsilon(0.05));
  }
}

TEST_CASE("fast_weights: training_flops_per_token grows with each fast_layer's fast matrices") {
  // The fast part of delta_delta holds W1 [3d+1, d_dot] and W2 [d, d_dot] per head: 4d + 1
  // rows against delta_net's d, so its recurrence costs (4d + 1) / d times as much.
  ModelConfig c = tiny_layer_config("delta_net");
  c.d_model = 64, c.heads = 4, c.d_ff = 128;
  auto flops = [](const ModelConfig& config) {
    auto model = models::make_model(config);
    double matrix_weights = 0;
    for (const auto& [name, t] : model->named_parameters())
      if (t.dim() >= 2 && name != "src_embed.weight") matrix_weights += static_cast<double>(t.numel());
    return model->training_flops_per_token(64) - 6.0 * matrix_weights;  // the recurrence alone
  };
  const double d = 16, d_dot = 32, heads = 4, layers = 2;
  const double delta_net = flops(c);
  CHECK(delta_net == doctest::Approx(layers * heads * d * d_dot * 3 * 2 * 3));
  c.fast_layer = "linear";
  CHECK(flops(c) == doctest::Approx(delta_net * 2.0 / 3.0));  // no read of vbar
  c.fast_layer = "delta_delta";
  CHECK(flops(c) == doctest::Approx(delta_net * (4 * d + 1) / d));
  c.fast_layer = "delta_mlp";  // d -> d_ff/H = 32 -> d: [32, 32] and [16, 64] per head
  CHECK(flops(c) == doctest::Approx(layers * heads * (32 * 32 + 16 * 64) * 3 * 2 * 3));
  c.fast_layer = "delta_rnn";  // the Delta Net part and R [d, d], read by y's softmax
  CHECK(flops(c) == doctest::Approx(delta_net * (d_dot + d) / d_dot));
  c.fast_layer = "delta_lstm";  // three of them
  CHECK(flops(c) == doctest::Approx(3 * delta_net * (d_dot + d) / d_dot));
  c.fast_layer = "rdn";  // W [d, d] beside R_q, R_k, R_v [d, d] and r_beta [d], all in one kernel
  const double rdn_recurrence = layers * heads * (d * d * 3 * 2 + (3 * d * d + d) * 2) * 3;
  CHECK(models::make_model(c)->recurrence_training_flops_per_token() == doctest::Approx(rdn_recurrence));
  // The R's are matrix parameters too, but counted once: the total stays 6 per matrix
  // weight plus the fast weight W's three passes.
  CHECK(flops(c) == doctest::Approx(delta_net * d / d_dot));
}

TEST_CASE("fast_weights: fast_layer config errors name the key") {
  auto error_for = [](auto change) {
    ModelConfig c = tiny_config();
    change(c);
    return error_of([&] { models::make_model(c); });
  };
  std::string msg = error_for([](ModelConfig& c) { c.fast_layer = "delta_gru"; });
  CHECK(contains(msg, "model.fast_layer"));
  CHECK(contains(msg, "'delta_gru'"));
  CHECK(contains(msg, "delta_mlp"));
  msg = error_for([](ModelConfig& c) {
    c.fast_layer = "delta_delta";
    c.update_rule = "sum";
  });
  CHECK(contains(msg, "model.update_rule"));
  CHECK(contains(msg, "delta_delta"));
  msg = error_for([](ModelConfig& c) { c.fast_net_depth = 3; });
  CHECK(contains(msg, "model.fast_net_depth"));
  CHECK(contains(msg, "delta_mlp"));
  msg = error_for([](ModelConfig& c) {
    c.fast_layer = "delta_mlp";
    c.d_ff = 25;
  });
  CHECK(contains(msg, "model.d_ff"));
  msg = error_for([](ModelConfig& c) {
    c.fast_layer = "delta_mlp";
    c.d_ff = 4;  // 2 hidden units per head: dpfp_nu at most 3
    c.dpfp_nu = 4;
  });
  CHECK(contains(msg, "model.dpfp_nu"));
  CHECK(contains(msg, "at most"));
  CHECK(contains(error_of([] {
                   models::parse_train_config(R"({"model": {"family": "fast_weights", "fast_layer": "lstm"}})");
                 }),
                 "model.fast_layer: expected one of"));
  CHECK(contains(error_of([] {
                   models::parse_train_config(R"({"model": {"family": "transformer", "fast_layer": "linear"}})");
                 }),
                 "model.fast_layer: not used by the transformer family"));
}

// ---- the context probe (models/programs/context_probe.h) ---------------------------------------------

TEST_CASE("fast_weights: the context probe's window losses equal one forward over each stream's text") {
  for (const std::string& kind : {std::string("delta_net"), std::string("delta_rnn")}) {
    INFO("fast_layer ", kind);
    ModelConfig c = tiny_layer_config(kind);
    auto model = tiny_model(c, DType::f64);
    // 3 streams of (103 - 1) / 3 = 34 tokens: 4 windows of 8, each with its next-token targets.
    const int64_t B = 3, T = 8, N = 103, S = (N - 1) / B;
    const std::vector<int64_t> ids = random_tokens(N, 1, c.vocab, 5).to_vector<int64_t>();
    const std::vector<models::WindowReport> reports = models::probe_carried_context(*model, ids, B, T, 10);
    REQUIRE(reports.size() == 4);  // (34 - 1) / 8 windows fit: asking for 10 reads what there is
    CHECK(model->training());      // the probe puts the mode back

    // The reference: every stream's 32 tokens in one forward from zero states, in eval mode.
    NoGradGuard no_grad;
    model->eval();
    const int64_t W = static_cast<int64_t>(reports.size());
    std::vector<int64_t> input(W * T * B), target(W * T * B);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < W * T; ++t) {
        input[t * B + b] = ids[b * S + t];
        target[t * B + b] = ids[b * S + t + 1];
      }
    const Tensor logits = model->forward(Tensor::from_vector(input, {W * T, B}));
    const Tensor targets = Tensor::from_vector(target, {W * T, B});
    for (int64_t w = 0; w < W; ++w) {
      const Tensor window_logits = narrow(logits, 0, w * T, T);
      const double expected = cross_entropy(window_logits.reshape({-1, c.vocab}), narrow(targets, 0, w * T, T).reshape({-1})).item();
      CHECK(reports[w].window == w);
      CHECK(reports[w].tokens_read == w * T);
      CHECK(std::abs(reports[w].loss - expected) < 1e-10 * std::abs(expected));
    }
    // The state sizes: the RMS of the states after all W windows, from one decode call.
    auto state = model->start_decoding(B);
    model->decode(*state, Tensor::from_vector(input, {W * T, B}));
    const NamedTensors final_state = state->tensors();
    REQUIRE(reports.back().state_rms.size() == final_state.size());
    for (size_t i = 0; i < final_state.size(); ++i) {
      const std::vector<double> v = final_state[i].second.to_vector<double>();
      double squares = 0;
      for (double x : v) squares += x * x;
      CHECK(reports.back().state_rms[i].first == final_state[i].first);
      CHECK(std::abs(reports.back().state_rms[i].second - std::sqrt(squares / v.size())) < 1e-10);
    }
  }
}

TEST_CASE("fast_weights: the context probe refuses a bounded context and text too short for a window") {
  ModelConfig t;
  t.family = "transformer";
  t.vocab = 11;
  t.d_model = 16;
  t.heads = 2;
  t.d_ff = 24;
  t.layers = 1;
  auto transformer = models::make_model(t);
  const std::vector<int64_t> ids(100, 1);
  const std::string bounded = error_of([&] { models::probe_carried_context(*transformer, ids, 2, 8, 3); });
  CHECK(contains(bounded, "the transformer model holds " + std::to_string(transformer->context_length()) + " positions"));
  auto fast = tiny_model(tiny_layer_config("delta_net"), DType::f32);
  CHECK(contains(error_of([&] { models::probe_carried_context(*fast, std::vector<int64_t>(10, 1), 2, 8, 3); }),
                 "too few for one batch of seq_len 8"));
  CHECK(contains(error_of([&] { models::probe_carried_context(*fast, ids, 0, 8, 3); }), "must be positive"));
}

}  // namespace loom::test
