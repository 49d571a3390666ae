// test_feedback.cpp: the Feedback Transformer family (models/families/feedback.h).
//
// The reference is a naive composition written here from the parameter names
// alone: explicit loops over steps and layers that stack the whole memory and
// re-project it at every step (torch.stack style), with the attention scores
// composed of elementary engine ops. The model (once-projected memory rows in
// buffers, fused step attention) must give the same logits and gradients.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>

#include "autodiff/grad_mode.h"
#include "engine/allocator.h"
#include "engine/ops.h"
#include "engine/record.h"
#include "models/families/feedback.h"
#include "tests/family_test_utils.h"
#include "tests/fused_check.h"

namespace loom::test {

namespace {

using models::FeedbackTransformer;
using models::ModelConfig;
using Params = std::map<std::string, Tensor>;

constexpr int64_t kR = 4096;  // relative positions of the tables (models/FAMILIES.md §3.2)

ModelConfig tiny_config(bool shared_kv) {
  ModelConfig c;
  c.family = "feedback";
  c.vocab = 11;
  c.d_model = 8;
  c.heads = 2;
  c.d_ff = 12;
  c.layers = 3;
  c.shared_kv = shared_kv;
  c.max_seq_len = 16;
  c.seed = 7;
  return c;
}

std::unique_ptr<FeedbackTransformer> make(const ModelConfig& c) {
  return std::unique_ptr<FeedbackTransformer>(
      dynamic_cast<FeedbackTransformer*>(models::make_model(c).release()));
}

Params params_of(const models::Module& m) {
  Params p;
  for (const auto& [name, t] : m.named_parameters()) p[name] = t;
  return p;
}

// Converts every parameter to float64 in place (every handle onto it follows):
// the float64 mode the reference comparisons and gradient checks run in.
void to_float64(models::Module& m) {
  for (const auto& [name, t] : m.named_parameters()) {
    const Tensor c = contiguous(cast(t.detach(), DType::f64));
    TensorImpl& impl = t.impl();
    impl.storage = c.storage();
    impl.offset = c.offset();
    impl.strides = c.strides();
    impl.dtype = DType::f64;
    impl.grad = nullptr;
  }
}

// Overwrites every parameter with uniform values in [-a, a] (a = 0.5, and 1 for the
// mixing weights): the initial values (zero tables, identical layers, uniform mix)
// would hide mistakes in indexing tables, layers or the mix.
void randomize(models::Module& m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  NoGradGuard no_grad;
  for (const auto& [name, t] : m.named_parameters()) {
    const double a = name == "transformer.weights" ? 1.0 : 0.5;
    std::uniform_real_distribution<double> u(-a, a);
    std::vector<double> v(t.numel());
    for (double& x : v) x = u(rng);
    copy_(t, Tensor::from_vector(v, t.shape()));
  }
}


// ---- the naive composition ------------------------------------------------------------------

Tensor naive_linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor()) {
  const Tensor y = matmul(x, transpose(w, 0, 1));
  return b.defined() ? y + b : y;
}

Tensor naive_logits(const Params& p, const ModelConfig& c, const Tensor& tokens) {
  auto P = [&](const std::string& name) {
    auto it = p.find(name);
    REQUIRE_MESSAGE(it != p.end(), "no parameter ", name);
    return it->second;
  };
  const int64_t L = tokens.size(0), B = tokens.size(1), H = c.heads, dk = c.d_model / c.heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dk));
  const Tensor mix = softmax(P("transformer.weights"), 0);
  std::vector<Tensor> memory, outputs;  // m_t [B, d]; h_t^{(N)} [B, d]
  for (int64_t t = 0; t < L; ++t) {
    const Tensor ids = reshape(narrow(tokens, 0, t, 1), {B});
    Tensor x = index_select(P("src_embed.weight"), 0, ids);
    std::vector<Tensor> hs{x};
    for (int64_t l = 0; l < c.layers; ++l) {
      const std::string pre = "transformer.layers." + std::to_string(l) + ".";
      if (t > 0) {
        const Tensor M = stack(memory, 0);  // [t, B, d], stacked afresh every step
        Tensor K, V;
        if (c.shared_kv) {
          K = naive_linear(M, P("transformer.key.linear.weight"));
          V = naive_linear(M, P("transformer.value.linear.weight"));
        } else {
          K = naive_linear(M, P(pre + "attn.key.linear.weight"));
          V = naive_linear(M, P(pre + "attn.value.linear.weight"), P(pre + "attn.value.linear.bias"));
        }
        K = reshape(K, {t, B, H, dk});
        V = reshape(V, {t, B, H, dk});
        const Tensor z = layer_norm(x, P(pre + "norm_self_attn.weight"), P(pre + "norm_self_attn.bias"));
        const Tensor q = reshape(naive_linear(z, P(pre + "attn.query.linear.weight")), {B, H, dk});
        const Tensor u = P(pre + "attn.query_pos_bias");
        // Slot j (oldest first) is at distance t − j: table row 4096 − (t − j).
        const Tensor pos = narrow(P(pre + "attn.key_pos_embeddings"), 0, kR - t, t);  // [t, H, dk]
        const Tensor bias = narrow(P(pre + "attn.key_pos_bias"), 0, kR - t, t);       // [t, H]
        const Tensor content = sum(unsqueeze(q + u, 0) * K, {3});                  // [t, B, H]
        const Tensor position = sum(unsqueeze(q, 0) * unsqueeze(pos, 1), {3});    // [t, B, H]
        const Tensor alpha = softmax((content + position + unsqueeze(bias, 1)) * scale, 0);
        const Tensor o = reshape(sum(unsqueeze(alpha, 3) * V, {0}), {B, c.d_model});
        x = x + naive_linear(o, P(pre + "attn.output.weight"), P(pre + "attn.output.bias"));
      }
      const Tensor z = layer_norm(x, P(pre + "norm_ff.weight"), P(pre + "norm_ff.bias"));
      const Tensor hidden = relu(naive_linear(z, P(pre + "feed_forward.layer1.weight"), P(pre + "feed_forward.layer1.bias")));
      x = x + naive_linear(hidden, P(pre + "feed_forward.layer2.weight"), P(pre + "feed_forward.layer2.bias"));
      hs.push_back(x);
    }
    outputs.push_back(x);
    Tensor m = hs[0] * narrow(mix, 0, 0, 1);
    for (size_t l = 1; l < hs.size(); ++l) m = m + hs[l] * narrow(mix, 0, static_cast<int64_t>(l), 1);
    memory.push_back(m);
  }
  const Tensor y = layer_norm(stack(outputs, 0), P("transformer.norm.weight"), P("transformer.norm.bias"));
  return naive_linear(y, P("generator.weight"), P("generator.bias"));
}


