// test_cuda.cpp: the CUDA backend against the CPU backend.
//
// Every check runs the same computation on both devices from the same inputs
// and compares: forward results, and for differentiable ops the gradients of
// every input under the same random upstream gradient (the backward rules are
// engine ops, so they run on CUDA too). float32 results must agree to 1e-5
// relative to the largest value of the CPU result (float64: 1e-12); copies,
// comparisons, argmax and random fills must agree exactly. Whole models (every
// family at a tiny size) must give the CPU's logits, loss and parameter
// gradients to 1e-5 too, and the CPU's losses over five training steps to 1e-4.
// Every op's parity case is in the op table (tests/cases_<stem>.cpp, run here by
// "every op-table case"); the sections below check what the table does not.
//
// A separate executable (suite "cuda"): on a machine with no NVIDIA driver or
// no device it prints why and exits with 77, which meson reports as SKIP, never
// as a pass; any other CUDA start-up error fails (cuda/init_check.h), and so
// does NVIDIA_TF32_OVERRIDE set to anything but 0 (see main).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda/init_check.h"
#include "engine/backend.h"
#include "engine/ops.h"
#include "tests/cuda_test_inputs.h"
#include "models/families/language_model.h"
#include "models/blocks/optim.h"
#include "tests/op_table.h"

namespace loom {
namespace {

constexpr Device kCuda = Device::cuda;
constexpr Device kCpu = Device::cpu;

double tolerance(DType t) { return t == DType::f64 ? 1e-12 : 1e-5; }

// ---- inputs ------------------------------------------------------------------------

using cuda_test::random_cpu;
using cuda_test::random_ids;

// ---- comparisons -----------------------------------------------------------------------

using cuda_test::values;

// Checks that `got` (computed on CUDA) matches `want` (computed on the CPU):
// same shape and dtype, NaN and inf in the same places, and
// max |got - want| <= tol * max(max |want|, floor). The floor is for tensors
// that are zero up to rounding (a gradient that vanishes mathematically), which
// are compared against a scale the caller knows instead.
void check_close(const Tensor& got, const Tensor& want, double tol, const std::string& what, double floor = 0.0) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(want.defined());
  CHECK(got.device() == kCuda);
  CHECK(want.device() == kCpu);
  REQUIRE(shape_str(got.shape()) == shape_str(want.shape()));
  REQUIRE(dtype_name(got.dtype()) == std::string(dtype_name(want.dtype())));
  const std::vector<double> g = values(got), w = values(want);
  double max_diff = 0.0, scale = 0.0;
  int64_t special_mismatches = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (std::isnan(w[i]) || std::isinf(w[i])) {
      const bool same = std::isnan(w[i]) ? std::isnan(g[i]) : g[i] == w[i];
      if (!same) ++special_mismatches;
      continue;
    }
    max_diff = std::max(max_diff, std::abs(g[i] - w[i]));
    scale = std::max(scale, std::abs(w[i]));
  }
  CHECK_MESSAGE(special_mismatches == 0, special_mismatches, " NaN/inf elements differ");
  scale = std::max(scale, floor);
  const double error = scale > 0 ? max_diff / scale : max_diff;
  CHECK_MESSAGE(error <= tol, "max |cuda - cpu| = ", max_diff, ", max |cpu| = ", scale, ", relative error ",
                error, " > ", tol);
}

// Bitwise equality (copies, casts, comparisons, argmax, random fills).
void check_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(shape_str(got.shape()) == shape_str(want.shape()));
  REQUIRE(got.dtype() == want.dtype());
  const Tensor g = contiguous(got.to(kCpu)), w = contiguous(want.to(kCpu));
  const size_t bytes = static_cast<size_t>(w.numel()) * dtype_size(w.dtype());
  int64_t first_diff = -1;
  const size_t item = dtype_size(w.dtype());
  for (size_t i = 0; i < bytes && first_diff < 0; i += item)
    if (std::memcmp(static_cast<const char*>(g.raw_data()) + i, static_cast<const char*>(w.raw_data()) + i, item))
      first_diff = static_cast<int64_t>(i / item);
  CHECK_MESSAGE(first_diff < 0, "first differing element: ", first_diff, " (cuda ",
                first_diff >= 0 ? values(got)[first_diff] : 0.0, ", cpu ",
                first_diff >= 0 ? values(want)[first_diff] : 0.0, ")");
}

// ---- the parity harness -----------------------------------------------------------------

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs f on CPU copies and on CUDA copies of `inputs` and compares the outputs;
// when `differentiable`, the floating-point inputs require grad, a random
// upstream gradient is backpropagated on both devices, and each input's
// gradient is compared too. Views (transposes, narrows) belong inside f, so
// the gradient flows back through them as well.
void check_op(const std::string& name, const std::vector<Tensor>& inputs, const Fn& f, bool differentiable = true,
              double tol = -1.0) {
  std::vector<Tensor> cpu, gpu;
  for (const Tensor& x : inputs) {
    Tensor c = x.clone().detach();
    Tensor g = x.detach().to(kCuda);
    if (differentiable && is_floating(x.dtype())) {
      c.requires_grad_();
      g.requires_grad_();
    }
    cpu.push_back(c);
    gpu.push_back(g);
  }
  const Tensor want = f(cpu);
  const Tensor got = f(gpu);
  const double t = tol > 0 ? tol : tolerance(want.dtype());
  if (is_floating(want.dtype())) check_close(got, want, t, name + ": forward");
  else check_equal(got, want, name + ": forward");
  if (!differentiable) return;

  const Tensor upstream = random_cpu(want.shape(), 0x5eed ^ std::hash<std::string>{}(name), -1, 1, want.dtype());
  want.backward(upstream);
  got.backward(upstream.to(kCuda));
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string what = name + ": gradient of input " + std::to_string(i);
    INFO(what);
    // An input the output does not depend on differentiably (a where() condition) gets no gradient.
    CHECK(gpu[i].grad().defined() == cpu[i].grad().defined());
    if (cpu[i].grad().defined() && gpu[i].grad().defined()) check_close(gpu[i].grad(), cpu[i].grad(), t, what);
  }
}

// check_op in float32 and in float64.
void check_op_both(const std::string& name, const std::vector<Tensor>& inputs, const Fn& f,
                   bool differentiable = true) {
  check_op(name + " [f32]", inputs, f, differentiable);
  std::vector<Tensor> f64;
  for (const Tensor& x : inputs) f64.push_back(is_floating(x.dtype()) ? x.to(DType::f64) : x);
  check_op(name + " [f64]", f64, f, differentiable);
}

const Tensor& x0(const std::vector<Tensor>& x) { return x[0]; }

// ---- device, memory, copies ---------------------------------------------------------------

