// test_op_table.cpp: walks every case of the op table (tests/op_table.h).
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>

#include "autodiff/gradcheck.h"
#include "engine/gemm_library.h"
#include "engine/ops.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

uint64_t seed_of(const std::string& name) { return std::hash<std::string>{}(name) & 0xffffffff; }

// Empty when out matches ref within atol + rtol*|ref|; otherwise a description.
std::string compare(const Ref& out, const Ref& ref, double rtol, double atol) {
  std::ostringstream msg;
  if (out.shape != ref.shape) {
    msg << "shape " << shape_str(out.shape) << ", reference " << shape_str(ref.shape);
    return msg.str();
  }
  for (int64_t i = 0; i < out.numel(); ++i) {
    const double o = out.v[i], r = ref.v[i];
    if (std::isnan(r) && std::isnan(o)) continue;
    if (std::isinf(r) && o == r) continue;
    if (!(std::abs(o - r) <= atol + rtol * std::abs(r))) {
      msg << "element " << i << " " << shape_str(out.unflat(i)) << ": got " << o << ", reference " << r;
      return msg.str();
    }
  }
  return "";
}

void check_forward(const OpCase& c, DType dtype) {
  const auto leaves = make_leaves(c, dtype, seed_of(c.name));
  const auto views = apply_layouts(c, leaves);
  std::vector<Ref> refs;
  for (const Tensor& v : views) refs.push_back(Ref::from(v));
  const Ref expected = c.reference(refs);
  const Tensor out = c.run(views);
  const double tol = dtype == DType::f64 ? 1e-10 : c.f32_tolerance;
  const std::string problem = compare(Ref::from(out), expected, tol, tol);
  INFO("case: ", c.name, " (", std::string(dtype_name(dtype)), ")");
  CHECK_MESSAGE(problem.empty(), problem);
}

// Checks one case's float64 gradients against central differences.
void check_gradients(const OpCase& c) {
  auto leaves = make_leaves(c, DType::f64, seed_of(c.name));
  bool any = false;
  for (size_t i = 0; i < leaves.size(); ++i)
    if (c.inputs[i].index_bound == 0 && c.inputs[i].differentiable) {
      leaves[i].requires_grad_();
      any = true;
    }
  INFO("case: ", c.name);
  REQUIRE_MESSAGE(any, "a differentiable case with no differentiable input");
  autodiff::GradcheckOptions options;
  options.eps = c.grad_eps;
  const auto result = autodiff::gradcheck(
      [&](const std::vector<Tensor>& xs) { return c.run(apply_layouts(c, xs)); }, leaves, options);
  CHECK_MESSAGE(result.ok, result.report);
}

}  // namespace

TEST_CASE("op table: forward matches the naive reference in float64") {
  REQUIRE(!op_cases().empty());
  for (const OpCase& c : op_cases()) check_forward(c, DType::f64);
}

TEST_CASE("op table: forward matches the naive reference in float32") {
  for (const OpCase& c : op_cases()) check_forward(c, DType::f32);
}

TEST_CASE("op table: float64 gradients match central differences") {
  int checked = 0;
  for (const OpCase& c : op_cases()) {
    if (!c.gradcheck) continue;
    check_gradients(c);
    ++checked;
  }
  CHECK(checked > 0);
}

// The walks above run the products on the GEMM library this machine chose
// (engine/gemm_library.h); this one runs the product cases on each library built in.
TEST_CASE("op table: the product cases on each GEMM library") {
  std::vector<GemmLibrary> libraries{GemmLibrary::eigen};
  if (openblas_usable()) libraries.push_back(GemmLibrary::openblas);
  else MESSAGE("OpenBLAS cannot be used here (", cpu_gemm().description, "): the product cases run on Eigen only");
  const GemmLibrary chosen = cpu_gemm_library();
  int checked = 0;
  for (GemmLibrary library : libraries) {
    set_cpu_gemm(library);
    INFO("library: ", library == GemmLibrary::eigen ? "Eigen" : "OpenBLAS");
    for (const OpCase& c : op_cases()) {
      const bool product = c.name.rfind("matmul", 0) == 0 || c.name.rfind("linear", 0) == 0 ||
                           c.name.rfind("step", 0) == 0;
      if (!product) continue;
      check_forward(c, DType::f64);
      check_forward(c, DType::f32);
      if (c.gradcheck) check_gradients(c);
      ++checked;
    }
  }
  set_cpu_gemm(chosen);
  CHECK(checked >= 20);
}

}  // namespace loom::test