// Gradients of every parameter, by name, after one backward (grads are cleared first).
std::map<std::string, std::vector<double>> gradients(const Params& p, const Tensor& loss) {
  for (const auto& [name, t] : p) t.zero_grad();
  loss.backward();
  std::map<std::string, std::vector<double>> g;
  for (const auto& item : p) {
    const auto& name = item.first;
    const auto& t = item.second;
    REQUIRE_MESSAGE(t.grad().defined(), "no gradient reached ", name);
    g[name] = cast(t.grad(), DType::f64).to_vector<double>();
  }
  return g;
}

}  // namespace

TEST_CASE("feedback: forward matches the naive composition in float64 (both variants)") {
  for (bool shared : {true, false}) {
    INFO("shared_kv ", shared);
    const ModelConfig c = tiny_config(shared);
    auto model = make(c);
    to_float64(*model);
    randomize(*model, 3);
    for (int64_t L : {1, 2, 7}) {
      INFO("L ", L);
      const Tensor tokens = random_tokens(L, 3, c.vocab, 11 + L);
      const Tensor got = model->forward(tokens);
      CHECK(got.shape() == Shape{L, 3, c.vocab});
      CHECK(got.dtype() == DType::f64);
      const double d = relative_difference(got.to_vector<double>(),
                                           naive_logits(params_of(*model), c, tokens).to_vector<double>());
      CHECK_MESSAGE(d < 1e-10, "logits: relative difference ", d);
    }
  }
}