TEST_CASE("cuda: tensors move to the GPU and back unchanged") {
  CHECK(cuda_available());
  CHECK(backend_for(kCuda).device() == kCuda);
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor x = random_cpu({3, 5, 7}, 1, -10, 10, dt);
    const Tensor y = x.to(kCuda);
    CHECK(y.device() == kCuda);
    check_equal(y, x, std::string("round trip ") + dtype_name(dt));
  }
  const Tensor ids = random_ids({1000}, 1 << 30, 2);
  check_equal(ids.to(kCuda), ids, "round trip int64");
  // A view moves as its logical elements.
  const Tensor base = random_cpu({6, 8}, 3);
  check_equal(base.transpose(0, 1).to(kCuda), base.transpose(0, 1), "round trip of a transposed view");
  check_equal(Tensor::empty({0, 4}, DType::f32, kCuda), Tensor::empty({0, 4}), "empty tensor");
  CHECK(Tensor::scalar(2.5, DType::f32, kCuda).item() == 2.5);
}

TEST_CASE("cuda: the caching allocator reaches a steady state") {
  Allocator& alloc = backend_for(kCuda).allocator();
  auto step = [] {
    // A few tensors of training-like sizes, freed at the end of the scope.
    Tensor a = Tensor::empty({256, 1024}, DType::f32, kCuda);
    Tensor b = Tensor::empty({1000}, DType::f32, kCuda);
    Tensor c = Tensor::empty({3}, DType::i64, kCuda);
    fill_(a, 1.0);
    fill_(b, 2.0);
    fill_(c, 3.0);
  };
  step();
  const AllocatorStats warm = alloc.stats();
  for (int i = 0; i < 10; ++i) step();
  const AllocatorStats after = alloc.stats();
  CHECK(after.system_allocations == warm.system_allocations);
  CHECK(after.active_bytes == warm.active_bytes);
  CHECK(after.peak_bytes >= 256 * 1024 * 4);
  CHECK(after.cached_bytes >= 256 * 1024 * 4);
  backend_for(kCuda).synchronize();
  alloc.release_cached();
  CHECK(alloc.stats().cached_bytes == 0);
  step();  // allocates again after the cache was emptied
  CHECK(alloc.stats().system_allocations > after.system_allocations);
}

TEST_CASE("cuda: errors name the op and leave the device usable") {
  // 2^42 float32 = 16 TiB: no GPU has it.
  try {
    Tensor::empty({int64_t{1} << 42}, DType::f32, kCuda);
    FAIL("allocating 16 TiB on cuda did not throw");
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("out of memory") != std::string::npos);
    CHECK(std::string(e.what()).find("cuda") != std::string::npos);
  }
  check_close(add(Tensor::ones({4}, DType::f32, kCuda), 1.0), Tensor::full({4}, 2.0), 0, "an op after the error");
  CHECK_THROWS_WITH_AS(add(Tensor::ones({2}), Tensor::ones({2}, DType::f32, kCuda)),
                       doctest::Contains("device mismatch"), Error);
}

TEST_CASE("cuda: fill") {
  for (DType dt : {DType::f32, DType::f64, DType::i64}) {
    INFO(dtype_name(dt));
    check_equal(Tensor::full({5, 33}, -3.0, dt, kCuda), Tensor::full({5, 33}, -3.0, dt), "full");
    check_equal(Tensor::zeros({}, dt, kCuda), Tensor::zeros({}, dt), "scalar zero");
    check_equal(Tensor::zeros({0, 3}, dt, kCuda), Tensor::zeros({0, 3}, dt), "empty");
  }
  // Into views: a narrow window (offset, row stride) and a transposed view.
  Tensor cpu = Tensor::zeros({6, 10}), gpu = Tensor::zeros({6, 10}, DType::f32, kCuda);
  fill_(cpu.narrow(1, 2, 5), 7.0);
  fill_(gpu.narrow(1, 2, 5), 7.0);
  fill_(cpu.transpose(0, 1).narrow(0, 8, 2), -1.0);
  fill_(gpu.transpose(0, 1).narrow(0, 8, 2), -1.0);
  check_equal(gpu, cpu, "fill_ into strided views");
}

TEST_CASE("cuda: copy, contiguous and cast") {
  const std::vector<DType> dtypes{DType::f32, DType::f64, DType::i64};
  // Every dtype pair; values with fractions and signs so float -> int truncation shows.
  for (DType from : dtypes) {
    for (DType to : dtypes) {
      const std::string what = std::string("cast ") + dtype_name(from) + " -> " + dtype_name(to);
      const Tensor x = cast(random_cpu({7, 9}, 4, -100, 100, DType::f64), from);
      check_equal(cast(x.to(kCuda), to), cast(x, to), what);
      check_equal(cast(x.to(kCuda).transpose(0, 1), to), cast(x.transpose(0, 1), to), what + " of a transposed view");
    }
  }
  const Tensor x = random_cpu({3, 4, 5, 6}, 5);
  const Tensor g = x.to(kCuda);
  check_equal(contiguous(g.permute({2, 0, 3, 1})), contiguous(x.permute({2, 0, 3, 1})), "contiguous of a permute");
  check_equal(contiguous(g.narrow(3, 1, 4).narrow(1, 1, 2)), contiguous(x.narrow(3, 1, 4).narrow(1, 1, 2)),
              "contiguous of narrowed views");
  check_equal(contiguous(g.narrow(2, 0, 1).expand({3, 4, 8, 6})), contiguous(x.narrow(2, 0, 1).expand({3, 4, 8, 6})),
              "contiguous of an expanded view");
  check_equal(clone(g.transpose(1, 3)), clone(x.transpose(1, 3)), "clone of a transposed view");
  // copy_ into a strided destination, from a broadcast source.
  Tensor dst_cpu = Tensor::zeros({5, 8}), dst_gpu = Tensor::zeros({5, 8}, DType::f32, kCuda);
  const Tensor row = random_cpu({3}, 6);
  copy_(dst_cpu.narrow(1, 4, 3), row);
  copy_(dst_gpu.narrow(1, 4, 3), row.to(kCuda));
  check_equal(dst_gpu, dst_cpu, "copy_ of a broadcast row into a window");
  // concat and stack copy into strided windows of their output.
  const Tensor a = random_cpu({2, 3}, 7), b = random_cpu({2, 5}, 8);
  check_op("concat axis 1", {a, b}, [](const auto& v) { return concat({v[0], v[1]}, 1); });
  check_op("stack axis 1", {a, random_cpu({2, 3}, 9)}, [](const auto& v) { return stack({v[0], v[1]}, 1); });
}

// ---- elementwise ---------------------------------------------------------------------------

struct UnaryCase {
  UnaryOp op;
  double low, high, param;
};

