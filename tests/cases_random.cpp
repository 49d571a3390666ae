// cases_random.cpp: op-table cases for the random fills and dropout.
//
// The reference draws Philox-4x32-10 (checked against the published vectors in
// tests/test_runtime.cpp) in the documented order, element i from word i % 4 of
// block offset + i / 4, and applies each distribution's transform written out
// here in plain double arithmetic. The fills take no tensor; their one input
// only carries the dtype and device of the case.
#include <cmath>

#include "engine/ops.h"
#include "engine/philox.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

constexpr uint64_t kSeed = 1234, kOffset = 17;  // a non-zero counter offset

Generator generator() {
  Generator gen(kSeed);
  gen.advance(kOffset);
  return gen;
}

// Word i % 4 of block kOffset + i / 4, as a double in [0, 1).
uint32_t word(int64_t i) { return philox4x32(kOffset + static_cast<uint64_t>(i) / 4, kSeed)[i % 4]; }
double unit(uint32_t bits) { return bits / 4294967296.0; }

Ref fill_ref(const Shape& shape, double (*value)(int64_t i)) {
  Ref out(shape);
  for (int64_t i = 0; i < out.numel(); ++i) out.v[i] = value(i);
  return out;
}

}  // namespace

static CaseRegistrar random_cases([](std::vector<OpCase>& c) {
  // 4 * 9 + 3 elements: whole blocks and a partial last one.
  const Shape shape{3, 13};
  const InputSpec carrier = InputSpec({1}).constant();
  c.push_back({"uniform [-2, 3)", {carrier},
               [shape](const Xs& x) {
                 Generator gen = generator();
                 return uniform(shape, -2, 3, gen, x[0].dtype(), x[0].device());
               },
               [shape](const Rs&) { return fill_ref(shape, [](int64_t i) { return -2 + 5 * unit(word(i)); }); },
               false});
  c.push_back({"bernoulli p=0.3", {carrier},
               [shape](const Xs& x) {
                 Generator gen = generator();
                 return bernoulli(shape, 0.3, gen, x[0].dtype(), x[0].device());
               },
               [shape](const Rs&) {
                 return fill_ref(shape, [](int64_t i) { return unit(word(i)) < 0.3 ? 1.0 : 0.0; });
               },
               false});
  // Box-Muller on the words (2k, 2k+1) of a block: cosine for the even element, sine for the odd.
  c.push_back({"normal mean 0.5 std 2", {carrier},
               [shape](const Xs& x) {
                 Generator gen = generator();
                 return normal(shape, 0.5, 2.0, gen, x[0].dtype(), x[0].device());
               },
               [shape](const Rs&) {
                 return fill_ref(shape, [](int64_t i) {
                   const int64_t even = i - i % 2;
                   const double u1 = (word(even) + 1.0) / 4294967297.0, u2 = unit(word(even + 1));
                   const double r = std::sqrt(-2.0 * std::log(u1)), angle = 2 * 3.141592653589793 * u2;
                   return 0.5 + 2.0 * r * (i % 2 ? std::sin(angle) : std::cos(angle));
                 });
               },
               false, 1e-5});

  // Dropout's mask comes from a fixed seed; the reference rebuilds the same mask
  // from bernoulli() and checks the scaling (mask statistics: tests/test_runtime.cpp).
  c.push_back({"dropout p=0.3", {InputSpec({4, 6})},
               [](const Xs& x) {
                 Generator gen(7);
                 return dropout(x[0], 0.3, gen);
               },
               [](const Rs& r) {
                 Generator gen(7);
                 const Ref keep = Ref::from(bernoulli({4, 6}, 0.7, gen, DType::f64));
                 return zip(r[0], keep, [](double x, double k) { return x * k / 0.7; });
               },
               true, 1e-6});
  c.push_back({"relu_dropout p=0.3", {InputSpec({4, 6}).nonzero()},
               [](const Xs& x) {
                 Generator gen(7);
                 return relu_dropout(x[0], 0.3, gen);
               },
               [](const Rs& r) {
                 Generator gen(7);
                 const Ref keep = Ref::from(bernoulli({4, 6}, 0.7, gen, DType::f64));
                 return zip(r[0], keep, [](double x, double k) { return (x > 0 ? x : 0.0) * k / 0.7; });
               },
               true, 1e-6});
});

}  // namespace loom::test
