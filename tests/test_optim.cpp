// test_optim.cpp: Adam (labml and PyTorch forms), the Noam schedule and
// gradient clipping, each against numbers computed here by independent formulas.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "autodiff/grad_mode.h"
#include "model_test_utils.h"
#include "models/blocks/optim.h"

namespace loom::test {

using models::Adam;
using models::AdamForm;
using models::AdamOptions;
using models::LrSchedule;

namespace {

Tensor leaf(const std::vector<float>& values) {
  Tensor t = Tensor::from_vector(values, {static_cast<int64_t>(values.size())});
  t.requires_grad_();
  return t;
}

void set_grad(const Tensor& p, const std::vector<float>& g) {
  p.set_grad(Tensor::from_vector(g, {static_cast<int64_t>(g.size())}));
}

// The reference Adam, in double, written from models/FAMILIES.md §1.6 and torch.optim.Adam's docs.
struct ReferenceAdam {
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& g, double lr, const AdamOptions& o) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    const double c1 = 1 - std::pow(o.beta1, t), c2 = 1 - std::pow(o.beta2, t);
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - lr * o.weight_decay;  // decoupled; lr is constant here, so both forms agree
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      if (o.form == AdamForm::labml)
        p[i] -= lr * std::sqrt(c2) / c1 * m[i] / (std::sqrt(v[i]) + o.eps);
      else
        p[i] -= lr / c1 * m[i] / (std::sqrt(v[i] / c2) + o.eps);
    }
  }
};

}  // namespace

TEST_CASE("adam: one step of each form, against numbers worked by hand") {
  // p = 1, g = 0.5, lr = 0.1, betas (0.9, 0.999), eps 1e-3 (large, so the forms differ visibly):
  //   m = 0.05, v = 0.00025, √v = 0.0158113883
  //   labml:   0.1 · √0.001 / 0.1 · 0.05 / (0.0158113883 + 0.001) = 0.0940521    -> p = 0.9059479
  //   pytorch: 0.1 / 0.1 · 0.05 / (0.0158113883 / √0.001 + 0.001) = 0.05 / 0.501 -> p = 0.9001996
  const std::vector<std::pair<AdamForm, double>> cases = {{AdamForm::labml, 0.9059479}, {AdamForm::pytorch, 0.9001996}};
  for (const auto& item : cases) {
    const auto& form = item.first;
    const auto& expected = item.second;
    for (bool fused : {true, false}) {
      INFO("form ", form == AdamForm::labml ? "labml" : "pytorch", ", fused ", fused);
      Tensor p = leaf({1.0f});
      AdamOptions o;
      o.form = form;
      o.eps = 1e-3;
      o.fused_cpu = fused;
      Adam adam({{"p", p}}, o, LrSchedule::constant(0.1));
      set_grad(p, {0.5f});
      adam.step();
      CHECK(p.item() == relative(expected, 1e-6));
      CHECK(adam.steps_taken() == 1);
    }
  }
}

TEST_CASE("adam: several steps with changing grads and weight decay follow the reference") {
  for (AdamForm form : {AdamForm::labml, AdamForm::pytorch})
    for (double decay : {0.0, 0.05})
      for (bool fused : {true, false}) {
        INFO("form ", int(form), " weight_decay ", decay, " fused ", fused);
        AdamOptions o;
        o.form = form;
        o.weight_decay = decay;
        o.beta1 = 0.8;
        o.beta2 = 0.95;
        o.fused_cpu = fused;
        std::vector<double> ref = {0.5, -1.25, 2.0, 0.0, 3.5};
        Tensor p = leaf({0.5f, -1.25f, 2.0f, 0.0f, 3.5f});
        Adam adam({{"p", p}}, o, LrSchedule::constant(0.03));
        ReferenceAdam reference;
        for (int step = 1; step <= 6; ++step) {
          std::vector<double> g(5);
          for (int i = 0; i < 5; ++i) g[i] = std::sin(1.7 * step + i) * (i + 1);
          set_grad(p, std::vector<float>(g.begin(), g.end()));
          reference.step(ref, g, 0.03, o);
          adam.step();
        }
        const std::vector<float> got = p.to_vector<float>();
        for (int i = 0; i < 5; ++i) CHECK(got[i] == relative(ref[i], 1e-5));
      }
}