const std::vector<UnaryCase>& unary_cases() {
  static const std::vector<UnaryCase> cases{
      {UnaryOp::neg, -3, 3, 0},        {UnaryOp::exp, -3, 3, 0},         {UnaryOp::log, 0.1, 3, 0},
      {UnaryOp::sqrt, 0.1, 3, 0},      {UnaryOp::rsqrt, 0.1, 3, 0},      {UnaryOp::tanh, -3, 3, 0},
      {UnaryOp::sigmoid, -8, 8, 0},    {UnaryOp::relu, -3, 3, 0},        {UnaryOp::squared_relu, -3, 3, 0},
      {UnaryOp::elu, -3, 3, 0.7},      {UnaryOp::gelu, -3, 3, 0},        {UnaryOp::pow_scalar, 0.1, 3, 2.5},
      {UnaryOp::gelu_grad, -3, 3, 0},  {UnaryOp::abs, -3, 3, 0},
  };
  return cases;
}

TEST_CASE("cuda: every unary kernel, contiguous and strided") {
  for (const UnaryCase& c : unary_cases()) {
    for (DType dt : {DType::f32, DType::f64}) {
      const std::string name = std::string(unary_op_name(c.op)) + " " + dtype_name(dt);
      const Tensor base = random_cpu({37, 70}, 10 + static_cast<int>(c.op), c.low, c.high, dt);
      // contiguous, transposed, and a narrow window with an offset
      const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> views{
          {"contiguous", [](const Tensor& t) { return t; }},
          {"transposed", [](const Tensor& t) { return t.transpose(0, 1); }},
          {"strided", [](const Tensor& t) { return t.narrow(1, 3, 50); }},
      };
      for (const auto& [view_name, view] : views) {
        const Tensor xc = view(base), xg = view(base.to(kCuda));
        Tensor oc = Tensor::empty(xc.shape(), dt), og = Tensor::empty(xg.shape(), dt, kCuda);
        backend_for(kCpu).unary(c.op, xc, oc, c.param);
        backend_for(kCuda).unary(c.op, xg, og, c.param);
        check_close(og, oc, tolerance(dt), name + " " + view_name);
      }
    }
  }
}

// The op table's binary cases (tests/cases_elementwise.cpp) are small; this
// broadcast spans many blocks.
TEST_CASE("cuda: binary ops broadcasting over many blocks, forward and gradient") {
  using BFn = Tensor (*)(const Tensor&, const Tensor&);
  struct Op {
    std::string name;
    BFn f;
    double low, high;
    bool differentiable;
  };
  const std::vector<Op> ops{
      {"add", add, -1, 1, true},          {"sub", sub, -1, 1, true},          {"mul", mul, -1, 1, true},
      {"div", div, 0.5, 2, true},         {"maximum", maximum, -1, 1, true},  {"minimum", minimum, -1, 1, true},
      {"eq", eq, -1, 1, false},           {"gt", gt, -1, 1, false},           {"ge", ge, -1, 1, false},
      {"lt", lt, -1, 1, false},           {"le", le, -1, 1, false},
  };
  for (const Op& op : ops) {
    const BFn f = op.f;
    const Tensor a = random_cpu({64, 1, 130}, 30, op.low, op.high), b = random_cpu({7, 130}, 31, op.low, op.high);
    check_op_both(op.name + " [64,1,130] x [7,130]", {a, b}, [f](const auto& v) { return f(v[0], v[1]); },
                  op.differentiable);
  }
}

// ---- reduce ------------------------------------------------------------------------------------

TEST_CASE("cuda: reductions over any axes, forward and gradient") {
  struct Axes {
    std::string name;
    std::vector<int64_t> axes;
  };
  const std::vector<Axes> axes_list{{"all", {}},           {"axis 0", {0}},        {"axis -1", {-1}},
                                    {"axis 1", {1}},       {"axes {0, 2}", {0, 2}}, {"axes {1, 2}", {1, 2}}};
  for (const Axes& ax : axes_list) {
    const std::vector<int64_t> axes = ax.axes;
    for (bool keepdim : {false, true}) {
      const std::string suffix = " over " + ax.name + (keepdim ? " keepdim" : "");
      const Tensor x = random_cpu({4, 5, 6}, 60);
      check_op_both("sum" + suffix, {x}, [=](const auto& v) { return sum(x0(v), axes, keepdim); });
      check_op_both("mean" + suffix, {x}, [=](const auto& v) { return mean(x0(v), axes, keepdim); });
      check_op_both("max" + suffix, {x}, [=](const auto& v) { return max(x0(v), axes, keepdim); });
      check_op_both("logsumexp" + suffix, {x}, [=](const auto& v) { return logsumexp(x0(v), axes, keepdim); });
      // The same on a permuted view and on a narrow window.
      check_op("sum of a permuted view" + suffix, {random_cpu({6, 4, 5}, 61)},
               [=](const auto& v) { return sum(x0(v).permute({1, 2, 0}), axes, keepdim); });
      check_op("max of a strided view" + suffix, {random_cpu({4, 5, 13}, 62)},
               [=](const auto& v) { return max(x0(v).narrow(2, 3, 6), axes, keepdim); });
    }
  }
  // Sizes that take each kernel path: long rows (a block per output), many
  // short rows (a thread per output), leading axes (bias gradients), everything.
  check_op("sum of long rows", {random_cpu({300, 517}, 63)}, [](const auto& v) { return sum(x0(v), {1}); });
  check_op("sum over the leading axis", {random_cpu({300, 517}, 64)}, [](const auto& v) { return sum(x0(v), {0}); });
  check_op("sum of many short rows", {random_cpu({70000, 3}, 65)}, [](const auto& v) { return sum(x0(v), {1}); });
  check_op("sum of everything", {random_cpu({1 << 20}, 66)}, [](const auto& v) { return sum(x0(v)); });
  check_op("max of long rows", {random_cpu({33, 4099}, 67)}, [](const auto& v) { return max(x0(v), {1}); });
  check_op("mean over leading axes", {random_cpu({8, 64, 96}, 68)}, [](const auto& v) { return mean(x0(v), {0, 1}); });
}

TEST_CASE("cuda: argmax picks the first maximum, as on the CPU") {
  for (DType dt : {DType::f32, DType::f64}) {
    // Values from a few levels, so most rows have ties.
    Tensor x = cast(random_ids({50, 300}, 4, 70), dt);
    for (int axis : {0, 1, -1}) {
      check_op(std::string("argmax axis ") + std::to_string(axis) + " " + dtype_name(dt), {x},
               [axis](const auto& v) { return argmax(x0(v), axis); }, false);
      check_op(std::string("argmax keepdim of a transposed view, axis ") + std::to_string(axis), {x},
               [axis](const auto& v) { return argmax(x0(v).transpose(0, 1), axis, true); }, false);
    }
  }
  check_op("argmax of short rows", {random_cpu({1000, 7}, 71)}, [](const auto& v) { return argmax(x0(v), 1); },
           false);
}

