// cases_elementwise.cpp: op-table cases for unary, binary, compare, where, masked_fill.
#include <cmath>

#include "engine/ops.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

void add_unary(std::vector<OpCase>& cases, const std::string& name, Tensor (*f)(const Tensor&),
               double (*ref)(double), InputSpec spec = InputSpec({3, 4})) {
  cases.push_back({name, {spec}, [f](const Xs& x) { return f(x[0]); },
                   [ref](const Rs& r) { return map(r[0], ref); }});
  // The same op on a transposed and on a strided view.
  InputSpec t = spec;
  t.shape = {4, 5};
  cases.push_back({name + " transposed", {t.transposed()}, [f](const Xs& x) { return f(x[0]); },
                   [ref](const Rs& r) { return map(r[0], ref); }});
  InputSpec s = spec;
  s.shape = {2, 3, 3};
  cases.push_back({name + " strided", {s.strided()}, [f](const Xs& x) { return f(x[0]); },
                   [ref](const Rs& r) { return map(r[0], ref); }});
}

void add_binary(std::vector<OpCase>& cases, const std::string& name,
                Tensor (*f)(const Tensor&, const Tensor&), double (*ref)(double, double), double lo = -1,
                double hi = 1, bool gradcheck = true) {
  auto run = [f](const Xs& x) { return f(x[0], x[1]); };
  auto reference = [ref](const Rs& r) { return zip(r[0], r[1], ref); };
  auto spec = [&](Shape s) { return InputSpec(std::move(s)).range(lo, hi); };
  cases.push_back({name + " same shape", {spec({3, 4}), spec({3, 4})}, run, reference, gradcheck});
  cases.push_back({name + " broadcast [3,1]x[4]", {spec({3, 1}), spec({4})}, run, reference, gradcheck});
  cases.push_back({name + " broadcast [2,3,4]x[3,1]", {spec({2, 3, 4}), spec({3, 1})}, run, reference,
                   gradcheck});
  cases.push_back({name + " scalar operand", {spec({2, 5}), spec({})}, run, reference, gradcheck});
  cases.push_back({name + " scalar first operand", {spec({}), spec({2, 5})}, run, reference, gradcheck});
  cases.push_back({name + " transposed x strided", {spec({3, 4}).transposed(), spec({3, 4}).strided()}, run,
                   reference, gradcheck});
  cases.push_back({name + " empty", {spec({0, 4}), spec({4})}, run, reference, gradcheck});
  // Equal operands: ties must give the same 0/1 (comparisons) and the same split
  // of the gradient (maximum, minimum) on every backend.
  cases.push_back({name + " of a tensor with itself", {spec({5, 6})}, [f](const Xs& x) { return f(x[0], x[0]); },
                   [ref](const Rs& r) { return zip(r[0], r[0], ref); }, gradcheck});
}

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

}  // namespace

static CaseRegistrar unary_cases([](std::vector<OpCase>& c) {
  add_unary(c, "neg", neg, [](double x) { return -x; });
  add_unary(c, "exp", exp, [](double x) { return std::exp(x); }, InputSpec({3, 4}).range(-3, 3));
  add_unary(c, "log", log, [](double x) { return std::log(x); }, InputSpec({3, 4}).range(0.1, 3));
  add_unary(c, "sqrt", sqrt, [](double x) { return std::sqrt(x); }, InputSpec({3, 4}).range(0.1, 3));
  add_unary(c, "rsqrt", rsqrt, [](double x) { return 1.0 / std::sqrt(x); },
            InputSpec({3, 4}).range(0.1, 3));
  add_unary(c, "tanh", tanh, [](double x) { return std::tanh(x); }, InputSpec({3, 4}).range(-3, 3));
  add_unary(c, "sigmoid", sigmoid, sigmoid_ref, InputSpec({3, 4}).range(-8, 8));
  add_unary(c, "relu", relu, [](double x) { return x > 0 ? x : 0.0; }, InputSpec({3, 4}).nonzero());
  add_unary(c, "squared_relu", squared_relu, [](double x) { return x > 0 ? x * x : 0.0; },
            InputSpec({3, 4}).nonzero());
  add_unary(c, "gelu", gelu, gelu_ref, InputSpec({3, 4}).range(-3, 3));
  add_unary(c, "silu", silu, [](double x) { return x / (1.0 + std::exp(-x)); }, InputSpec({3, 4}).range(-6, 6));
  c.push_back({"elu alpha=0.7", {InputSpec({3, 4}).range(-2, 2).nonzero()},
               [](const Xs& x) { return elu(x[0], 0.7); },
               [](const Rs& r) { return map(r[0], [](double x) { return x > 0 ? x : 0.7 * (std::exp(x) - 1); }); }});
  c.push_back({"elu alpha=1 strided", {InputSpec({3, 4}).range(-2, 2).nonzero().strided()},
               [](const Xs& x) { return elu(x[0]); },
               [](const Rs& r) { return map(r[0], [](double x) { return x > 0 ? x : std::exp(x) - 1; }); }});
  c.push_back({"pow 2.5", {InputSpec({3, 4}).range(0.2, 2)},
               [](const Xs& x) { return pow(x[0], 2.5); },
               [](const Rs& r) { return map(r[0], [](double x) { return std::pow(x, 2.5); }); }});
  c.push_back({"pow -1 transposed", {InputSpec({3, 4}).range(0.2, 2).transposed()},
               [](const Xs& x) { return pow(x[0], -1.0); },
               [](const Rs& r) { return map(r[0], [](double x) { return 1.0 / x; }); }});
});

