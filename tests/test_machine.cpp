// test_machine.cpp: what loom says about the machine it runs on. The CPU's
// float32 peak probe (engine/cpu_peak.h: which ISA, the arithmetic its kernel
// does, how shares of a peak are printed) and the decision whether CUDA is
// usable, skipped or broken (cuda/init_check.h), driven by fake error codes so
// that it runs on a machine without a GPU. No timing is asserted.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/init_check.h"
#include "engine/cpu_peak.h"
#include "tests/test_util.h"

namespace loom::test {

// ---- the FMA probe -----------------------------------------------------------------------

TEST_CASE("cpu peak: the probe's ISA is the widest the build targets") {
  const FmaProbeIsa isa = fma_probe_isa();
#if defined(__AVX512F__)
  CHECK(std::strcmp(isa.name, "AVX-512") == 0);
  CHECK(isa.lanes == 16);
  CHECK(isa.fused);
  CHECK(isa.flops_per_cycle == 64);
  constexpr int kRegisters = 32;
#elif defined(__AVX2__) && defined(__FMA__)
  CHECK(std::strcmp(isa.name, "AVX2+FMA") == 0);
  CHECK(isa.lanes == 8);
  CHECK(isa.fused);
  CHECK(isa.flops_per_cycle == 32);
  constexpr int kRegisters = 16;
#else
  CHECK(isa.lanes == 4);
  CHECK(!isa.fused);
  CHECK(isa.flops_per_cycle == 16);
  constexpr int kRegisters = 16;
#endif
  // Enough chains to hide 5 cycles of FMA latency on 2 pipes; few enough to
  // leave two registers for the constants.
  CHECK(isa.chains >= 10);
  CHECK(isa.chains + 2 <= kRegisters);
}

TEST_CASE("cpu peak: the kernel does chains x lanes x iterations multiply-adds") {
  // Each accumulator must equal a scalar chain of the same operations: one
  // correctly rounded fma per step when the probe is fused, else a rounded
  // multiply then a rounded add. A kernel that skipped iterations or lanes
  // (and so claimed flops it did not do) gives other values.
  const FmaProbeIsa isa = fma_probe_isa();
  const int64_t iterations = 1000;
  std::vector<float> out(static_cast<size_t>(isa.chains * isa.lanes));
  run_fma_chains(iterations, out.data());
  for (int c = 0; c < isa.chains; ++c) {
    volatile float a = 0.9999f, b = 1e-4f;  // volatile: no contraction or folding in the reference
    float want = 1.01f + 0.01f * float(c);
    for (int64_t i = 0; i < iterations; ++i) {
      if (isa.fused) {
        want = std::fma(want, float(a), float(b));
      } else {
        volatile float product = want * a;
        want = product + b;
      }
    }
    for (int lane = 0; lane < isa.lanes; ++lane) {
      INFO("chain ", c, " lane ", lane);
      CHECK(out[c * isa.lanes + lane] == want);
    }
  }
  // One iteration fewer gives other values in every chain.
  std::vector<float> fewer(out.size());
  run_fma_chains(iterations - 1, fewer.data());
  for (int c = 0; c < isa.chains; ++c) CHECK(fewer[c * isa.lanes] != out[c * isa.lanes]);
}

TEST_CASE("cpu peak: a measurement is finite and positive; the clock peak follows the ISA") {
  const PeakMeasurement m = measure_fp32_peak(1, 1 << 12, 1);
  CHECK(m.threads == 1);
  CHECK(std::isfinite(m.gflops));
  CHECK(m.gflops > 0);
  CHECK(contains(describe_peak(m), m.isa.name));
  const FmaProbeIsa isa = fma_probe_isa();
  CHECK(theoretical_peak_gflops(isa, 2, 3.0) == doctest::Approx(2 * 3.0 * isa.flops_per_cycle));
  CHECK(theoretical_peak_gflops(isa, 2, 0.0) == 0.0);
}

TEST_CASE("cpu peak: shares of a peak are never shown above 100%") {
  CHECK(share_of_peak(50, 200) == "25.0%");
  CHECK(share_of_peak(200, 200) == "100.0%");
  CHECK(!exceeds_peak(200, 200));
  CHECK(exceeds_peak(200.5, 200));
  const std::string above = share_of_peak(300, 200);
  CHECK(!contains(above, "%"));
  CHECK(contains(above, "ABOVE PEAK"));
  CHECK(share_of_peak(10, 0) == "n/a");
  CHECK(!exceeds_peak(10, 0));
}

TEST_CASE("cpu peak: model name and clock from a /proc/cpuinfo text") {
  const std::string cpuinfo =
      "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\n"
      "model name\t: AMD EPYC 7B13 64-Core Processor\ncpu MHz\t\t: 2449.998\n\n"
      "processor\t: 1\nmodel name\t: other\ncpu MHz\t\t: 1000\n";
  CHECK(parse_cpuinfo_model(cpuinfo) == "AMD EPYC 7B13 64-Core Processor");
  CHECK(parse_cpuinfo_mhz(cpuinfo) == doctest::Approx(2449.998));
  CHECK(parse_cpuinfo_model("processor : 0\n") == "");
  CHECK(parse_cpuinfo_mhz("cpu MHz : fast\n") == 0.0);
  CHECK(parse_cpuinfo_mhz("") == 0.0);
}

// ---- whether CUDA is usable ---------------------------------------------------------------

TEST_CASE("cuda init: skip only without a driver or without a device; every other error fails") {
  using cuda::CudaInit;
  using cuda::CudaInitFacts;
  using cuda::classify_cuda_init;
  constexpr int kCuda13 = 13000, kCuda12 = 12020;
  // Error codes as cuda_runtime.h numbers them (runtime.cu asserts the first three).
  constexpr int kSuccess = 0, kInsufficientDriver = 35, kNoDevice = 100;
  constexpr int kInitializationError = 3, kSystemNotReady = 802, kSystemDriverMismatch = 803;
  constexpr int kDevicesUnavailable = 46, kUnknown = 999, kNotPermitted = 800;

  // Ready.
  CHECK(classify_cuda_init({kCuda13, kCuda13, kSuccess, 1}) == CudaInit::ready);
  CHECK(classify_cuda_init({kCuda13, kCuda12, kSuccess, 8}) == CudaInit::ready);
  // No driver: cudaDriverGetVersion says 0, and cudaGetDeviceCount then reports
  // an insufficient driver (or anything else).
  CHECK(classify_cuda_init({0, kCuda13, kInsufficientDriver, 0}) == CudaInit::absent);
  CHECK(classify_cuda_init({0, kCuda13, kInitializationError, 0}) == CudaInit::absent);
  // A driver, no device.
  CHECK(classify_cuda_init({kCuda13, kCuda13, kNoDevice, 0}) == CudaInit::absent);
  CHECK(classify_cuda_init({kCuda13, kCuda13, kSuccess, 0}) == CudaInit::absent);
  // A driver that cannot run this runtime, and every other start-up error: broken.
  CHECK(classify_cuda_init({kCuda12, kCuda13, kInsufficientDriver, 0}) == CudaInit::broken);
  for (int status : {kInitializationError, kSystemNotReady, kSystemDriverMismatch, kDevicesUnavailable, kUnknown,
                     kNotPermitted}) {
    INFO("status ", status);
    CHECK(classify_cuda_init({kCuda13, kCuda13, status, 0}) == CudaInit::broken);
  }
}

TEST_CASE("cuda init: the messages name the error and both versions") {
  const cuda::CudaInitFacts old_driver{12020, 13000, cuda::kCudaErrorInsufficientDriver, 0};
  check_mentions(cuda::cuda_init_message(old_driver, "cudaErrorInsufficientDriver"),
                 {"cannot start", "cudaErrorInsufficientDriver", "driver supports CUDA 12.2", "runtime is CUDA 13.0",
                  "update the driver"});
  const cuda::CudaInitFacts fabric{13000, 13000, 802, 0};
  check_mentions(cuda::cuda_init_message(fabric, "cudaErrorSystemNotReady"),
                 {"cannot start", "cudaErrorSystemNotReady", "CUDA 13.0"});
  check_mentions(cuda::cuda_init_message({0, 13000, 35, 0}, "cudaErrorInsufficientDriver"),
                 {"no NVIDIA driver", "runtime is CUDA 13.0"});
  check_mentions(cuda::cuda_init_message({13000, 13000, cuda::kCudaErrorNoDevice, 0}, "cudaErrorNoDevice"),
                 {"no CUDA device", "cudaErrorNoDevice"});
  CHECK(cuda::cuda_version_text(0) == "none");
  CHECK(cuda::cuda_version_text(12020) == "12.2");
}

TEST_CASE("cuda init: NVIDIA_TF32_OVERRIDE is noticed") {
  CHECK(cuda::tf32_override(nullptr) == cuda::Tf32Override::unset);
  CHECK(cuda::tf32_override("0") == cuda::Tf32Override::forced_off);
  CHECK(cuda::tf32_override("1") == cuda::Tf32Override::other);
  CHECK(cuda::tf32_override("") == cuda::Tf32Override::other);
}

}  // namespace loom::test