TEST_CASE("cuda: max propagates NaN, argmax skips it, as on the CPU") {
  std::vector<float> v(2 * 200, 1.0f);
  v[5] = NAN;    // row 0, early
  v[399] = NAN;  // row 1, last
  v[250] = 3.0f;
  const Tensor x = Tensor::from_vector(v, {2, 200});
  check_op("max with NaN", {x}, [](const auto& t) { return max(x0(t), {1}); }, false);
  check_op("argmax with NaN", {x}, [](const auto& t) { return argmax(x0(t), 1); }, false);
  check_op("sum with NaN", {x}, [](const auto& t) { return sum(x0(t), {1}); }, false);
}

// ---- matmul --------------------------------------------------------------------------------------

TEST_CASE("cuda: matmul, forward and gradient") {
  const auto mm = [](const auto& v) { return matmul(v[0], v[1]); };
  check_op_both("[5,7] x [7,3]", {random_cpu({5, 7}, 80), random_cpu({7, 3}, 81)}, mm);
  check_op_both("transposed a", {random_cpu({7, 5}, 82), random_cpu({7, 3}, 83)},
                [](const auto& v) { return matmul(v[0].transpose(0, 1), v[1]); });
  check_op_both("transposed b", {random_cpu({5, 7}, 84), random_cpu({3, 7}, 85)},
                [](const auto& v) { return matmul(v[0], v[1].transpose(0, 1)); });
  check_op_both("both transposed", {random_cpu({7, 5}, 86), random_cpu({3, 7}, 87)},
                [](const auto& v) { return matmul(v[0].transpose(0, 1), v[1].transpose(0, 1)); });
  check_op_both("batched [4,5,7] x [4,7,3]", {random_cpu({4, 5, 7}, 88), random_cpu({4, 7, 3}, 89)}, mm);
  check_op_both("batched, transposed b (attention scores)", {random_cpu({2, 3, 6, 8}, 90), random_cpu({2, 3, 6, 8}, 91)},
                [](const auto& v) { return matmul(v[0], v[1].transpose(-1, -2)); });
  check_op_both("broadcast batch [2,1,5,7] x [3,7,4]", {random_cpu({2, 1, 5, 7}, 92), random_cpu({3, 7, 4}, 93)}, mm);
  check_op_both("shared weight [4,5,7] x [7,3]", {random_cpu({4, 5, 7}, 94), random_cpu({7, 3}, 95)}, mm);
  // Batch dims whose strides do not fold into one strided-batched call.
  check_op_both("permuted batch dims", {random_cpu({3, 4, 5, 7}, 96), random_cpu({4, 3, 7, 2}, 97)},
                [](const auto& v) { return matmul(v[0].permute({1, 0, 2, 3}), v[1]); });
  // Layouts GEMM cannot read in place: a broadcast row, a window with a column stride.
  check_op_both("expanded a", {random_cpu({1, 7}, 98), random_cpu({7, 3}, 99)},
                [](const auto& v) { return matmul(v[0].expand({5, 7}), v[1]); });
  check_op_both("column-strided b", {random_cpu({5, 7}, 100), random_cpu({7, 3, 2}, 101)},
                [](const auto& v) { return matmul(v[0], v[1].narrow(2, 1, 1).reshape({7, 3})); });
  check_op_both("row window a", {random_cpu({5, 12}, 102), random_cpu({7, 3}, 103)},
                [](const auto& v) { return matmul(v[0].narrow(1, 2, 7), v[1]); });
  // Vectors.
  check_op_both("vector x matrix", {random_cpu({7}, 104), random_cpu({7, 3}, 105)}, mm);
  check_op_both("matrix x vector", {random_cpu({5, 7}, 106), random_cpu({7}, 107)}, mm);
  check_op_both("vector x vector", {random_cpu({7}, 108), random_cpu({7}, 109)}, mm);
  // Empty dimensions: K = 0 gives zeros, M = 0 an empty result.
  check_op("K = 0", {random_cpu({3, 0}, 110), random_cpu({0, 4}, 111)}, mm, false);
  check_op("M = 0", {random_cpu({0, 5}, 112), random_cpu({5, 4}, 113)}, mm, false);
  // A size where float32 summation order matters.
  check_op("[128,256] x [256,96]", {random_cpu({128, 256}, 114), random_cpu({256, 96}, 115)}, mm);
}

// ---- random --------------------------------------------------------------------------------------

TEST_CASE("cuda: random fills give the CPU's numbers") {
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t n : {1, 3, 4, 5, 1001, (1 << 16) + 3}) {
      const std::string what = std::string(dtype_name(dt)) + " n=" + std::to_string(n);
      Generator gc(1234), gg(1234);
      gc.advance(17);  // a non-zero counter offset
      gg.advance(17);
      check_equal(uniform({n}, -2, 3, gg, dt, kCuda), uniform({n}, -2, 3, gc, dt), "uniform " + what);
      check_equal(bernoulli({n}, 0.3, gg, dt, kCuda), bernoulli({n}, 0.3, gc, dt), "bernoulli " + what);
      const Tensor ng = normal({n}, 0.5, 2.0, gg, dt, kCuda), nc = normal({n}, 0.5, 2.0, gc, dt);
      if (dt == DType::f32) {
        check_equal(ng, nc, "normal " + what);
      } else {
        // log, sin and cos of CUDA and of libm may differ in the last bit of a double.
        check_close(ng, nc, 1e-14, "normal " + what);
      }
      CHECK(gg.offset() == gc.offset());
    }
  }
  // Dropout draws its mask from the generator: the same mask on both devices.
  Generator gc(99), gg(99);
  const Tensor x = random_cpu({8, 33}, 120);
  Tensor xc = x.clone().detach(), xg = x.to(kCuda);
  xc.requires_grad_();
  xg.requires_grad_();
  const Tensor yc = dropout(xc, 0.25, gc), yg = dropout(xg, 0.25, gg);
  check_close(yg, yc, 1e-6, "dropout");
  const Tensor up = random_cpu({8, 33}, 121);
  yc.backward(up);
  yg.backward(up.to(kCuda));
  check_close(xg.grad(), xc.grad(), 1e-6, "dropout gradient");
  // The mask the forward keeps for the backward, as bits: the CPU's, word for
  // word (a partial last word included).
  const int64_t n = 1000;
  const Tensor in = random_cpu({n}, 122);
  const Tensor bits_cpu = Tensor::empty({(n + 63) / 64}, DType::i64);
  const Tensor bits_gpu = Tensor::empty({(n + 63) / 64}, DType::i64, kCuda);
  backend_for(Device::cpu).dropout(in, Tensor::empty({n}, in.dtype()), 0.25, 5, 3, bits_cpu, false);
  backend_for(kCuda).dropout(in.to(kCuda), Tensor::empty({n}, in.dtype(), kCuda), 0.25, 5, 3, bits_gpu, false);
  CHECK(bits_gpu.to(Device::cpu).to_vector<int64_t>() == bits_cpu.to_vector<int64_t>());
}

