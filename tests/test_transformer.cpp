// test_transformer.cpp: the vanilla transformer and Primer EZ (models/families/transformer.h).
//
//  - the forward equals a naive composition of engine ops written here (float64);
//  - gradients of the loss equal central differences (float64, with dropout);
//  - a tiny model overfits one batch;
//  - incremental decoding equals recomputing the whole sequence;
//  - parameter names and shapes are labml's state_dict (models/FAMILIES.md §4.3);
//  - bad configurations name the offending key.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>

#include "autodiff/grad_mode.h"
#include "autodiff/node.h"
#include "engine/ops.h"
#include "models/families/language_model.h"
#include "tests/family_test_utils.h"
#include "tests/fused_check.h"

namespace loom::test {

namespace {

using models::LanguageModel;
using models::ModelConfig;

// The tiny configuration the tests share: d_model 16, 2 heads of 8, d_ff 32, 2 layers.
ModelConfig tiny(const std::string& family, const std::string& conv_kernels = "per_channel") {
  ModelConfig c;
  c.family = family;
  c.conv_kernels = conv_kernels;
  c.vocab = 11;
  c.d_model = 16;
  c.heads = 2;
  c.d_ff = 32;
  c.layers = 2;
  c.dropout = 0.0;
  c.seed = 3;
  return c;
}

// The families the tests cover: vanilla and the three Primer convolutions.
std::vector<ModelConfig> tiny_variants() {
  return {tiny("transformer"), tiny("primer_ez", "per_channel"), tiny("primer_ez", "shared"),
          tiny("primer_ez", "per_head")};
}

std::string describe(const ModelConfig& c) {
  const std::string name = c.family == "primer_ez" ? c.family + " (" + c.conv_kernels + ")" : c.family;
  return c.activation.empty() ? name : name + ", " + c.activation;
}

// The variants and, for model.activation, a transformer and a Primer with SiLU.
std::vector<ModelConfig> tiny_variants_and_activations() {
  std::vector<ModelConfig> all = tiny_variants();
  for (const char* family : {"transformer", "primer_ez"}) {
    ModelConfig c = tiny(family);
    c.activation = "silu";
    all.push_back(c);
  }
  return all;
}


// Layers start identical (labml clones one layer); perturbing every parameter
// makes a mix-up between layers, or between weights, visible.
void perturb(LanguageModel& model, uint64_t seed) {
  NoGradGuard no_grad;
  Generator gen(seed);
  for (auto& [name, p] : model.named_parameters()) add_(p, uniform(p.shape(), -0.2, 0.2, gen, p.dtype()));
}

std::map<std::string, Tensor> tensors_of(const LanguageModel& model) {
  std::map<std::string, Tensor> m;
  for (auto& [name, t] : model.named_parameters()) m[name] = t.detach();
  for (auto& [name, t] : model.named_buffers()) m[name] = t.detach();
  return m;
}

// ---- the reference: the model written out with elementary engine ops ------------------------

struct Reference {
  ModelConfig c;
  std::map<std::string, Tensor> p;

  const Tensor& at(const std::string& name) const {
    auto it = p.find(name);
    REQUIRE_MESSAGE(it != p.end(), "no parameter named ", name);
    return it->second;
  }

  // (x - mean) / sqrt(var + 1e-5) * w + b over the last axis.
  Tensor norm(const Tensor& x, const std::string& name) const {
    const Tensor centred = x - mean(x, {-1}, true);
    const Tensor var = mean(centred * centred, {-1}, true);
    return centred / sqrt(var + 1e-5) * at(name + ".weight") + at(name + ".bias");
  }

  Tensor naive_linear(const Tensor& x, const std::string& name) const {
    return matmul(x, transpose(at(name + ".weight"), 0, 1)) + at(name + ".bias");
  }