TEST_CASE("feedback: gradients match the naive composition and central differences in float64") {
  for (bool shared : {true, false}) {
    INFO("shared_kv ", shared);
    const ModelConfig c = tiny_config(shared);
    auto model = make(c);
    to_float64(*model);
    randomize(*model, 5);
    const Params p = params_of(*model);
    const int64_t L = 6, B = 2;
    const Tensor tokens = random_tokens(L, B, c.vocab, 1);
    const Tensor targets = random_tokens(L, B, c.vocab, 2);

    const auto got = gradients(p, next_token_loss(model->forward(tokens), targets));
    const auto expected = gradients(p, next_token_loss(naive_logits(p, c, tokens), targets));
    for (const auto& item : got) {
      const auto& name = item.first;
      const auto& g = item.second;
      const double d = relative_difference(g, expected.at(name));
      CHECK_MESSAGE(d < 1e-9, name, ": relative difference ", d);
    }

    // Central differences on a sample of elements of every parameter. The position
    // tables are sampled in the rows a length-L sequence reads (the last L − 1).
    std::mt19937_64 rng(9);
    NoGradGuard no_grad;
    auto loss = [&] { return next_token_loss(model->forward(tokens), targets).item(); };
    int checked = 0;
    for (const auto& item : p) {
      const auto& name = item.first;
      const auto& t = item.second;
      const bool table = name.find("key_pos") != std::string::npos;
      const int64_t row = t.numel() / t.size(0);
      for (int k = 0; k < 2; ++k) {
        const int64_t i = table ? (kR - 1 - static_cast<int64_t>(rng() % (L - 1))) * row + static_cast<int64_t>(rng() % row)
                                : static_cast<int64_t>(rng() % t.numel());
        double* x = t.data<double>() + i;
        const double saved = *x, eps = 1e-6;
        *x = saved + eps;
        const double up = loss();
        *x = saved - eps;
        const double down = loss();
        *x = saved;
        const double numeric = (up - down) / (2 * eps), analytic = got.at(name)[i];
        CHECK_MESSAGE(std::abs(numeric - analytic) <= 1e-8 + 1e-6 * std::abs(numeric), name, "[", i,
                      "]: analytic ", analytic, ", numeric ", numeric);
        ++checked;
      }
    }
    CHECK(checked == 2 * static_cast<int>(p.size()));
  }
}

TEST_CASE("feedback: a tiny model overfits one batch") {
  ModelConfig c;
  c.family = "feedback";
  c.vocab = 16;
  c.d_model = 32;
  c.heads = 4;
  c.d_ff = 64;
  c.layers = 2;
  c.max_seq_len = 32;
  c.seed = 1;
  auto model = make(c);
  const Tensor tokens = random_tokens(16, 4, c.vocab, 5);
  const Tensor targets = random_tokens(16, 4, c.vocab, 6);
  // Adam in PyTorch's form, lr 1e-2; the loss falls to about 1e-3 in 60 steps.
  const std::pair<double, double> losses = overfit_one_batch(*model, tokens, targets, 60, 1e-2, models::AdamForm::pytorch);
  const double first = losses.first, late = losses.second;
  INFO("loss ", first, " -> ", late, " (lowest of the last quarter)");
  CHECK(first > 2.0);  // about log(16) = 2.77 at the start
  CHECK(late < 0.05);
}

TEST_CASE("feedback: incremental decoding gives the logits of a full forward (float32, both variants)") {
  for (bool shared : {true, false}) {
    INFO("shared_kv ", shared);
    ModelConfig c = tiny_config(shared);
    c.d_model = 16;
    c.heads = 4;
    c.max_seq_len = 10;
    auto model = make(c);
    randomize(*model, 8);
    const Tensor tokens = random_tokens(10, 3, c.vocab, 4);
    const Tensor full = model->forward(tokens);
    auto state = model->start_decoding(3);
    std::vector<Tensor> pieces;
    int64_t start = 0;
    for (int64_t n : {1, 4, 2, 3}) {  // uneven chunks, up to the capacity of 10
      pieces.push_back(model->decode(*state, narrow(tokens, 0, start, n)));
      start += n;
    }
    const Tensor decoded = concat(pieces, 0);
    CHECK_FALSE(decoded.requires_grad());
    const double d = relative_difference(cast(decoded, DType::f64).to_vector<double>(),
                                         cast(full.detach(), DType::f64).to_vector<double>());
    CHECK_MESSAGE(d < 1e-5, "relative difference ", d);
  }
}