// ---- softmax, log_softmax, cross-entropy --------------------------------------------------

// The op table's softmax, log_softmax and cross_entropy cases
// (tests/cases_softmax.cpp: any axis, views, rows of one, large logits, empty
// inputs) run here through "every op-table case"; these take the kernels' other
// paths, and -inf scores.
TEST_CASE("cuda: softmax and log_softmax over long rows, many rows and -inf, forward and gradient") {
  for (bool log : {false, true}) {
    const std::string op = log ? "log_softmax" : "softmax";
    const auto f = [log](const Tensor& x, int64_t axis) { return log ? log_softmax(x, axis) : softmax(x, axis); };
    // Rows longer than a block (a vocabulary), many short rows.
    check_op_both(op + " long rows [3,5000]", {random_cpu({3, 5000}, 133, -5, 5)},
                  [f](const auto& v) { return f(x0(v), -1); });
    check_op(op + " many short rows [3000,3]", {random_cpu({3000, 3}, 135)},
             [f](const auto& v) { return f(x0(v), -1); });
  }
  // -inf entries (masked scores) give probability 0 and log-probability -inf.
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor masked = Tensor::from_vector(std::vector<float>{0.5f, -inf, 1.5f, -inf, -0.25f, 2.0f, 1.0f, -inf}, {2, 4});
  check_op("softmax with -inf entries", {masked}, [](const auto& v) { return softmax(x0(v), -1); });
  check_op("log_softmax with -inf entries", {masked}, [](const auto& v) { return log_softmax(x0(v), -1); });
}

TEST_CASE("cuda: cross_entropy over a large vocabulary and many rows, forward and gradient") {
  const auto ce = [](const auto& v) { return cross_entropy(v[0], v[1]); };
  check_op_both("large vocabulary [5,5000]", {random_cpu({5, 5000}, 142, -5, 5), random_ids({5}, 5000, 143)}, ce);
  check_op("many rows [4000,7]", {random_cpu({4000, 7}, 144, -3, 3), random_ids({4000}, 7, 145)}, ce);
}

// ---- layer_norm ------------------------------------------------------------------------------

// The op table's layer_norm cases (tests/cases_norm.cpp: every affine variant,
// D = 1, large means, views) run here through "every op-table case"; these sizes
// take the kernels' other paths.
TEST_CASE("cuda: layer_norm over long rows and many rows, forward and gradients of x, weight and bias") {
  // Long rows (threads stride), many rows (many chunks in the parameter sums), a 3-D
  // input with 300 columns of parameters.
  check_op("long rows [3,1500]", {random_cpu({3, 1500}, 169), random_cpu({1500}, 170), random_cpu({1500}, 171)},
           [](const auto& v) { return layer_norm(v[0], v[1], v[2], 1e-5); });
  check_op("many rows [20000,8]", {random_cpu({20000, 8}, 172), random_cpu({8}, 173), random_cpu({8}, 174)},
           [](const auto& v) { return layer_norm(v[0], v[1], v[2], 1e-5); });
  check_op_both("[4,7,300], 300 columns of parameters", {random_cpu({4, 7, 300}, 175), random_cpu({300}, 176),
                                                         random_cpu({300}, 177)},
                [](const auto& v) { return layer_norm(v[0], v[1], v[2], 1e-5); });
}

// ---- index ------------------------------------------------------------------------------------

// The op table's embedding, index_select and gather cases (tests/cases_index.cpp:
// every axis, repeated ids, views, ids longer than x) run here through "every
// op-table case"; these add int64 values and the many repeats whose gradient
// accumulates with atomicAdd (in another order than the CPU's, so float32 sums
// differ in the last bits only).
TEST_CASE("cuda: index_select and gather of int64 values, embedding with many repeats") {
  check_op("index_select of int64 values", {random_ids({6, 4}, 1000, 209), random_ids({10}, 6, 210)},
           [](const auto& v) { return index_select(v[0], 0, v[1]); }, false);
  check_op("gather of int64 values", {random_ids({6, 4}, 1000, 211), random_ids({3, 4}, 6, 212)},
           [](const auto& v) { return gather(v[0], 0, v[1]); }, false);
  check_op("embedding with many repeats", {random_cpu({3, 64}, 213), random_ids({4000}, 3, 214)},
           [](const auto& v) { return embedding(v[0], v[1]); });
}

// ---- conv -------------------------------------------------------------------------------------

// The op table's causal_conv1d cases (tests/cases_conv.cpp: per-channel and
// shared kernels, no bias, K = 1, L < K, 2-D and 4-D x, views) run here through
// "every op-table case"; these take many chunks in the parameter sums.
TEST_CASE("cuda: causal_conv1d over many rows, forward and gradients of x, weight and bias") {
  const auto conv = [](const auto& v) { return causal_conv1d(v[0], v[1], v.size() > 2 ? v[2] : Tensor()); };
  check_op_both("long [300,3,16], K = 4", {random_cpu({300, 3, 16}, 243), random_cpu({16, 4}, 244),
                                          random_cpu({16}, 245)}, conv);
  check_op("shared kernel over many rows", {random_cpu({200, 4, 8}, 246), random_cpu({1, 3}, 247),
                                            random_cpu({1}, 248)}, conv);
}

// ---- attention ---------------------------------------------------------------------------------

// The op table's attention cases (tests/cases_attention.cpp: causal or not,
// Lq below, equal to and above Lk, views, large scores) run here through "every
// op-table case"; these add dropout and rows longer than a block's threads.
TEST_CASE("cuda: attention with dropout and long rows, forward and gradients of q, k and v") {
  struct Case {
    std::string name;
    int64_t Lq, Lk, B, H, D, Dv;
    bool causal;
    double p;
  };
  const std::vector<Case> cases{
      {"dropout", 6, 6, 2, 2, 4, 4, false, 0.3},
      {"causal with dropout", 8, 8, 1, 3, 4, 5, true, 0.25},
      {"long rows (Lk > threads)", 5, 300, 1, 2, 16, 8, false, 0.1},
      {"many queries", 300, 300, 1, 1, 8, 8, true, 0.0},
  };
  for (const Case& c : cases) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
    const bool causal = c.causal;
    const double p = c.p;
    // A fresh generator with the same seed on both devices: the same Philox counters.
    const auto f = [scale, causal, p](const auto& v) {
      Generator gen(31);
      gen.advance(5);
      return attention(v[0], v[1], v[2], scale, causal, p, &gen);
    };
    const std::vector<Tensor> inputs{random_cpu({c.Lq, c.B, c.H, c.D}, 260, -2, 2),
                                      random_cpu({c.Lk, c.B, c.H, c.D}, 261, -2, 2),
                                      random_cpu({c.Lk, c.B, c.H, c.Dv}, 262)};
    check_op_both("attention " + c.name, inputs, f);
  }
}