  // Causal depth-wise conv over axis 0 of x [L, B, H·d_k], channels head-major:
  // y[t] = bias + sum_k w[:, k] · x[t - (K-1) + k], zeros before the start.
  Tensor conv(const Tensor& x, const std::string& name) const {
    const int64_t L = x.size(0), C = x.size(2), d_k = c.d_model / c.heads;
    const Tensor w = at(name + ".weight"), b = at(name + ".bias");  // [Cw, 1, K], [Cw]
    const int64_t K = w.size(2);
    // The kernel tap and bias of every one of the C channels.
    auto per_channel = [&](const Tensor& t) {  // t [Cw] -> [C]
      if (c.conv_kernels == "shared") return expand(t, {C});
      if (c.conv_kernels == "per_head") return t;
      std::vector<Tensor> copies(c.heads, t);  // per_channel: the same d_k kernels for each head
      REQUIRE(t.size(0) == d_k);
      return concat(copies, 0);
    };
    Tensor y = mul(x, 0.0) + per_channel(b);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t delay = K - 1 - k;
      if (delay >= L) continue;
      Tensor shifted = x;
      if (delay > 0)
        shifted = concat({Tensor::zeros({delay, x.size(1), C}, x.dtype()), narrow(x, 0, 0, L - delay)}, 0);
      y = y + shifted * per_channel(reshape(narrow(w, 2, k, 1), {w.size(0)}));
    }
    return y;
  }

  Tensor project(const Tensor& z, const std::string& name) const {
    if (c.family == "transformer") return naive_linear(z, name + ".linear");
    return conv(naive_linear(z, name + ".0.linear"), name + ".1.conv");
  }

  // Causal softmax attention, one (batch, head, query position) at a time.
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v) const {
    const int64_t L = q.size(0), B = q.size(1), d_k = c.d_model / c.heads;
    std::vector<Tensor> batches;
    for (int64_t b = 0; b < B; ++b) {
      std::vector<Tensor> heads;
      for (int64_t h = 0; h < c.heads; ++h) {
        auto slice = [&](const Tensor& t) { return reshape(narrow(narrow(t, 1, b, 1), 2, h * d_k, d_k), {L, d_k}); };
        const Tensor qh = slice(q), kh = slice(k), vh = slice(v);
        std::vector<Tensor> rows;
        for (int64_t i = 0; i < L; ++i) {
          const Tensor seen_k = narrow(kh, 0, 0, i + 1), seen_v = narrow(vh, 0, 0, i + 1);
          const Tensor s = matmul(narrow(qh, 0, i, 1), transpose(seen_k, 0, 1)) / std::sqrt(double(d_k));
          const Tensor e = exp(s - max(s).detach());
          rows.push_back(matmul(e / sum(e), seen_v));  // [1, d_k]
        }
        heads.push_back(concat(rows, 0));  // [L, d_k]
      }
      batches.push_back(concat(heads, 1));  // [L, H·d_k]
    }
    return stack(batches, 1);  // [L, B, d_model]
  }

  Tensor feed_forward(const Tensor& z, const std::string& name) const {
    const Tensor h = naive_linear(z, name + ".layer1");
    if (c.activation == "silu") return naive_linear(h / (exp(-h) + 1.0), name + ".layer2");  // h sigmoid(h)
    const Tensor r = maximum(h, Tensor::scalar(0.0, h.dtype()));
    return naive_linear(c.family == "primer_ez" ? r * r : r, name + ".layer2");
  }

  Tensor logits(const Tensor& tokens) const {
    const int64_t L = tokens.size(0), B = tokens.size(1);
    const Tensor emb = reshape(index_select(at("src_embed.linear.weight"), 0, reshape(tokens, {-1})),
                               {L, B, c.d_model});
    Tensor x = emb * std::sqrt(double(c.d_model)) + narrow(at("src_embed.positional_encodings"), 0, 0, L);
    for (int64_t l = 0; l < c.layers; ++l) {
      const std::string layer = "encoder.layers." + std::to_string(l);
      const Tensor z = norm(x, layer + ".norm_self_attn");
      const std::string attn = layer + ".self_attn";
      const Tensor a = attention(project(z, attn + ".query"), project(z, attn + ".key"), project(z, attn + ".value"));
      x = x + naive_linear(a, attn + ".output");
      x = x + feed_forward(norm(x, layer + ".norm_ff"), layer + ".feed_forward");
    }
    return naive_linear(norm(x, "encoder.norm"), "generator.projection");
  }
};

