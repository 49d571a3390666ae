// test_gemm_library.cpp: the choice between Eigen's and OpenBLAS's GEMM
// (engine/gemm_library.h), and products large enough to be cut into blocks for
// the threads, on each library: against a float64 loop, in each operand
// layout, with the same bits for any thread count. And cpu::gemm_call, the one
// product that matmul's blocks and the fused LSTM's tiles are made of.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/cpu/gemm_call.h"
#include "engine/device.h"
#include "engine/gemm_library.h"
#include "engine/ops.h"
#include "tests/gemm_reference.h"
#include "tests/test_util.h"

namespace loom::test {

namespace {

std::vector<GemmLibrary> libraries_built_in() {
  std::vector<GemmLibrary> libraries{GemmLibrary::eigen};
  if (openblas_usable()) libraries.push_back(GemmLibrary::openblas);
  else MESSAGE("OpenBLAS cannot be used here (", cpu_gemm().description, "): Eigen only");
  return libraries;
}

std::string name_of(GemmLibrary library) { return library == GemmLibrary::eigen ? "Eigen" : "OpenBLAS"; }

struct ProductShape {
  int64_t M, K, N;
};

}  // namespace

TEST_CASE("gemm library: OpenBLAS is chosen only where its kernels are as wide as the build's") {
  CHECK(openblas_kernel_isa("Zen") == VectorIsa::avx2);
  CHECK(openblas_kernel_isa("Haswell") == VectorIsa::avx2);
  CHECK(openblas_kernel_isa("SkylakeX") == VectorIsa::avx512);
  CHECK(openblas_kernel_isa("Cooperlake") == VectorIsa::avx512);
  // What OpenBLAS 0.3.21 reports on a virtual Sapphire Rapids: generic kernels.
  CHECK(openblas_kernel_isa("Prescott") == VectorIsa::older);
  CHECK(openblas_kernel_isa("Sandybridge") == VectorIsa::older);
  CHECK(openblas_kernel_isa("") == VectorIsa::older);

  CHECK(openblas_kernels_fit(VectorIsa::avx2, VectorIsa::avx2));
  CHECK(openblas_kernels_fit(VectorIsa::avx512, VectorIsa::avx2));
  CHECK(openblas_kernels_fit(VectorIsa::avx2, VectorIsa::older));
  CHECK_FALSE(openblas_kernels_fit(VectorIsa::avx2, VectorIsa::avx512));
  CHECK_FALSE(openblas_kernels_fit(VectorIsa::older, VectorIsa::older));
  CHECK_FALSE(openblas_kernels_fit(VectorIsa::older, VectorIsa::avx512));
}

TEST_CASE("gemm library: LOOM_GEMM takes eigen, openblas or auto, and names itself when wrong") {
  CHECK(parse_gemm_request(nullptr) == GemmRequest::rule);
  CHECK(parse_gemm_request("") == GemmRequest::rule);
  CHECK(parse_gemm_request("auto") == GemmRequest::rule);
  CHECK(parse_gemm_request("eigen") == GemmRequest::eigen);
  CHECK(parse_gemm_request("openblas") == GemmRequest::openblas);
  check_mentions(error_of([] { parse_gemm_request("mkl"); }), {"LOOM_GEMM=mkl", "eigen", "openblas", "auto"});
  check_mentions(error_of([] { parse_gemm_request("OpenBLAS"); }), {"LOOM_GEMM=OpenBLAS"});
}

TEST_CASE("gemm library: the choice says which library, and a program can switch between those built in") {
  const GemmLibrary chosen = cpu_gemm_library();
  const std::string description = cpu_gemm().description;
  CHECK(contains(description, chosen == GemmLibrary::eigen ? "Eigen" : "OpenBLAS"));
  MESSAGE("GEMM: ", description);
  set_cpu_gemm(GemmLibrary::eigen);
  CHECK(cpu_gemm_library() == GemmLibrary::eigen);
  CHECK(contains(cpu_gemm().description, "Eigen"));
  if (openblas_usable()) {
    set_cpu_gemm(GemmLibrary::openblas);
    CHECK(cpu_gemm_library() == GemmLibrary::openblas);
    CHECK(contains(cpu_gemm().description, "OpenBLAS"));
  } else {
    check_mentions(error_of([] { set_cpu_gemm(GemmLibrary::openblas); }), {"set_cpu_gemm", "OpenBLAS"});
  }
  set_cpu_gemm(chosen);
}

TEST_CASE("matmul: large products on each GEMM library match a float64 loop, with the same bits for 1, 2 and 3 threads") {
  const GemmLibrary chosen = cpu_gemm_library();
  const int threads = num_threads();
  // Each is at least 2^22 multiply-adds, so it is cut into blocks: of rows
  // (600 rows: 3 blocks of 256 and the rest), of columns, and of rows again
  // with an uneven tail of 13. OpenBLAS's tile is 24 rows on AVX2, so blocks
  // cut per thread would have changed its bits.
  const ProductShape shapes[] = {{600, 96, 80}, {70, 160, 520}, {1037, 64, 72}};
  for (GemmLibrary library : libraries_built_in()) {
    set_cpu_gemm(library);
    for (const ProductShape& s : shapes)
      for (int layout = 0; layout < 4; ++layout) {
        const bool a_columns = layout & 1, b_columns = layout & 2;
        INFO(name_of(library), ": [", s.M, ", ", s.K, "] x [", s.K, ", ", s.N, "], a ",
             std::string(a_columns ? "column" : "row"), "-major, b ", std::string(b_columns ? "column" : "row"),
             "-major");
        const std::vector<float> a = normal_values(s.M * s.K, 11), b = normal_values(s.K * s.N, 12);
        const Product expected = product_loop(a, b, s.M, s.K, s.N);
        const Tensor ta = operand(a, s.M, s.K, a_columns), tb = operand(b, s.K, s.N, b_columns);
        std::vector<std::vector<float>> outs;
        for (int n : {1, 2, 3}) {
          set_num_threads(n);
          outs.push_back(matmul(ta, tb).to_vector<float>());
        }
        set_num_threads(threads);
        double worst = 0;  // the error as a share of float32's bound
        for (size_t i = 0; i < expected.value.size(); ++i)
          worst = std::max(worst, std::abs(outs[0][i] - expected.value[i]) /
                                      (double(s.K) * std::ldexp(1.0, -24) * expected.magnitude[i]));
        CHECK(worst <= 1.0);
        CHECK(outs[0] == outs[1]);
        CHECK(outs[0] == outs[2]);
      }
  }
  set_cpu_gemm(chosen);
}

TEST_CASE("matmul: many small products on each GEMM library, computed by several threads at once, match a float64 loop") {
  // Batched products below the blocking size go to the threads one product
  // each, so the library is called from several threads at once. Debian's
  // serial OpenBLAS got some of these wrong (shared buffers without locks).
  const GemmLibrary chosen = cpu_gemm_library();
  const int threads = num_threads();
  const ProductShape shapes[] = {{16, 16, 16}, {64, 64, 1}, {1, 64, 64}, {48, 1, 40}};
  const int64_t batch = 128;
  for (GemmLibrary library : libraries_built_in()) {
    set_cpu_gemm(library);
    for (const ProductShape& s : shapes) {
      INFO(name_of(library), ": ", batch, " products of [", s.M, ", ", s.K, "] x [", s.K, ", ", s.N, "]");
      const std::vector<float> a = normal_values(batch * s.M * s.K, 21), b = normal_values(batch * s.K * s.N, 22);
      const Tensor ta = Tensor::from_vector(a, {batch, s.M, s.K}), tb = Tensor::from_vector(b, {batch, s.K, s.N});
      set_num_threads(1);
      const std::vector<float> one = matmul(ta, tb).to_vector<float>();
      set_num_threads(std::max(2, threads));
      bool same = true;
      for (int round = 0; round < 10; ++round) same = same && matmul(ta, tb).to_vector<float>() == one;
      set_num_threads(threads);
      CHECK(same);
      double worst = 0;
      for (int64_t p = 0; p < batch; ++p) {
        const std::vector<float> ap(a.begin() + p * s.M * s.K, a.begin() + (p + 1) * s.M * s.K);
        const std::vector<float> bp(b.begin() + p * s.K * s.N, b.begin() + (p + 1) * s.K * s.N);
        const Product expected = product_loop(ap, bp, s.M, s.K, s.N);
        for (int64_t i = 0; i < s.M * s.N; ++i)
          worst = std::max(worst, std::abs(one[p * s.M * s.N + i] - expected.value[i]) /
                                      (double(s.K) * std::ldexp(1.0, -24) * expected.magnitude[i] + 1e-30));
      }
      CHECK(worst <= 1.0);
    }
  }
  set_cpu_gemm(chosen);
}

TEST_CASE("gemm_call: one product on each library, in each layout, padded, plain or added into, matches a float64 loop and matmul's bits") {
  const GemmLibrary chosen = cpu_gemm_library();
  const int64_t M = 37, K = 53, N = 29;
  const std::vector<float> a = normal_values(M * K, 31), b = normal_values(K * N, 32), start = normal_values(M * N, 33);
  const Product expected = product_loop(a, b, M, K, N);
  // Stored row-major with `leading` entries per row, or column-major with `leading` per column.
  auto store = [](const std::vector<float>& values, int64_t rows, int64_t cols, bool row_major, int64_t leading) {
    std::vector<float> stored(static_cast<size_t>(leading * (row_major ? rows : cols)), -7.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) stored[row_major ? r * leading + c : c * leading + r] = values[r * cols + c];
    return stored;
  };
  for (GemmLibrary library : libraries_built_in()) {
    set_cpu_gemm(library);
    for (int layout = 0; layout < 4; ++layout) {
      const bool a_rows = !(layout & 1), b_rows = !(layout & 2);
      INFO(name_of(library), ", a ", std::string(a_rows ? "row" : "column"), "-major, b ",
           std::string(b_rows ? "row" : "column"), "-major");
      const int64_t lda = (a_rows ? K : M) + 3, ldb = (b_rows ? N : K) + 5, ldo = N + 2;
      const std::vector<float> sa = store(a, M, K, a_rows, lda), sb = store(b, K, N, b_rows, ldb);
      const cpu::MatrixIn<float> ma{sa.data(), M, K, a_rows, lda}, mb{sb.data(), K, N, b_rows, ldb};
      std::vector<float> out(static_cast<size_t>(M * ldo), -9.0f), added(out.size(), -9.0f);
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = 0; c < N; ++c) added[r * ldo + c] = start[r * N + c];
      cpu::gemm_call(ma, mb, out.data(), ldo, false);
      cpu::gemm_call(ma, mb, added.data(), ldo, true);
      const std::vector<float> by_matmul = matmul(operand(a, M, K, !a_rows), operand(b, K, N, !b_rows)).to_vector<float>();
      double worst = 0, worst_added = 0;
      bool same_as_matmul = true, padding_kept = true;
      for (int64_t r = 0; r < M; ++r) {
        for (int64_t c = 0; c < N; ++c) {
          const size_t i = static_cast<size_t>(r * N + c), o = static_cast<size_t>(r * ldo + c);
          const double bound = double(K + 1) * std::ldexp(1.0, -24) * (expected.magnitude[i] + std::abs(start[i]));
          worst = std::max(worst, std::abs(out[o] - expected.value[i]) / bound);
          worst_added = std::max(worst_added, std::abs(added[o] - (expected.value[i] + start[i])) / bound);
          same_as_matmul = same_as_matmul && out[o] == by_matmul[i];
        }
        for (int64_t c = N; c < ldo; ++c) padding_kept = padding_kept && out[r * ldo + c] == -9.0f;
      }
      CHECK(worst <= 1.0);
      CHECK(worst_added <= 1.0);
      CHECK(same_as_matmul);
      CHECK(padding_kept);
    }
  }
  set_cpu_gemm(chosen);
}

}  // namespace loom::test
