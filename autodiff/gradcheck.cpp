#include "autodiff/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autodiff/grad_mode.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {
double weighted_sum(const Tensor& out, const Tensor& weights) {
  return sum(mul(cast(out, DType::f64), weights)).item();
}
}  // namespace

GradcheckResult gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
  for (const Tensor& x : inputs) {
    if (!x.defined() || !x.requires_grad()) continue;
    LOOM_CHECK(x.dtype() == DType::f64 && x.device() == Device::cpu && x.is_contiguous() && !x.grad_fn(),
               "gradcheck: inputs that require grad must be contiguous float64 CPU leaves, got ", x.describe());
  }
  GradcheckResult result;
  // Analytic gradients.
  for (const Tensor& x : inputs)
    if (x.defined()) x.zero_grad();
  const Tensor out = f(inputs);
  Generator gen(options.seed);
  const Tensor weights = normal(out.shape(), 0.0, 1.0, gen, DType::f64);
  const Tensor loss = sum(mul(cast(out, DType::f64), weights));
  LOOM_CHECK(loss.requires_grad(), "gradcheck: the output does not depend on any input that requires grad");
  loss.backward();

  std::ostringstream report;
  result.ok = true;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    const Tensor analytic = x.grad().defined() ? x.grad() : Tensor::zeros(x.shape(), DType::f64);
    const std::vector<double> a = analytic.to_vector<double>();
    std::vector<double> numeric(a.size());
    double* p = x.data<double>();
    {
      NoGradGuard no_grad;
      for (size_t i = 0; i < a.size(); ++i) {
        const double saved = p[i];
        p[i] = saved + options.eps;
        const double plus = weighted_sum(f(inputs), weights);
        p[i] = saved - options.eps;
        const double minus = weighted_sum(f(inputs), weights);
        p[i] = saved;
        numeric[i] = (plus - minus) / (2 * options.eps);
      }
    }
    double diff2 = 0, num2 = 0, worst = -1;
    size_t worst_at = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double d = std::abs(a[i] - numeric[i]);
      diff2 += d * d;
      num2 += numeric[i] * numeric[i];
      if (d > worst || std::isnan(d)) {
        worst = d;
        worst_at = i;
      }
    }
    double rel = std::sqrt(diff2) / std::max(std::sqrt(num2), 1e-8);
    if (std::isnan(rel)) rel = INFINITY;
    result.max_relative_error = std::max(result.max_relative_error, rel);
    if (!(rel <= options.tolerance)) {
      result.ok = false;
      report << "input " << k << " " << x.describe() << ": relative error " << rel << "; worst element " << worst_at
             << ": analytic " << a[worst_at] << ", numeric " << numeric[worst_at] << "\n";
    }
  }
  result.report = report.str();
  return result;
}

}  // namespace loom::autodiff