TEST_CASE("adam: parameters without a grad are skipped; step counts are per parameter") {
  Tensor a = leaf({1.0f, 2.0f}), b = leaf({3.0f});
  const LrSchedule noam = LrSchedule::noam(1.0, 512, 2000);
  Adam adam({{"a", a}, {"b", b}}, AdamOptions{}, noam);
  for (int i = 0; i < 2; ++i) {
    set_grad(a, {0.1f, -0.2f});
    adam.step();
    adam.zero_grad();
  }
  CHECK(b.item() == 3.0f);  // no grad: untouched
  CHECK(adam.state_tensors().size() == 3);  // and no state

  const std::vector<float> a_before = a.to_vector<float>();
  set_grad(b, {1.0f});
  adam.step();
  CHECK(a.to_vector<float>() == a_before);  // a has no grad this time
  // b's first step uses the rate at its own t = 1; labml's first step moves by lr_1 · sign(g).
  CHECK(b.item() == relative(3.0 - noam.at(1), 1e-6));

  const models::NamedTensors state = adam.state_tensors();
  REQUIRE(state.size() == 6);
  CHECK(state[0].first == "a.exp_avg");
  CHECK(state[1].first == "a.exp_avg_sq");
  CHECK(state[2].first == "a.step");
  CHECK(state[2].second.item() == 2);
  CHECK(state[5].first == "b.step");
  CHECK(state[5].second.item() == 1);
  CHECK(adam.steps_taken() == 2);
  adam.zero_grad();
  CHECK(!b.grad().defined());
}

TEST_CASE("adam: exported state resumes the same trajectory; bad state lists every problem") {
  auto grads_at = [](int step) { return std::vector<float>{0.3f * step, -0.1f, 0.02f * step * step}; };
  Tensor p1 = leaf({1, 2, 3}), p2 = leaf({1, 2, 3});
  AdamOptions o;
  Adam one({{"w", p1}}, o, LrSchedule::noam(1.0, 64, 3));
  for (int s = 1; s <= 3; ++s) set_grad(p1, grads_at(s)), one.step(), one.zero_grad();

  // A second optimizer, on a copy of the parameter, picks up from the exported state.
  {
    NoGradGuard no_grad;
    copy_(p2, p1);
  }
  Adam two({{"w", p2}}, o, LrSchedule::noam(1.0, 64, 3));
  two.load_state_tensors(one.state_tensors());
  CHECK(two.steps_taken() == 3);
  for (int s = 4; s <= 6; ++s) {
    set_grad(p1, grads_at(s)), one.step(), one.zero_grad();
    set_grad(p2, grads_at(s)), two.step(), two.zero_grad();
  }
  CHECK(p1.to_vector<float>() == p2.to_vector<float>());

  const models::NamedTensors bad = {{"w.exp_avg", Tensor::zeros({4})},
                                    {"w.step", Tensor::scalar(2, DType::i64)},
                                    {"v.exp_avg", Tensor::zeros({3})}};
  const std::string message = error_of([&] { two.load_state_tensors(bad); });
  INFO(message);
  CHECK(contains(message, "'w.exp_avg' is float32[4], expected float32[3]"));
  CHECK(contains(message, "unexpected 'v.exp_avg'"));
  CHECK(contains(message, "'w' needs exp_avg, exp_avg_sq and step together, got 2 of them"));
  CHECK(two.steps_taken() == 6);  // unchanged
}