double max_abs(const Tensor& t) {
  double m = 0.0;
  for (double v : cast(t, DType::f64).to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

// max |a - b| / max |b|
double relative_error(const Tensor& a, const Tensor& b) {
  return relative_difference(cast(a, DType::f64).to_vector<double>(), cast(b, DType::f64).to_vector<double>());
}

}  // namespace

TEST_CASE("transformer, primer_ez: forward equals a naive composition of engine ops (float64)") {
  const Tensor tokens = random_tokens(7, 3, 11, 1);
  for (ModelConfig c : tiny_variants_and_activations()) {
    INFO(describe(c));
    c.dropout = 0.1;  // eval mode must switch every dropout off
    auto model = models::make_model(c);
    model->to(DType::f64);
    perturb(*model, 2);
    model->eval();
    const Tensor got = model->forward(tokens);
    REQUIRE(got.shape() == Shape{7, 3, 11});
    REQUIRE(got.dtype() == DType::f64);
    const Tensor want = Reference{c, tensors_of(*model)}.logits(tokens);
    CHECK(relative_error(got, want) < 1e-10);
    CHECK(max_abs(want) > 0.1);  // not vacuous
  }
}

TEST_CASE("transformer, primer_ez: loss gradients match central differences (float64, with dropout)") {
  const Tensor tokens = random_tokens(6, 2, 11, 4), targets = random_tokens(6, 2, 11, 5);
  for (ModelConfig c : {tiny("transformer"), tiny("primer_ez", "per_channel"), tiny("primer_ez", "per_head")}) {
    INFO(describe(c));
    c.dropout = 0.2;  // every dropout on: each evaluation replays the same masks
    auto model = models::make_model(c);
    model->to(DType::f64);
    perturb(*model, 6);
    auto loss = [&] {
      model->dropout_generator().set_state(17, 0);
      return cross_entropy(reshape(model->forward(tokens), {-1, c.vocab}), reshape(targets, {-1}));
    };
    loss().backward();

    const bool primer = c.family == "primer_ez";
    const std::string q = primer ? ".self_attn.query.0.linear" : ".self_attn.query.linear";
    std::vector<std::string> names = {"src_embed.linear.weight",
                                      "encoder.layers.0" + q + ".weight",
                                      "encoder.layers.1.self_attn.output.bias",
                                      "encoder.layers.0.feed_forward.layer1.weight",
                                      "encoder.layers.1.feed_forward.layer2.bias",
                                      "encoder.layers.1.norm_self_attn.weight",
                                      "encoder.layers.0.norm_ff.bias",
                                      "encoder.norm.weight",
                                      "generator.projection.weight"};
    if (primer) {
      names.push_back("encoder.layers.1.self_attn.key.1.conv.weight");
      names.push_back("encoder.layers.0.self_attn.value.1.conv.bias");
      names.push_back("encoder.layers.0.self_attn.query.1.conv.weight");
    }
    const auto params = tensors_of(*model);
    const auto all = model->named_parameters();
    for (const std::string& name : names) {
      INFO("parameter ", name);
      Tensor p;
      for (auto& [n, t] : all)
        if (n == name) p = t;
      REQUIRE(p.defined());
      REQUIRE(p.grad().defined());
      const std::vector<double> grad = p.grad().to_vector<double>();
      double* data = p.data<double>();
      const double eps = 1e-6;
      double largest = 0.0;
      for (int64_t s = 0; s < 4; ++s) {
        const int64_t i = (s * 7919 + 3) % p.numel();
        const double saved = data[i];
        data[i] = saved + eps;
        const double up = loss().item();
        data[i] = saved - eps;
        const double down = loss().item();
        data[i] = saved;
        const double numeric = (up - down) / (2 * eps);
        INFO("element ", i, ": analytic ", grad[i], ", numeric ", numeric);
        CHECK(std::abs(grad[i] - numeric) <= 1e-7 + 1e-5 * std::abs(numeric));
        largest = std::max(largest, std::abs(numeric));
      }
      // The embedding rows of tokens not in the batch have no gradient; everything else must.
      if (name != "src_embed.linear.weight") CHECK(largest > 1e-6);
    }
  }
}

TEST_CASE("transformer, primer_ez: a tiny model overfits one batch") {
  for (const std::string family : {"transformer", "primer_ez"}) {
    INFO(family);
    ModelConfig c = tiny(family);
    c.d_model = 32;
    c.heads = 4;
    c.d_ff = 64;
    auto model = models::make_model(c);
    const Tensor tokens = random_tokens(17, 4, c.vocab, 9);
    const Tensor input = narrow(tokens, 0, 0, 16), target = contiguous(narrow(tokens, 0, 1, 16));

    // Adam in labml's form (eps on the uncorrected sqrt(v)).
    const std::pair<double, double> losses = overfit_one_batch(*model, input, target, 150, 3e-3, models::AdamForm::labml);
    const double first = losses.first, late = losses.second;
    INFO("loss ", first, " -> ", late, " (lowest of the last quarter)");
    CHECK(first > 1.5);
    CHECK(late < 0.05);
  }
}

TEST_CASE("transformer, primer_ez: incremental decoding equals full recomputation (float32)") {
  std::vector<ModelConfig> variants = tiny_variants();
  ModelConfig wide = tiny("primer_ez", "per_channel");
  wide.conv_width = 4;
  variants.push_back(wide);
  const Tensor tokens = random_tokens(13, 2, 11, 10);
  for (const ModelConfig& c : variants) {
    INFO(describe(c), ", conv_width ", c.conv_width);
    auto model = models::make_model(c);
    perturb(*model, 11);
    model->eval();
    const Tensor full = model->forward(tokens);

    auto state = model->start_decoding(2);
    for (int64_t t = 0; t < 13; ++t) {
      INFO("token ", t);
      const Tensor step = model->decode(*state, narrow(tokens, 0, t, 1));
      REQUIRE(step.shape() == Shape{1, 2, 11});
      CHECK(relative_error(step, narrow(full, 0, t, 1)) < 1e-5);
    }

    state = model->start_decoding(2);
    int64_t start = 0;
    for (int64_t chunk : {4, 1, 6, 2}) {
      INFO("chunk at ", start, " of ", chunk);
      const Tensor part = model->decode(*state, narrow(tokens, 0, start, chunk));
      CHECK(relative_error(part, narrow(full, 0, start, chunk)) < 1e-5);
      start += chunk;
    }
    CHECK(!model->decode(*state, narrow(tokens, 0, 0, 1)).requires_grad());
    CHECK(contains(error_of([&] { model->decode(*state, random_tokens(1, 3, 11, 1)); }), "batch of 2"));
  }
}

namespace {

using Names = std::vector<std::pair<std::string, Shape>>;

Names names_and_shapes(const models::NamedTensors& tensors) {
  Names out;
  for (auto& [name, t] : tensors) out.emplace_back(name, t.shape());
  return out;
}

// labml's state_dict of the default configuration (d_model 512, 8 heads, d_ff 2048,
// 6 layers, vocab 65), models/FAMILIES.md §4.3; conv_shape empty for the vanilla model.
Names expected_parameters(bool primer, const Shape& conv_weight, const Shape& conv_bias) {
  Names n;
  n.emplace_back("src_embed.linear.weight", Shape{65, 512});
  for (int l = 0; l < 6; ++l) {
    const std::string a = "encoder.layers." + std::to_string(l) + ".self_attn.";
    for (const char* proj : {"query", "key", "value"}) {
      const std::string lin = a + proj + (primer ? ".0.linear." : ".linear.");
      n.emplace_back(lin + "weight", Shape{512, 512});
      n.emplace_back(lin + "bias", Shape{512});
      if (primer) {
        n.emplace_back(a + proj + ".1.conv.weight", conv_weight);
        n.emplace_back(a + proj + ".1.conv.bias", conv_bias);
      }
    }
    n.emplace_back(a + "output.weight", Shape{512, 512});
    n.emplace_back(a + "output.bias", Shape{512});
    const std::string layer = "encoder.layers." + std::to_string(l) + ".";
    n.emplace_back(layer + "feed_forward.layer1.weight", Shape{2048, 512});
    n.emplace_back(layer + "feed_forward.layer1.bias", Shape{2048});
    n.emplace_back(layer + "feed_forward.layer2.weight", Shape{512, 2048});
    n.emplace_back(layer + "feed_forward.layer2.bias", Shape{512});
    n.emplace_back(layer + "norm_self_attn.weight", Shape{512});
    n.emplace_back(layer + "norm_self_attn.bias", Shape{512});
    n.emplace_back(layer + "norm_ff.weight", Shape{512});
    n.emplace_back(layer + "norm_ff.bias", Shape{512});
  }
  n.emplace_back("encoder.norm.weight", Shape{512});
  n.emplace_back("encoder.norm.bias", Shape{512});
  n.emplace_back("generator.projection.weight", Shape{65, 512});
  n.emplace_back("generator.projection.bias", Shape{65});
  return n;
}

void check_names(const Names& got, const Names& want) {
  CHECK(got.size() == want.size());
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    INFO("entry ", i);
    CHECK(got[i].first == want[i].first);
    CHECK(shape_str(got[i].second) == shape_str(want[i].second));
  }
}

}  // namespace