TEST_CASE("feedback: state_dict names and shapes of the default configs (models/FAMILIES.md §3.4)") {
  using Entries = std::vector<std::pair<std::string, Shape>>;
  auto layer_entries = [](int l, bool shared) {
    const std::string pre = "transformer.layers." + std::to_string(l) + ".";
    Entries e{{pre + "attn.key_pos_embeddings", {4096, 8, 64}},
              {pre + "attn.key_pos_bias", {4096, 8}},
              {pre + "attn.query_pos_bias", {8, 64}},
              {pre + "attn.query.linear.weight", {512, 512}}};
    if (!shared) {
      e.push_back({pre + "attn.key.linear.weight", {512, 512}});
      e.push_back({pre + "attn.value.linear.weight", {512, 512}});
      e.push_back({pre + "attn.value.linear.bias", {512}});
    }
    const Entries rest{{pre + "attn.output.weight", {512, 512}},
                       {pre + "attn.output.bias", {512}},
                       {pre + "feed_forward.layer1.weight", {2048, 512}},
                       {pre + "feed_forward.layer1.bias", {2048}},
                       {pre + "feed_forward.layer2.weight", {512, 2048}},
                       {pre + "feed_forward.layer2.bias", {512}},
                       {pre + "norm_self_attn.weight", {512}},
                       {pre + "norm_self_attn.bias", {512}},
                       {pre + "norm_ff.weight", {512}},
                       {pre + "norm_ff.bias", {512}}};
    e.insert(e.end(), rest.begin(), rest.end());
    return e;
  };
  for (bool shared : {true, false}) {
    INFO("shared_kv ", shared);
    Entries expected{{"src_embed.weight", {65, 512}}, {"transformer.weights", {7}}};
    for (int l = 0; l < 6; ++l) {
      const Entries e = layer_entries(l, shared);
      expected.insert(expected.end(), e.begin(), e.end());
    }
    expected.push_back({"transformer.norm.weight", {512}});
    expected.push_back({"transformer.norm.bias", {512}});
    if (shared) {
      expected.push_back({"transformer.key.linear.weight", {512, 512}});
      expected.push_back({"transformer.value.linear.weight", {512, 512}});
    }
    expected.push_back({"generator.weight", {65, 512}});
    expected.push_back({"generator.bias", {65}});

    ModelConfig c;
    c.family = "feedback";
    c.shared_kv = shared;
    const auto model = models::make_model(c);
    const auto named = model->named_parameters();
    Entries got;
    for (const auto& [name, t] : named) got.push_back({name, t.shape()});
    CHECK(got.size() == (shared ? 92u : 108u));
    CHECK(got == expected);
    CHECK(model->parameter_count() == (shared ? 29133896 : 31758408));
  }
}

TEST_CASE("feedback: initial values: zero position tables, uniform mix, identical layers") {
  ModelConfig c = tiny_config(false);
  const auto model = make(c);
  const Params p = params_of(*model);
  CHECK(p.at("transformer.weights").to_vector<float>() == std::vector<float>(c.layers + 1, 1.0f));
  for (const auto& item : p) {
    const auto& name = item.first;
    const auto& t = item.second;
    if (name.find("_pos_") != std::string::npos)
      CHECK_MESSAGE(max(t * t).item() == 0.0, name);
  }
  const std::string first = "transformer.layers.0.";
  for (int64_t l = 1; l < c.layers; ++l) {
    const std::string pre = "transformer.layers." + std::to_string(l) + ".";
    for (const auto& [name, t] : p) {
      if (name.rfind(first, 0) != 0) continue;
      const std::string suffix = name.substr(first.size());
      CHECK_MESSAGE(t.to_vector<float>() == p.at(pre + suffix).to_vector<float>(), pre, suffix);
    }
  }
  // Not all zero elsewhere: the layers are initialised, then copied.
  CHECK(max(p.at(first + "attn.query.linear.weight") * p.at(first + "attn.query.linear.weight")).item() > 0.0);
}

