// op_table.h: the table of op test cases that the generic tests walk.
//
// One OpCase per op and variant: how to make its inputs, how to run it with
// loom, and a naive reference in plain double loops (on Ref arrays, which know
// nothing of loom's kernels). tests/test_op_table.cpp runs every case:
//   - forward in float64 and float32 against the reference,
//   - a float64 central-difference gradient check (differentiable cases),
// and tests/test_cuda.cpp runs every case on the GPU against the CPU.
// tests/test_coverage.cpp runs each case once more to find the op it tests
// (from the recorded graph; a case does not name its op) and fails when an op of
// engine/op_list.h has no case, no gradient-checked case (differentiable ops)
// or no CUDA parity case. A new op is a new case in the cases_<stem>.cpp file
// of its stem.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/op_list.h"
#include "engine/tensor.h"

namespace loom::test {

// A dense row-major array of doubles: the reference side of every comparison.
struct Ref {
  Shape shape;
  std::vector<double> v;

  Ref() = default;
  explicit Ref(Shape s, double fill = 0.0) : shape(std::move(s)), v(shape_numel(shape), fill) {}
  int64_t numel() const { return static_cast<int64_t>(v.size()); }
  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  Strides strides() const { return contiguous_strides(shape); }
  // Row-major flat index of a multi-index.
  int64_t flat(const std::vector<int64_t>& index) const;
  double& at(const std::vector<int64_t>& index) { return v[flat(index)]; }
  double at(const std::vector<int64_t>& index) const { return v[flat(index)]; }
  // Multi-index of flat position i.
  std::vector<int64_t> unflat(int64_t i) const;
  // Reads a CPU tensor element by element through its strides (no loom kernel involved).
  static Ref from(const Tensor& t);
};

enum class Layout {
  contiguous,
  transposed,  // the op sees a transposed view of a contiguous base (last two dims)
  strided,     // the op sees a narrow() window of a wider base: offset and row stride
};

struct InputSpec {
  Shape shape;                 // the shape the op sees
  double low = -1.0, high = 1.0;
  bool away_from_zero = false; // |x| >= 0.1: keeps finite differences off kinks at 0
  int64_t index_bound = 0;     // > 0: an int64 index input with values in [0, index_bound)
  Layout layout = Layout::contiguous;
  bool differentiable = true;  // include in the gradient check
  double grid = 0.0;           // > 0: round values to multiples of grid (exact in float32)

  InputSpec(Shape s) : shape(std::move(s)) {}
  InputSpec& range(double lo, double hi) { low = lo; high = hi; return *this; }
  InputSpec& nonzero() { away_from_zero = true; return *this; }
  InputSpec& indices(int64_t bound) { index_bound = bound; differentiable = false; return *this; }
  InputSpec& transposed() { layout = Layout::transposed; return *this; }
  InputSpec& strided() { layout = Layout::strided; return *this; }
  InputSpec& constant() { differentiable = false; return *this; }
  InputSpec& on_grid(double step) { grid = step; return *this; }
};

using RunFn = std::function<Tensor(const std::vector<Tensor>&)>;
using RefFn = std::function<Ref(const std::vector<Ref>&)>;

struct OpCase {
  std::string name;       // unique, says the variant: "add broadcast [3,1]+[4]"
  std::vector<InputSpec> inputs;
  RunFn run;              // loom
  RefFn reference;        // naive loops
  bool gradcheck = true;  // false for ops that are not differentiable
  double f32_tolerance = 1e-5;
  double grad_eps = 1e-6;  // finite-difference step of the gradient check
  bool cuda = true;        // also run on the GPU by tests/test_cuda.cpp (false: say why)
};

std::vector<OpCase>& op_cases();

// Registers cases from a cases_<stem>.cpp file: static CaseRegistrar r(fn);
struct CaseRegistrar {
  explicit CaseRegistrar(const std::function<void(std::vector<OpCase>&)>& add) { add(op_cases()); }
};

// Makes the leaf tensors for a case (dtype for float inputs) from `seed`, and
// the views the op sees (transposed / strided layouts).
std::vector<Tensor> make_leaves(const OpCase& c, DType dtype, uint64_t seed);
std::vector<Tensor> apply_layouts(const OpCase& c, const std::vector<Tensor>& leaves);

// Elementwise reference helpers.
Ref map(const Ref& x, const std::function<double(double)>& f);
// r with its first two axes exchanged ([L, B, ...] <-> [B, L, ...]).
Ref swap_first_two_axes(const Ref& r);
// numpy broadcasting of two Refs.
Ref zip(const Ref& a, const Ref& b, const std::function<double(double, double)>& f);

// The elements of each part, flattened, one part after another: a recurrence's
// output and its final states as one result that a case compares.
Tensor flat_concat(const std::vector<Tensor>& parts);
Ref flat_concat(const std::vector<Ref>& parts);

}  // namespace loom::test