TEST_CASE("primer_ez, transformer: parameter names and shapes are labml's state_dict") {
  ModelConfig c;  // the defaults: d_model 512, 8 heads, d_ff 2048, 6 layers, vocab 65
  const Names buffer = {{"src_embed.positional_encodings", Shape{5000, 1, 512}}};

  c.family = "primer_ez";
  auto primer = models::make_model(c);
  check_names(names_and_shapes(primer->named_parameters()), expected_parameters(true, {64, 1, 3}, {64}));
  check_names(names_and_shapes(primer->named_buffers()), buffer);
  CHECK(primer->named_parameters().size() + primer->named_buffers().size() == 138);
  CHECK(primer->parameter_count() == 18986561);
  primer.reset();

  c.family = "transformer";
  auto vanilla = models::make_model(c);
  check_names(names_and_shapes(vanilla->named_parameters()), expected_parameters(false, {}, {}));
  check_names(names_and_shapes(vanilla->named_buffers()), buffer);
  CHECK(vanilla->parameter_count() == 18986561 - 6 * 3 * (64 * 3 + 64));
  vanilla.reset();

  // The other convolutions keep labml's variant shapes.
  c.family = "primer_ez";
  c.layers = 1;
  c.conv_kernels = "shared";
  auto shared = tensors_of(*models::make_model(c));
  CHECK(shape_str(shared.at("encoder.layers.0.self_attn.key.1.conv.weight").shape()) == "[1, 1, 3]");
  CHECK(shape_str(shared.at("encoder.layers.0.self_attn.key.1.conv.bias").shape()) == "[1]");
  c.conv_kernels = "per_head";
  auto per_head = tensors_of(*models::make_model(c));
  CHECK(shape_str(per_head.at("encoder.layers.0.self_attn.value.1.conv.weight").shape()) == "[512, 1, 3]");
  CHECK(shape_str(per_head.at("encoder.layers.0.self_attn.value.1.conv.bias").shape()) == "[512]");
}