TEST_CASE("cuda: attention's dropout keeps exactly the CPU's probabilities") {
  // With v the identity (Lk = Dv), the output is the dropped probability matrix itself.
  const int64_t L = 12;
  Tensor eye = Tensor::zeros({L, 1, 1, L});
  for (int64_t i = 0; i < L; ++i) fill_(eye.narrow(0, i, 1).narrow(3, i, 1), 1.0);
  const Tensor q = random_cpu({L, 1, 1, 4}, 267), k = random_cpu({L, 1, 1, 4}, 268);
  Generator gc(77), gg(77);
  const Tensor want = attention(q, k, eye, 0.5, true, 0.4, &gc);
  const Tensor got = attention(q.to(kCuda), k.to(kCuda), eye.to(kCuda), 0.5, true, 0.4, &gg);
  check_close(got, want, 1e-6, "dropped probabilities");
  const std::vector<double> g = values(got), w = values(want);
  int64_t dropped = 0, differ = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    dropped += w[i] == 0.0;
    differ += (g[i] == 0.0) != (w[i] == 0.0);
  }
  CHECK(differ == 0);
  CHECK(dropped > static_cast<int64_t>(L * (L - 1) / 2));  // the masked upper triangle and some dropped ones
}

TEST_CASE("cuda: attention refuses lengths whose scores do not fit in shared memory") {
  // 100000 keys of float32 scores = 400 KB per block, more than any GPU's shared memory.
  const Tensor q = Tensor::zeros({1, 1, 1, 4}, DType::f32, kCuda), k = Tensor::zeros({100000, 1, 1, 4}, DType::f32, kCuda);
  CHECK_THROWS_WITH_AS(attention(q, k, k, 1.0, false), doctest::Contains("shared memory"), Error);
}

// ---- delta_rule ---------------------------------------------------------------------------------

// The delta rule on keys of unit norm and beta in (0, 1): W stays bounded, so
// rounding differences are not amplified over the steps.
Tensor delta_rule_of(const std::vector<Tensor>& v, bool delta, const Tensor& w0 = Tensor(),
                     Tensor* final_state = nullptr) {
  const Tensor k = v[1] / sqrt(sum(v[1] * v[1], {-1}, true));
  const Tensor w = w0.defined() ? w0.to(v[0].device()).to(v[0].dtype()) : Tensor();
  return delta_rule(v[0], k, v[2], delta ? sigmoid(v[3]) : Tensor(), w, final_state);
}

TEST_CASE("cuda: delta_rule refuses a fast weight larger than a block's shared memory") {
  // W [64, 512] in float32 is 128 KiB, which the forward may use; W and its
  // gradient need 256 KiB per block, more than any GPU's shared memory.
  Tensor q = Tensor::zeros({2, 1, 1, 512}, DType::f32, kCuda), v = Tensor::zeros({2, 1, 1, 64}, DType::f32, kCuda);
  Tensor beta = Tensor::zeros({2, 1, 1, 1}, DType::f32, kCuda);
  q.requires_grad_();
  const Tensor y = delta_rule(q, q, v, beta);
  CHECK_THROWS_WITH_AS(y.backward(Tensor::ones(y.shape(), DType::f32, kCuda)), doctest::Contains("shared memory"),
                       Error);
}

// ---- delta_rnn ----------------------------------------------------------------------------------

// The Delta RNN's recurrence as the layer feeds it: softmax keys, sigmoid gamma.
Tensor delta_rnn_of(const std::vector<Tensor>& v, const Tensor& r0 = Tensor(), const Tensor& y0 = Tensor(),
                    Tensor* final_R = nullptr, Tensor* final_y = nullptr) {
  auto here = [&](const Tensor& t) { return t.defined() ? t.to(v[0].device()).to(v[0].dtype()) : Tensor(); };
  return delta_rnn(v[0], softmax(v[1], -1), v[2], sigmoid(v[3]), here(r0), here(y0), final_R, final_y);
}

TEST_CASE("cuda: delta_rnn refuses a recurrent fast weight larger than a block's shared memory") {
  // D = 256 in float32: R is 256 KiB, more than any GPU's shared memory per block.
  const Tensor z = Tensor::zeros({2, 1, 1, 256}, DType::f32, kCuda), gamma = Tensor::zeros({2, 1, 1, 1}, DType::f32, kCuda);
  CHECK_THROWS_WITH_AS(delta_rnn(z, z, z, gamma), doctest::Contains("delta_rnn"), Error);
  CHECK_THROWS_WITH_AS(delta_rnn(z, z, z, gamma), doctest::Contains("D = 256"), Error);
}

// ---- delta_lstm ---------------------------------------------------------------------------------

// The Delta LSTM as the model feeds it: softmax keys, sigmoid rates. v = {z, rk logits, rv, gamma logits}.
Tensor delta_lstm_of(const std::vector<Tensor>& v, const std::vector<Tensor>& states = {},
                     Tensor* final_R = nullptr, Tensor* final_h = nullptr, Tensor* final_c = nullptr) {
  auto state = [&](size_t i) {
    return i < states.size() ? states[i].to(v[0].device()).to(v[0].dtype()) : Tensor();
  };
  return delta_lstm(v[0], softmax(v[1], -1), v[2], sigmoid(v[3]), state(0), state(1), state(2), final_R, final_h,
                    final_c);
}

TEST_CASE("cuda: delta_lstm refuses fast weights larger than a block's shared memory") {
  // D = 128 in float32: the three R_g are 192 KiB, which the forward may use on an H100;
  // R and its gradient need 384 KiB per block, more than any GPU's shared memory.
  Tensor z = Tensor::zeros({2, 1, 1, 3, 128}, DType::f32, kCuda), gamma = Tensor::zeros({2, 1, 1, 3, 1}, DType::f32, kCuda);
  z.requires_grad_();
  CHECK_THROWS_WITH_AS(
      [&] {
        const Tensor y = delta_lstm(z, z, z, gamma);
        y.backward(Tensor::ones(y.shape(), DType::f32, kCuda));
      }(),
      doctest::Contains("on cuda: the three fast weights R_g [D, D] with D = 128 in float32"), Error);
  // D = 256: not even the forward's R fits.
  const Tensor big = Tensor::zeros({1, 1, 1, 3, 256}, DType::f32, kCuda);
  CHECK_THROWS_WITH_AS(delta_lstm(big, big, big, narrow(big, 4, 0, 1)),
                       doctest::Contains("delta_lstm on cuda: the three fast weights R_g [D, D] with D = 256"), Error);
}

// ---- fused recurrences at sizes only float32 fits ------------------------------------------------

