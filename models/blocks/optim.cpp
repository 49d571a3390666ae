#include "models/blocks/optim.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "autodiff/grad_mode.h"
#include "engine/cpu/loops.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace loom::models {

double LrSchedule::at(int64_t step) const {
  if (kind == Kind::constant) return lr;
  const double t = static_cast<double>(std::max<int64_t>(step, 1));
  const double factor = std::min(1.0 / std::sqrt(t), t * std::pow(static_cast<double>(warmup), -1.5));
  return lr / std::sqrt(static_cast<double>(d_model)) * factor;
}

Adam::Adam(NamedTensors params, AdamOptions options, LrSchedule schedule)
    : options_(options), schedule_(schedule) {
  std::set<std::string> seen;
  for (auto& [name, p] : params) {
    LOOM_CHECK(p.defined(), "Adam: parameter '", name, "' is undefined");
    LOOM_CHECK(is_floating(p.dtype()), "Adam: parameter '", name, "' is ", p.describe(), ", expected floating point");
    LOOM_CHECK(seen.insert(name).second, "Adam: parameter name '", name, "' appears twice");
    slots_.push_back({name, p, Tensor(), Tensor(), 0});
  }
}

namespace {

// The fused update of elements [begin, end): one pass over the parameter, its
// grad and both moments. __restrict: they never overlap, which lets the
// compiler vectorise without run-time overlap checks.
template <class T>
void adam_range(T* __restrict param, const T* __restrict grad, T* __restrict m, T* __restrict v, int64_t begin,
                int64_t end, T b1, T b2, T eps, T decay, T step_size, T v_scale) {
  const T a1 = T(1) - b1, a2 = T(1) - b2;
  for (int64_t i = begin; i < end; ++i) {
    const T g = grad[i];
    const T mi = b1 * m[i] + a1 * g;
    const T vi = b2 * v[i] + a2 * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = param[i] * decay - step_size * mi / (std::sqrt(vi) * v_scale + eps);
  }
}

template <class T>
void adam_kernel(T* param, const T* grad, T* m, T* v, int64_t n, double b1, double b2, double eps, double decay,
                 double step_size, double v_scale) {
  cpu::parallel_for(n, 8, [&](int64_t begin, int64_t end) {
    adam_range<T>(param, grad, m, v, begin, end, T(b1), T(b2), T(eps), T(decay), T(step_size), T(v_scale));
  });
}

}  // namespace

void Adam::update(Slot& s, const Tensor& grad) {
  LOOM_CHECK(grad.shape() == s.param.shape(), "Adam: the grad of '", s.name, "' is ", grad.describe(),
             " but the parameter is ", s.param.describe());
  if (!s.exp_avg.defined()) {
    s.exp_avg = Tensor::zeros(s.param.shape(), s.param.dtype(), s.param.device());
    s.exp_avg_sq = Tensor::zeros(s.param.shape(), s.param.dtype(), s.param.device());
  }
  s.step += 1;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double lr = schedule_.at(s.step);
  const double correction1 = 1 - std::pow(b1, static_cast<double>(s.step));
  const double correction2 = 1 - std::pow(b2, static_cast<double>(s.step));
  // Both forms as θ − step_size · m / (√v · v_scale + eps).
  const bool labml = options_.form == AdamForm::labml;
  const double step_size = labml ? lr * std::sqrt(correction2) / correction1 : lr / correction1;
  const double v_scale = labml ? 1.0 : 1.0 / std::sqrt(correction2);
  const double decay = 1 - (labml ? schedule_.lr : lr) * options_.weight_decay;

  const bool fused = options_.fused_cpu && s.param.device() == Device::cpu && s.param.is_contiguous() &&
                     grad.is_contiguous() && grad.dtype() == s.param.dtype();
  if (fused) {
    dispatch_float(s.param.dtype(), "Adam", [&](auto zero) {
      using T = decltype(zero);
      adam_kernel<T>(s.param.data<T>(), grad.data<T>(), s.exp_avg.data<T>(), s.exp_avg_sq.data<T>(),
                     s.param.numel(), b1, b2, options_.eps, decay, step_size, v_scale);
    });
    s.param.bump_version();
    s.exp_avg.bump_version();
    s.exp_avg_sq.bump_version();
    return;
  }
  // Any device: engine ops, in place where the op API allows.
  if (decay != 1.0) mul_(s.param, decay);
  mul_(s.exp_avg, b1);
  add_(s.exp_avg, grad, 1 - b1);
  mul_(s.exp_avg_sq, b2);
  add_(s.exp_avg_sq, grad * grad, 1 - b2);
  Tensor denom = sqrt(s.exp_avg_sq);
  if (v_scale != 1.0) denom = denom * v_scale;
  add_(s.param, s.exp_avg / (denom + options_.eps), -step_size);
}

void Adam::step() {
  NoGradGuard no_grad;
  for (Slot& s : slots_) {
    const Tensor g = s.param.grad();
    if (g.defined()) update(s, g);
  }
}

void Adam::zero_grad() {
  for (Slot& s : slots_) s.param.zero_grad();
}

int64_t Adam::steps_taken() const {
  int64_t most = 0;
  for (const Slot& s : slots_) most = std::max(most, s.step);
  return most;
}