TEST_CASE("noam: the values listed in models/FAMILIES.md §1.6 and the formula around the peak") {
  const LrSchedule noam = LrSchedule::noam(1.0, 512, 2000);
  CHECK(noam.at(1) == relative(4.94e-7, 2e-3));
  CHECK(noam.at(1000) == relative(4.94e-4, 2e-3));
  CHECK(noam.at(2000) == relative(9.88e-4, 2e-3));
  CHECK(noam.at(4000) == relative(6.99e-4, 2e-3));
  CHECK(noam.at(62848) == relative(1.76e-4, 3e-3));
  // Linear warmup, then 1/sqrt(t): the peak is at t = warmup.
  CHECK(noam.at(2) == relative(2 * noam.at(1)));
  CHECK(noam.at(1999) < noam.at(2000));
  CHECK(noam.at(2001) < noam.at(2000));
  CHECK(noam.at(8000) == relative(noam.at(2000) / 2));
  CHECK(LrSchedule::constant(2.5e-4).at(12345) == 2.5e-4);
}

TEST_CASE("clip_grad_norm: scales all grads together by max_norm / (norm + 1e-6); skips missing grads") {
  Tensor a = leaf({0, 0}), b = leaf({0}), none = leaf({5});
  set_grad(a, {3, 4});
  set_grad(b, {12});
  // The norm of (3, 4, 12) is 13.
  const double norm = models::clip_grad_norm({a, b, none}, 1.0);
  CHECK(norm == relative(13.0));
  const double scale = 1.0 / (13.0 + 1e-6);
  const std::vector<float> ga = a.grad().to_vector<float>();
  CHECK(ga[0] == relative(3 * scale, 1e-6));
  CHECK(ga[1] == relative(4 * scale, 1e-6));
  CHECK(b.grad().item() == relative(12 * scale, 1e-6));
  CHECK(!none.grad().defined());

  // Below the limit nothing changes.
  set_grad(a, {3, 4});
  set_grad(b, {12});
  CHECK(models::clip_grad_norm({a, b}, 20.0) == relative(13.0));
  CHECK(a.grad().to_vector<float>() == std::vector<float>{3, 4});
  CHECK(b.grad().item() == 12.0f);
  CHECK(models::clip_grad_norm({none}, 1.0) == 0.0);

  // With a small norm the 1e-6 shows: norm 5e-4, limit 1e-4 -> scale 1e-4 / 5.01e-4 = 0.1996008, not 0.2.
  set_grad(a, {3e-4f, 4e-4f});
  models::clip_grad_norm({a}, 1e-4);
  CHECK(a.grad().to_vector<float>()[0] == relative(3e-4 * 0.1996008, 1e-6));
}

TEST_CASE("clip_grad_norm: strided grads, summed where they live and read once, give the same norm and scale") {
  // Transposed grads take the path CUDA grads take (sums on their device); a
  // contiguous one between them takes the CPU loop. The norm must be that of all.
  Tensor a = Tensor::zeros({2, 3}).requires_grad_(), b = leaf({0}), c = Tensor::zeros({3, 2}).requires_grad_();
  a.set_grad(Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2}).transpose(0, 1));
  set_grad(b, {-7});
  c.set_grad(Tensor::from_vector(std::vector<float>{0.5f, -1, 2, 8, -3, 1}, {2, 3}).transpose(0, 1));
  REQUIRE(!a.grad().is_contiguous());
  double squares = 0;
  for (double v : {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -7.0, 0.5, -1.0, 2.0, 8.0, -3.0, 1.0}) squares += v * v;
  const double norm = models::clip_grad_norm({a, b, c}, 2.0);
  CHECK(norm == relative(std::sqrt(squares), 1e-12));
  const double scale = 2.0 / (std::sqrt(squares) + 1e-6);
  // a's grad [2, 3] is the transpose of [[1, 2], [3, 4], [5, 6]]: a.grad[0][1] = 3.
  CHECK(contiguous(a.grad()).to_vector<float>()[1] == relative(3 * scale, 1e-6));
  CHECK(b.grad().item() == relative(-7 * scale, 1e-6));
  CHECK(contiguous(c.grad()).to_vector<float>()[1] == relative(8 * scale, 1e-6));
}

}  // namespace loom::test