TEST_CASE("transformer, primer_ez: layers start identical; seeds and the buffer as expected") {
  auto model = models::make_model(tiny("primer_ez"));
  const auto p = tensors_of(*model);
  for (auto& item : p) {
    auto& name = item.first;
    auto& t = item.second;
    const std::string prefix = "encoder.layers.0.";
    if (name.rfind(prefix, 0) != 0) continue;
    INFO(name);
    const Tensor other = p.at("encoder.layers.1." + name.substr(prefix.size()));
    CHECK(t.to_vector<float>() == other.to_vector<float>());
  }
  // Not all equal to each other: query and key were drawn separately.
  CHECK(p.at("encoder.layers.0.self_attn.query.0.linear.weight").to_vector<float>() !=
        p.at("encoder.layers.0.self_attn.key.0.linear.weight").to_vector<float>());
  ModelConfig other_seed = tiny("primer_ez");
  other_seed.seed = 4;
  CHECK(tensors_of(*models::make_model(other_seed)).at("generator.projection.weight").to_vector<float>() !=
        p.at("generator.projection.weight").to_vector<float>());
  // Conv weights U(-1/sqrt(3), 1/sqrt(3)); the PE buffer is interleaved sin/cos.
  for (float w : p.at("encoder.layers.0.self_attn.key.1.conv.weight").to_vector<float>())
    CHECK(std::abs(w) <= 1 / std::sqrt(3.0f));
  const Tensor pe = p.at("src_embed.positional_encodings");
  CHECK(pe.shape() == Shape{5000, 1, 16});
  CHECK(pe.to_vector<float>()[3 * 16 + 2] == doctest::Approx(std::sin(3 * std::pow(10000.0, -2.0 / 16))));
  CHECK(pe.to_vector<float>()[3 * 16 + 3] == doctest::Approx(std::cos(3 * std::pow(10000.0, -2.0 / 16))));
  for (const Tensor& t : model->parameters()) CHECK(t.requires_grad());
}