double Adam::current_lr() const { return schedule_.at(std::max<int64_t>(steps_taken(), 1)); }

NamedTensors Adam::state_tensors() const {
  NamedTensors out;
  for (const Slot& s : slots_) {
    if (!s.exp_avg.defined()) continue;
    out.emplace_back(s.name + ".exp_avg", s.exp_avg);
    out.emplace_back(s.name + ".exp_avg_sq", s.exp_avg_sq);
    out.emplace_back(s.name + ".step", Tensor::scalar(static_cast<double>(s.step), DType::i64));
  }
  return out;
}

void Adam::load_state_tensors(const NamedTensors& state) {
  // Check everything before touching anything, so a bad file leaves the optimizer as it was.
  std::map<std::string, const Slot*> by_name;
  for (const Slot& s : slots_) by_name[s.name] = &s;
  std::map<std::string, Tensor> given;
  std::vector<std::string> problems;
  for (const auto& [key, t] : state) {
    const size_t dot = key.rfind('.');
    const std::string param = dot == std::string::npos ? "" : key.substr(0, dot);
    const std::string field = dot == std::string::npos ? key : key.substr(dot + 1);
    const auto it = by_name.find(param);
    if (it == by_name.end() || (field != "exp_avg" && field != "exp_avg_sq" && field != "step")) {
      problems.push_back("unexpected '" + key + "'");
      continue;
    }
    const Tensor& p = it->second->param;
    if (field == "step") {
      if (t.dtype() != DType::i64 || t.numel() != 1 || t.item() < 1)
        problems.push_back("'" + key + "' must be one int64 >= 1, got " + t.describe());
    } else if (t.shape() != p.shape() || t.dtype() != p.dtype()) {
      problems.push_back("'" + key + "' is " + dtype_name(t.dtype()) + shape_str(t.shape()) + ", expected " +
                         dtype_name(p.dtype()) + shape_str(p.shape()));
    }
    given[key] = t;
  }
  for (const Slot& s : slots_) {
    const int present = int(given.count(s.name + ".exp_avg")) + int(given.count(s.name + ".exp_avg_sq")) +
                        int(given.count(s.name + ".step"));
    if (present != 0 && present != 3)
      problems.push_back("'" + s.name + "' needs exp_avg, exp_avg_sq and step together, got " +
                         std::to_string(present) + " of them");
  }
  if (!problems.empty()) {
    std::string message = "optimizer state does not match the parameters:";
    for (const std::string& p : problems) message += "\n  " + p;
    throw Error(message);
  }

  NoGradGuard no_grad;
  for (Slot& s : slots_) {
    const auto m = given.find(s.name + ".exp_avg");
    if (m == given.end()) {
      s.exp_avg = s.exp_avg_sq = Tensor();
      s.step = 0;
      continue;
    }
    s.exp_avg = Tensor::empty(s.param.shape(), s.param.dtype(), s.param.device());
    s.exp_avg_sq = Tensor::empty(s.param.shape(), s.param.dtype(), s.param.device());
    copy_(s.exp_avg, m->second.to(s.param.device()));
    copy_(s.exp_avg_sq, given.at(s.name + ".exp_avg_sq").to(s.param.device()));
    s.step = static_cast<int64_t>(given.at(s.name + ".step").item());
  }
}

namespace {

// Σ x² of one block, in double, over 8 independent lanes (which the compiler
// maps onto vector registers without reordering any one lane's additions).
template <class T>
double block_sum_of_squares(const T* x, int64_t n) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) lane[k] += static_cast<double>(x[i + k]) * static_cast<double>(x[i + k]);
  for (; i < n; ++i) lane[0] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// Σ x² over fixed blocks summed in order: the same result for any thread count.
template <class T>
double sum_of_squares(const T* x, int64_t n) {
  constexpr int64_t kBlock = 1 << 16;
  std::vector<double> partial((n + kBlock - 1) / kBlock);
  cpu::parallel_for(static_cast<int64_t>(partial.size()), kBlock, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      partial[b] = block_sum_of_squares(x + b * kBlock, std::min(kBlock, n - b * kBlock));
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  std::vector<Tensor> grads;
  for (const Tensor& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return 0.0;
  // Sum of squares per grad (float64 accumulation in the reduce kernel), added in float64.
  // Grads on the GPU (or strided) add their sums on their device, in grad order, and
  // are read once: one host synchronisation per step instead of one per parameter,
  // with the same float64 additions as reading each sum.
  double total = 0;
  Tensor device_total;
  for (const Tensor& g : grads) {
    if (g.device() == Device::cpu && g.is_contiguous() && is_floating(g.dtype())) {
      total += dispatch_float(g.dtype(), "clip_grad_norm", [&](auto zero) {
        using T = decltype(zero);
        return sum_of_squares(g.data<T>(), g.numel());
      });
    } else {
      const Tensor squares = cast(sum(g * g), DType::f64);
      device_total = device_total.defined() ? device_total + squares : squares;
    }
  }
  if (device_total.defined()) total += device_total.item();
  const double norm = std::sqrt(total);
  const double scale = std::min(1.0, max_norm / (norm + 1e-6));
  if (scale < 1.0)
    for (const Tensor& g : grads) mul_(g, scale);
  return norm;
}

}  // namespace loom::models