static CaseRegistrar binary_cases([](std::vector<OpCase>& c) {
  add_binary(c, "add", add, [](double a, double b) { return a + b; });
  add_binary(c, "sub", sub, [](double a, double b) { return a - b; });
  add_binary(c, "mul", mul, [](double a, double b) { return a * b; });
  add_binary(c, "div", div, [](double a, double b) { return a / b; }, 0.5, 2.0);
  add_binary(c, "maximum", maximum, [](double a, double b) { return a >= b ? a : b; });
  add_binary(c, "minimum", minimum, [](double a, double b) { return a <= b ? a : b; });
  add_binary(c, "gt", gt, [](double a, double b) { return a > b ? 1.0 : 0.0; }, -1, 1, false);
  add_binary(c, "le", le, [](double a, double b) { return a <= b ? 1.0 : 0.0; }, -1, 1, false);
  add_binary(c, "ge", ge, [](double a, double b) { return a >= b ? 1.0 : 0.0; }, -1, 1, false);
  add_binary(c, "lt", lt, [](double a, double b) { return a < b ? 1.0 : 0.0; }, -1, 1, false);
  add_binary(c, "eq", eq, [](double a, double b) { return a == b ? 1.0 : 0.0; }, -1, 1, false);
  c.push_back({"add scalar double", {InputSpec({2, 3})}, [](const Xs& x) { return x[0] + 1.5; },
               [](const Rs& r) { return map(r[0], [](double a) { return a + 1.5; }); }});
  c.push_back({"mul scalar double, strided", {InputSpec({2, 3}).strided()},
               [](const Xs& x) { return x[0] * -2.0; },
               [](const Rs& r) { return map(r[0], [](double a) { return a * -2.0; }); }});
  c.push_back({"reused input: x*x + x", {InputSpec({3, 3})},
               [](const Xs& x) { return x[0] * x[0] + x[0]; },
               [](const Rs& r) { return map(r[0], [](double a) { return a * a + a; }); }});
});

static CaseRegistrar select_cases([](std::vector<OpCase>& c) {
  auto where_ref = [](const Rs& r) {
    // cond broadcast with a, then with b.
    const Ref ca = zip(r[0], r[1], [](double c, double a) { return c != 0 ? a : NAN; });
    return zip(ca, r[2], [](double x, double b) { return std::isnan(x) ? b : x; });
  };
  c.push_back({"where broadcast cond [3,1]",
               {InputSpec({3, 1}).indices(2), InputSpec({3, 4}), InputSpec({4})},
               [](const Xs& x) { return where(x[0], x[1], x[2]); }, where_ref});
  c.push_back({"where float cond, transposed a",
               {InputSpec({4, 3}).range(-1, 1).constant(), InputSpec({4, 3}).transposed(), InputSpec({4, 3})},
               [](const Xs& x) { return where(gt(x[0], 0.0), x[1], x[2]); },
               [](const Rs& r) {
                 const Ref cond = map(r[0], [](double v) { return v > 0 ? 1.0 : 0.0; });
                 const Ref ca = zip(cond, r[1], [](double c, double a) { return c != 0 ? a : NAN; });
                 return zip(ca, r[2], [](double x, double b) { return std::isnan(x) ? b : x; });
               }});
  c.push_back({"masked_fill causal mask", {InputSpec({2, 4, 4})},
               [](const Xs& x) {
                 // mask[i][j] = j > i: the upper triangle of every batch item.
                 const Tensor i = Tensor::arange(4, x[0].dtype(), x[0].device()).reshape({4, 1});
                 const Tensor j = Tensor::arange(4, x[0].dtype(), x[0].device()).reshape({1, 4});
                 return masked_fill(x[0], gt(j, i), -5.0);
               },
               [](const Rs& r) {
                 Ref out = r[0];
                 for (int64_t k = 0; k < out.numel(); ++k) {
                   const auto idx = out.unflat(k);
                   if (idx[2] > idx[1]) out.v[k] = -5.0;
                 }
                 return out;
               }});
});

}  // namespace loom::test