// The op table's cases of the fused recurrences (tests/cases_<stem>.cpp) run on
// the GPU in float32 and float64. These sizes fit a block's shared memory in
// float32 only.
TEST_CASE("cuda: fused recurrences whose float64 state would not fit a block") {
  // DPFP features of 64-wide heads: 256 keys; W and its gradient take 128 KiB in float32.
  const std::vector<Tensor> rule{random_cpu({3, 1, 1, 256}, 280), random_cpu({3, 1, 1, 256}, 281),
                                 random_cpu({3, 1, 1, 64}, 282), random_cpu({3, 1, 1, 1}, 283)};
  check_op("delta rule 64 x 256", rule, [](const auto& v) { return delta_rule_of(v, true); });
  check_op("sum rule 64 x 256", {rule[0], rule[1], rule[2]}, [](const auto& v) { return delta_rule_of(v, false); });
  // The Delta RNN at D 128: R and its gradient take 128 KiB in float32.
  check_op("delta_rnn D 128",
           {random_cpu({3, 1, 1, 128}, 290), random_cpu({3, 1, 1, 128}, 291), random_cpu({3, 1, 1, 128}, 292),
            random_cpu({3, 1, 1, 1}, 293)},
           [](const auto& v) { return delta_rnn_of(v); });
  // The Delta LSTM at D 64: the three R_g and their gradients take 108 KiB in
  // float32; 212 KiB in float64 fits an H100's block (227 KiB) but not an A100's (163 KiB).
  check_op("delta lstm D 64",
           {random_cpu({5, 1, 2, 3, 64}, 290, -2, 2), random_cpu({5, 1, 2, 3, 64}, 291, -2, 2),
            random_cpu({5, 1, 2, 3, 64}, 292), random_cpu({5, 1, 2, 3, 1}, 293, -2, 2)},
           [](const auto& v) { return delta_lstm_of(v); });
}

// ---- recurrent_delta_net ------------------------------------------------------------------------

// The RDN on inputs qx, kx, vx, bx and the parameters Rq, Rk, Rv, rb at the
// authors' scale (entries of order 1/sqrt(D)), from the given initial states.
Tensor recurrent_delta_net_of(const std::vector<Tensor>& v, const Tensor& W0 = Tensor(), const Tensor& y0 = Tensor(),
                              Tensor* final_W = nullptr, Tensor* final_y = nullptr) {
  auto here = [&](const Tensor& t) { return t.defined() ? t.to(v[0].device()).to(v[0].dtype()) : Tensor(); };
  return recurrent_delta_net(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], here(W0), here(y0), final_W, final_y);
}

std::vector<Tensor> recurrent_delta_net_inputs(int64_t L, int64_t B, int64_t H, int64_t D, uint64_t seed) {
  const double r = 1.0 / std::sqrt(static_cast<double>(D));
  return {random_cpu({L, B, H, D}, seed, -1, 1),     random_cpu({L, B, H, D}, seed + 1, -1, 1),
          random_cpu({L, B, H, D}, seed + 2, -1, 1), random_cpu({L, B, H, 1}, seed + 3, -1, 1),
          random_cpu({H, D, D}, seed + 4, -r, r),    random_cpu({H, D, D}, seed + 5, -r, r),
          random_cpu({H, D, D}, seed + 6, -r, r),    random_cpu({H, D}, seed + 7, -r, r)};
}

TEST_CASE("cuda: recurrent_delta_net's parameter gradients have the same bits run after run") {
  // 8 batch items per head: the per-sequence sums are added in the order of b.
  std::vector<Tensor> inputs;
  for (const Tensor& t : recurrent_delta_net_inputs(9, 8, 2, 16, 320)) inputs.push_back(t.to(kCuda).requires_grad_());
  std::vector<std::vector<double>> first;
  for (int run = 0; run < 2; ++run) {
    for (Tensor& t : inputs) t.zero_grad();
    const Tensor y = recurrent_delta_net_of(inputs);
    y.backward(Tensor::ones(y.shape(), DType::f32, kCuda));
    for (size_t i = 4; i < 8; ++i) {
      const std::vector<double> g = values(inputs[i].grad());
      if (run == 0) first.push_back(g);
      else CHECK(g == first[i - 4]);
    }
  }
}

TEST_CASE("cuda: recurrent_delta_net refuses a head size larger than a block's shared memory") {
  // D = 192 in float32: W (144 KiB) fits the forward; W and its gradient (288 KiB)
  // are more than any GPU's shared memory per block.
  const int64_t D = 192;
  std::vector<Tensor> inputs;
  for (const Tensor& t : recurrent_delta_net_inputs(2, 1, 1, D, 330)) inputs.push_back(t.to(kCuda).requires_grad_());
  const Tensor y = recurrent_delta_net_of(inputs);
  std::string message;
  try {
    y.backward(Tensor::ones(y.shape(), DType::f32, kCuda));
  } catch (const Error& e) {
    message = e.what();
  }
  INFO("message: ", message);
  CHECK(message.find("recurrent_delta_net") != std::string::npos);
  CHECK(message.find("D = 192") != std::string::npos);
  CHECK(message.find("shared memory") != std::string::npos);
}

// ---- the op table -------------------------------------------------------------------------------------

// Every case of the op table (tests/op_table.h) with cuda = true: its inputs in
// float32 and float64, moved to the GPU, the case's function run on both
// devices, forward and (gradient-checked cases) the gradients compared. These
// are the CUDA parity cases that tests/test_coverage.cpp requires of every op.
TEST_CASE("cuda: every op-table case gives the CPU's numbers") {
  int checked = 0;
  for (const test::OpCase& c : test::op_cases()) {
    if (!c.cuda) continue;
    for (DType dt : {DType::f32, DType::f64}) {
      const std::vector<Tensor> leaves = test::make_leaves(c, dt, 0x0c0da ^ std::hash<std::string>{}(c.name));
      check_op(c.name + " [" + dtype_name(dt) + "]", leaves,
               [&c](const std::vector<Tensor>& xs) { return c.run(test::apply_layouts(c, xs)); }, c.gradcheck);
    }
    ++checked;
  }
  CHECK(checked > 0);
}

// ---- whole models ------------------------------------------------------------------------------------

// A tiny config of each family; dropout is on (but for the feedback family, which
// has none), so the dropout masks, elementwise and inside attention, must be the
// same on both devices too.
models::ModelConfig tiny_config(const std::string& family) {
  models::ModelConfig c;
  c.family = family;
  c.vocab = 13;
  c.d_model = 16;
  c.heads = 2;
  c.d_ff = 32;
  c.layers = 2;
  c.dropout = 0.1;
  c.seed = 11;
  c.max_seq_len = 16;
  return c;
}

struct ModelCase {
  std::string name;
  models::ModelConfig config;
};

