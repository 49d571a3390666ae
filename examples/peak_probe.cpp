// peak_probe: the float32 FMA peak probe of engine/cpu_peak.h on its own, for
// the ISA this file is compiled for: checks the kernel's arithmetic against a
// scalar chain, measures the clock, and prints flops per cycle per core on 1
// thread and on all of them, beside the ISA's figure.
//
//   ./build/examples/peak_probe                (the build's ISA, -march=native)
// Another ISA on the same machine, without meson (AVX2+FMA, then 128-bit SSE):
//   g++ -std=c++20 -O3 -march=haswell -fopenmp -I. examples/peak_probe.cpp engine/cpu_peak.cpp engine/device.cpp -o /tmp/peak_avx2
//   g++ -std=c++20 -O3 -march=x86-64  -fopenmp -I. examples/peak_probe.cpp engine/cpu_peak.cpp engine/device.cpp -o /tmp/peak_sse
#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/cpu_peak.h"
#include "engine/device.h"
#include "examples/command_line.h"

int main(int argc, char** argv) {
  try {
    loom::examples::CommandLine cli(
        "peak_probe",
        "the float32 FMA peak probe of engine/cpu_peak.h on its own, for the ISA this program is compiled for: "
        "checks the kernel's arithmetic against a scalar chain, measures the clock, and prints flops per cycle per "
        "core on 1 thread and on all of them, beside the ISA's figure (stdout; nothing is written to disk). Exits 1 "
        "when the arithmetic is wrong.",
        "./build/examples/peak_probe");
    if (cli.parse(argc, argv).exit) return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  const loom::FmaProbeIsa isa = loom::fma_probe_isa();
  // Each accumulator against the same chain in scalar arithmetic (volatile: no
  // contraction or folding in the reference).
  std::vector<float> out(static_cast<size_t>(isa.chains * isa.lanes));
  loom::run_fma_chains(1000, out.data());
  int wrong = 0;
  for (int c = 0; c < isa.chains; ++c) {
    volatile float a = 0.9999f, b = 1e-4f;
    float want = 1.01f + 0.01f * float(c);
    for (int i = 0; i < 1000; ++i) {
      if (isa.fused) {
        want = std::fma(want, float(a), float(b));
      } else {
        volatile float product = want * a;
        want = product + b;
      }
    }
    for (int lane = 0; lane < isa.lanes; ++lane) wrong += out[c * isa.lanes + lane] != want;
  }
  std::printf("CPU: %s\nprobe: %s, %d chains of %d lanes; arithmetic %s\n", loom::cpu_model_name().c_str(), isa.name,
              isa.chains, isa.lanes, wrong ? "WRONG" : "matches the scalar chain");
  const double ghz = loom::measure_cpu_clock_ghz();
  std::printf("clock: %.2f GHz measured (dependent adds)\n", ghz);
  for (int threads : {1, loom::num_threads()}) {
    const loom::PeakMeasurement m = loom::measure_fp32_peak(threads);
    std::printf("%d thread%s: %.1f GFLOP/s = %.1f flop/cycle/core (ISA figure %d)\n", m.threads,
                m.threads == 1 ? "" : "s", m.gflops, ghz > 0 ? m.gflops / m.threads / ghz : 0.0, isa.flops_per_cycle);
  }
  return wrong ? 1 : 0;
}