TEST_CASE("feedback: the graph's memory grows linearly with the sequence length") {
  // A naive implementation that stacks (and re-projects) the memory at every step
  // keeps O(L²) activations; the buffers keep O(L).
  ModelConfig c = tiny_config(true);
  c.d_model = 64;
  c.heads = 4;
  c.d_ff = 64;
  c.layers = 2;
  c.max_seq_len = 128;
  auto model = make(c);
  auto held = [&](int64_t L) {
    const size_t before = cpu_allocator().stats().active_bytes;
    const Tensor logits = model->forward(random_tokens(L, 8, c.vocab, 3));
    return static_cast<double>(cpu_allocator().stats().active_bytes - before);
  };
  const double small = held(32), large = held(128);
  INFO("bytes held by the graph: L=32 ", small, ", L=128 ", large);
  CHECK(large < 4.6 * small);  // 4x the steps; quadratic growth would be ~16x
}

TEST_CASE("feedback: training FLOPs per token are 6 per matmul parameter plus the attention") {
  // Independent estimate: every 2-D weight but the embedding table is used once per
  // token in a matmul (2 FLOPs per parameter forward, 6 with the backward); the
  // attention reads (L−1)/2 slots on average with three d-sized products per slot.
  // The model's count differs only by the steps that skip work (step 0's attention,
  // the last step's memory projection) and the memory mix: well under 2 %.
  for (bool shared : {true, false}) {
    INFO("shared_kv ", shared);
    ModelConfig c;
    c.family = "feedback";
    c.shared_kv = shared;
    const auto model = models::make_model(c);
    double matmul_params = 0;
    for (const auto& [name, t] : model->named_parameters())
      if (t.dim() == 2 && name != "src_embed.weight" && name.find("key_pos_bias") == std::string::npos)
        matmul_params += static_cast<double>(t.numel());
    const int64_t L = 128;
    const double attention = 3.0 * 6.0 * c.layers * c.d_model * (L - 1) / 2.0;
    const double estimate = 6.0 * matmul_params + attention;
    const double got = model->training_flops_per_token(L);
    CHECK(std::abs(got - estimate) / estimate < 0.02);
    CHECK(model->training_flops_per_token(2 * L) > got);  // the memory grows with L
  }
}

TEST_CASE("feedback: errors name the offending values") {
  const ModelConfig c = tiny_config(true);
  auto model = make(c);
  std::string msg = error_of([&] { model->forward(random_tokens(17, 2, c.vocab, 1)); });
  CHECK(contains(msg, "sequence length 17"));
  CHECK(contains(msg, "max_seq_len = 16"));

  auto state = model->start_decoding(2);
  model->decode(*state, random_tokens(10, 2, c.vocab, 1));
  msg = error_of([&] { model->decode(*state, random_tokens(7, 2, c.vocab, 1)); });
  CHECK(contains(msg, "decoding 7 more tokens after 10"));
  CHECK(contains(msg, "max_seq_len = 16"));
  msg = error_of([&] { model->decode(*state, random_tokens(1, 3, c.vocab, 1)); });
  CHECK(contains(msg, "batch size 2"));

  msg = error_of([&] { model->forward(Tensor::zeros({4, 2})); });
  CHECK(contains(msg, "int64 tokens [L, B]"));
  CHECK(contains(msg, "float32[4, 2]"));

  ModelConfig bad = c;
  bad.dropout = 0.1;
  msg = error_of([&] { models::make_model(bad); });
  CHECK(contains(msg, "model.dropout"));
  bad = c;
  bad.max_seq_len = 5000;
  msg = error_of([&] { models::make_model(bad); });
  CHECK(contains(msg, "model.max_seq_len: 5000"));
  CHECK(contains(msg, "4096"));
  bad = c;
  bad.heads = 3;
  msg = error_of([&] { models::make_model(bad); });
  CHECK(contains(msg, "model.heads: d_model 8 is not divisible by 3 heads"));
}

}  // namespace loom::test