std::vector<ModelCase> model_cases() {
  std::vector<ModelCase> cases;
  for (const char* family : {"bigram", "transformer", "primer_ez", "fast_weights", "feedback"})
    cases.push_back({family, tiny_config(family)});
  cases.back().config.dropout = 0.0;  // the feedback family has no dropout
  models::ModelConfig sum_rule = tiny_config("fast_weights");
  sum_rule.update_rule = "sum";
  sum_rule.feature_map = "elu_plus_one";
  sum_rule.attention_layer_norm = true;
  cases.push_back({"fast_weights (sum rule, elu+1, layer norm)", sum_rule});
  // Every other fast layer (model.fast_layer), ELU+1 features as the authors use them.
  for (const char* kind : {"linear", "delta_delta", "delta_mlp", "delta_rnn", "delta_lstm", "rdn"}) {
    models::ModelConfig c = tiny_config("fast_weights");
    c.fast_layer = kind;
    if (std::string(kind) != "rdn") c.feature_map = "elu_plus_one";
    cases.push_back({std::string("fast_weights (fast_layer ") + kind + ")", c});
  }
  models::ModelConfig per_head = tiny_config("primer_ez");
  per_head.conv_kernels = "per_head";
  cases.push_back({"primer_ez (per-head kernels)", per_head});
  return cases;
}

// Mean cross-entropy of logits [L, B, V] against targets [L, B].
Tensor lm_loss(const Tensor& logits, const Tensor& targets) {
  const int64_t V = logits.size(-1);
  return cross_entropy(reshape(logits, {targets.numel(), V}), reshape(targets, {targets.numel()}));
}

// Whole models run dozens of float32 ops in sequence, each rounding a little
// differently on the two devices (cuBLAS and Eigen sum in other orders, CUDA's
// and Eigen's exp differ in the last bit). Measured on the CPU, float32 against
// float64 for these configs, logits, loss and gradients differ by at most 6e-7
// relative to each tensor's largest value; two float32 runs should differ by at
// most about twice that, so the per-op bound of 1e-5 holds for whole models too.
constexpr double kModelTolerance = 1e-5;

TEST_CASE("cuda: every family's logits, loss and parameter gradients match the CPU") {
  const int64_t L = 8, B = 3;
  for (const ModelCase& mc : model_cases()) {
    INFO(mc.name);
    auto cpu = models::make_model(mc.config);
    auto gpu = models::make_model(mc.config);
    gpu->to(kCuda);
    const Tensor tokens = random_ids({L, B}, mc.config.vocab, 320), targets = random_ids({L, B}, mc.config.vocab, 321);
    const Tensor lc = cpu->forward(tokens), lg = gpu->forward(tokens.to(kCuda));
    check_close(lg, lc, kModelTolerance, mc.name + ": logits");
    const Tensor loss_c = lm_loss(lc, targets), loss_g = lm_loss(lg, targets.to(kCuda));
    check_close(loss_g, loss_c, kModelTolerance, mc.name + ": loss");
    loss_c.backward();
    loss_g.backward();
    const models::NamedTensors pc = cpu->named_parameters(), pg = gpu->named_parameters();
    REQUIRE(pc.size() == pg.size());
    // Some gradients vanish mathematically (a key projection's bias shifts every
    // score of a row equally, which softmax ignores) and hold rounding noise only:
    // they are compared against a thousandth of the model's largest gradient.
    double largest = 0.0;
    for (const auto& [name, t] : pc)
      if (t.grad().defined())
        for (double x : values(t.grad())) largest = std::max(largest, std::abs(x));
    for (size_t i = 0; i < pc.size(); ++i) {
      const std::string what = mc.name + ": gradient of " + pc[i].first;
      INFO(what);
      CHECK(pg[i].first == pc[i].first);
      // Parameters no path reaches (the fast weights' unused norms) have no grad on either device.
      CHECK(pg[i].second.grad().defined() == pc[i].second.grad().defined());
      if (pc[i].second.grad().defined() && pg[i].second.grad().defined())
        check_close(pg[i].second.grad(), pc[i].second.grad(), kModelTolerance, what, 1e-3 * largest);
    }
  }
}

TEST_CASE("cuda: five training steps of every family give the CPU's losses") {
  const int64_t L = 8, B = 3, kSteps = 5;
  for (const ModelCase& mc : model_cases()) {
    INFO(mc.name);
    std::vector<double> losses[2];
    for (Device device : {kCpu, kCuda}) {
      auto model = models::make_model(mc.config);
      if (device == kCuda) model->to(kCuda);
      models::AdamOptions options;
      options.fused_cpu = false;  // the same composition of engine ops on both devices
      models::Adam adam(model->named_parameters(), options, models::LrSchedule::constant(3e-3));
      for (int64_t step = 0; step < kSteps; ++step) {
        const Tensor tokens = random_ids({L, B}, mc.config.vocab, 330 + step);
        const Tensor targets = random_ids({L, B}, mc.config.vocab, 340 + step);
        const Tensor loss = lm_loss(model->forward(tokens.to(device)), targets.to(device));
        loss.backward();
        models::clip_grad_norm(model->parameters(), 1.0);
        adam.step();
        adam.zero_grad();
        losses[device == kCuda].push_back(loss.item());
      }
    }
    for (int64_t step = 0; step < kSteps; ++step) {
      INFO("step ", step, ": cpu ", losses[0][step], ", cuda ", losses[1][step]);
      CHECK(std::abs(losses[1][step] - losses[0][step]) <= 1e-4);
    }
  }
}

}  // namespace
}  // namespace loom

int main(int argc, char** argv) {
  // Skip (77) only when this machine has no CUDA at all; a CUDA machine that
  // cannot start CUDA fails (cuda/init_check.h decides which is which).
  const loom::cuda::CudaInitReport& init = loom::cuda::cuda_init_report();
  if (init.verdict == loom::cuda::CudaInit::absent) {
    std::printf("test_cuda: SKIP: %s\n", init.message.c_str());
    return 77;  // meson: skipped
  }
  if (init.verdict == loom::cuda::CudaInit::broken) {
    std::fprintf(stderr, "test_cuda: FAIL: %s\n", init.message.c_str());
    return 1;
  }
  std::printf("test_cuda: %s\n", init.message.c_str());
  // The parity tolerances assume plain float32 matmuls; cuBLAS reads this variable itself.
  const char* tf32 = std::getenv("NVIDIA_TF32_OVERRIDE");
  switch (loom::cuda::tf32_override(tf32)) {
    case loom::cuda::Tf32Override::unset:
      break;
    case loom::cuda::Tf32Override::forced_off:
      std::printf("test_cuda: NVIDIA_TF32_OVERRIDE=0: TF32 is off, as the parity tests need\n");
      break;
    case loom::cuda::Tf32Override::other:
      std::fprintf(stderr,
                   "test_cuda: FAIL: NVIDIA_TF32_OVERRIDE=%s is set: cuBLAS may then run float32 matmuls in TF32 "
                   "(about 1e-3 relative error), and the CPU-parity checks (1e-5) would fail for that reason "
                   "alone. Unset it (or set it to 0) to run this suite.\n",
                   tf32);
      return 1;
  }
  doctest::Context context;
  context.applyCommandLine(argc, argv);
  return context.run();
}