// Forward FLOPs of the products a real forward pass ran, counted from the graph
// autodiff recorded (every product involves a weight that requires grad, so
// every one is in the graph), from the operand shapes alone:
//   matmul [.., M, K]·[.., K, N]        2·M·K·N per batch item (broadcast batch dims)
//   causal_conv1d x [L, .., C], K taps  2·K per element of x
//   attention q [Lq, B, H, D], k [Lk, ..], v [Lk, .., Dv]   2·Lq·Lk·B·H·(D + Dv)
//     (the causal mask is not discounted, by convention)
// Elementwise work (biases, norms, activations, softmax) is not a product and
// is not counted.
double recorded_product_flops(const Tensor& root) {
  double flops = 0;
  std::set<const autodiff::Node*> seen;
  std::vector<const autodiff::Node*> pending = {root.grad_fn().get()};
  while (!pending.empty()) {
    const autodiff::Node* node = pending.back();
    pending.pop_back();
    if (node == nullptr || !seen.insert(node).second) continue;
    const std::vector<Shape>& in = node->input_shapes;
    if (node->op == OpId::matmul) {
      const Shape& a = in[0];
      const Shape& b = in[1];
      double batch = 1;
      const size_t batch_dims = std::max(a.size(), b.size()) - 2;
      for (size_t i = 0; i < batch_dims; ++i) {
        const int64_t da = i + a.size() >= batch_dims + 2 ? a[i + a.size() - batch_dims - 2] : 1;
        const int64_t db = i + b.size() >= batch_dims + 2 ? b[i + b.size() - batch_dims - 2] : 1;
        batch *= static_cast<double>(std::max(da, db));
      }
      flops += 2.0 * batch * a[a.size() - 2] * a.back() * b.back();
    } else if (node->op == OpId::linear) {  // x [n, in], W [out, in]
      flops += 2.0 * static_cast<double>(in[0][0]) * in[0][1] * in[1][0];
    } else if (node->op == OpId::causal_conv1d) {
      flops += 2.0 * static_cast<double>(shape_numel(in[0])) * in[1].back();
    } else if (node->op == OpId::attention) {
      const Shape& q = in[0];
      const Shape& k = in[1];
      const Shape& v = in[2];
      flops += 2.0 * q[0] * k[0] * q[1] * q[2] * static_cast<double>(q[3] + v[3]);
    }
    for (const autodiff::Edge& e : node->edges)
      if (e.node) pending.push_back(e.node.get());
  }
  return flops;
}

TEST_CASE("transformer, primer_ez: training FLOPs per token are 3x the products a forward pass runs") {
  // The backward of each product is two products of the same size (for matmul:
  // dA = dC·Bᵀ and dB = Aᵀ·dC), hence 3x the forward in training.
  std::vector<ModelConfig> configs = tiny_variants();
  ModelConfig labml;  // the default size: d_model 512, 8 heads, d_ff 2048, 6 layers
  labml.family = "primer_ez";
  configs.push_back(labml);
  for (const ModelConfig& c : configs) {
    auto model = models::make_model(c);
    for (int64_t L : {1, 5, 12}) {
      INFO(c.family, " (", c.conv_kernels, ", d_model ", c.d_model, "), L = ", L);
      const int64_t B = 2;
      const Tensor logits = model->forward(random_tokens(L, B, c.vocab, 7));
      const double forward_per_token = recorded_product_flops(logits) / static_cast<double>(L * B);
      CHECK(forward_per_token > 0);
      CHECK(model->training_flops_per_token(L) == doctest::Approx(3.0 * forward_per_token).epsilon(1e-12));
    }
  }
}

TEST_CASE("transformer, primer_ez: bad configurations name the key") {
  ModelConfig c = tiny("primer_ez");
  c.heads = 3;
  std::string msg = error_of([&] { models::make_model(c); });
  CHECK(contains(msg, "model.heads"));
  CHECK(contains(msg, "16"));
  c = tiny("transformer");
  c.heads = 5;
  CHECK(contains(error_of([&] { models::make_model(c); }), "model.heads"));
  c = tiny("primer_ez", "per_token");
  msg = error_of([&] { models::make_model(c); });
  CHECK(contains(msg, "model.conv_kernels"));
  CHECK(contains(msg, "per_token"));
  c = tiny("primer_ez");
  c.conv_width = 0;
  CHECK(contains(error_of([&] { models::make_model(c); }), "model.conv_width"));
  c = tiny("transformer");
  c.dropout = 1.0;
  CHECK(contains(error_of([&] { models::make_model(c); }), "model.dropout"));
  c = tiny("transformer");
  c.layers = 0;
  CHECK(contains(error_of([&] { models::make_model(c); }), "model.layers"));
  c = tiny("transformer");
  c.d_model = 0;
  CHECK(contains(error_of([&] { models::make_model(c); }), "model.d_model"));

  // Bad inputs name what is wrong too.
  auto model = models::make_model(tiny("transformer"));
  CHECK(contains(error_of([&] { model->forward(Tensor::zeros({4, 2})); }), "int64 [L, B]"));
  CHECK(contains(error_of([&] { model->forward(random_tokens(5001, 1, 11, 1)); }), "positional encoding"));
}

}  // namespace loom::test
