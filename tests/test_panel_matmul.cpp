// test_panel_matmul.cpp: products with a weight packed once (the optional panel
// kernels of engine/backend.h, engine/cpu/panel_matmul.h), which stepped_matmul
// uses on the CPU, against a float64 loop: ragged last panels, rows that are not
// a whole register tile, depths past one depth block, both layouts of either
// operand, writing and adding; and the same bits for any thread count.
// (stepped_matmul through them: the op-table cases in cases_linalg.cpp, with
// their float64 gradient checks.)
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "engine/backend.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "tests/gemm_reference.h"

namespace loom::test {

namespace {

// out = a·w (or start + a·w) through the CPU's panel kernels.
Tensor panel_product(const Tensor& a, const Tensor& w, const Tensor& start) {
  Backend& cpu = backend_for(Device::cpu);
  const int64_t width = cpu.panel_width(w.dtype());
  REQUIRE(width > 0);
  const int64_t K = w.size(0), N = w.size(1);
  Tensor panels = Tensor::empty({(N + width - 1) / width, K, width}, w.dtype(), Device::cpu);
  cpu.pack_panels(w, panels);
  Tensor out = start.defined() ? contiguous(start).clone() : Tensor::empty({a.size(0), N}, w.dtype(), Device::cpu);
  cpu.matmul_panels(a, panels, out, start.defined());
  return out;
}

template <class T>
void check_shapes(DType dtype, double unit_roundoff) {
  struct Shape3 {
    int64_t M, K, N;
  };
  // Rows: 1, under a tile, tiles with rest rows; depth: under and past a depth
  // block (256); columns: under one panel, whole panels, a ragged last one.
  for (const Shape3 s : {Shape3{1, 1, 1}, Shape3{3, 5, 7}, Shape3{8, 256, 32}, Shape3{13, 300, 70},
                         Shape3{64, 600, 129}, Shape3{67, 257, 64}})
    for (const bool w_transposed : {false, true})
      for (const bool a_transposed : {false, true})
        for (const bool accumulate : {false, true}) {
          INFO(dtype_name(dtype), " M ", s.M, " K ", s.K, " N ", s.N, ", weight ",
               w_transposed ? "transposed" : "row-major", ", a ", a_transposed ? "transposed" : "row-major",
               accumulate ? ", adding onto a start" : "");
          const uint32_t seed = static_cast<uint32_t>(s.M * 131 + s.K * 7 + s.N);
          const std::vector<T> w_values = normal_values<T>(s.K * s.N, seed);
          const std::vector<T> a_values = normal_values<T>(s.M * s.K, seed + 1);
          const std::vector<T> start_values = normal_values<T>(s.M * s.N, seed + 2);
          const Tensor w = operand(w_values, s.K, s.N, w_transposed), a = operand(a_values, s.M, s.K, a_transposed);
          const Tensor start = accumulate ? Tensor::from_vector(start_values, {s.M, s.N}) : Tensor();
          const std::vector<T> got = panel_product(a, w, start).to_vector<T>();
          Product e = product_loop(a_values, w_values, s.M, s.K, s.N);
          if (accumulate)
            for (size_t i = 0; i < e.value.size(); ++i) e.value[i] += start_values[i];
          int64_t wrong = 0;
          for (size_t i = 0; i < got.size(); ++i) {
            // Each sum rounds at most K + 1 times (the depth blocks add onto out).
            const double bound = (s.K + 2) * unit_roundoff * (e.magnitude[i] + std::abs(e.value[i])) + 1e-300;
            if (!(std::abs(static_cast<double>(got[i]) - e.value[i]) <= bound)) ++wrong;
          }
          CHECK(wrong == 0);
        }
}

}  // namespace

TEST_CASE("panel kernels: products with a packed weight against a float64 loop") {
  check_shapes<float>(DType::f32, std::ldexp(1.0, -24));
  check_shapes<double>(DType::f64, std::ldexp(1.0, -53));
}

TEST_CASE("panel kernels: the same bits on 1 and 2 threads") {
  const int threads = num_threads();
  const Tensor w = operand(normal_values(700 * 300, 11), 700, 300, false);
  const Tensor a = operand(normal_values(64 * 700, 12), 64, 700, false);
  set_num_threads(1);
  const std::vector<float> one = panel_product(a, w, Tensor()).to_vector<float>();
  set_num_threads(2);
  const std::vector<float> two = panel_product(a, w, Tensor()).to_vector<float>();
  set_num_threads(threads);
  CHECK(one == two);
}

}  // namespace loom::test
