#include "engine/cpu_peak.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "engine/device.h"

namespace loom {

// ---- the kernel ------------------------------------------------------------------------
// acc = acc * a + b with a = 0.9999, b = 1e-4 draws every chain (starting at
// 1.01 + 0.01 c) slowly towards 1 = b / (1 - a): finite and normal for any number
// of iterations, yet still changing after thousands of them (a test counts them).
//
// Register budget, checked in the assembly (objdump -d build/libloom.a, function
// run_fma_chains): the inner loop is kChains vfmadd instructions on registers
// only, with no load or store to the stack.
//  - AVX-512: 32 zmm registers; 16 chains + a + b = 18. 16 >= 4 cycles x 2 pipes.
//  - AVX2:    16 ymm registers; 12 chains + a + b = 14. 12 >= 5 cycles x 2 pipes
//             (Zen 3, Haswell; Skylake and later: 4 x 2).
//  - else:    16 xmm registers (SSE2 / NEON); 12 chains + a + b, a multiply and
//             an add each (no FMA in the baseline ISA).

namespace {

#if defined(__AVX512F__)
constexpr FmaProbeIsa kIsa = {"AVX-512", 16, 16, true, 64};
using Vec = __m512;
inline Vec broadcast(float x) { return _mm512_set1_ps(x); }
inline Vec multiply_add(Vec acc, Vec a, Vec b) { return _mm512_fmadd_ps(acc, a, b); }
inline void store(float* out, Vec v) { _mm512_storeu_ps(out, v); }
#elif defined(__AVX2__) && defined(__FMA__)
constexpr FmaProbeIsa kIsa = {"AVX2+FMA", 8, 12, true, 32};
using Vec = __m256;
inline Vec broadcast(float x) { return _mm256_set1_ps(x); }
inline Vec multiply_add(Vec acc, Vec a, Vec b) { return _mm256_fmadd_ps(acc, a, b); }
inline void store(float* out, Vec v) { _mm256_storeu_ps(out, v); }
#else
// 128-bit vectors through GCC's vector extension (SSE2 on x86-64, NEON on ARM).
// ISO C++ mode compiles with -ffp-contract=off, so this stays a multiply and an
// add: 2 flops per lane, as counted. Assumed peak: two multiplies and two adds
// per cycle, 4 lanes each (16 flops/cycle: Zen, Golden Cove; older cores with
// one pipe of each reach half).
constexpr FmaProbeIsa kIsa = {"128-bit mul+add", 4, 12, false, 16};
typedef float Vec __attribute__((vector_size(16)));
inline Vec broadcast(float x) { return Vec{x, x, x, x}; }
inline Vec multiply_add(Vec acc, Vec a, Vec b) { return acc * a + b; }
inline void store(float* out, Vec v) {
  for (int i = 0; i < 4; ++i) out[i] = v[i];
}
#endif

constexpr int kChains = kIsa.chains;
constexpr int kLanes = kIsa.lanes;

}  // namespace

FmaProbeIsa fma_probe_isa() { return kIsa; }

// noinline, and every output is read below: inlined into the measurement with
// only some outputs used, the compiler drops the other chains (it did, and the
// AVX2 probe reported 48 flops per cycle).
__attribute__((noinline)) void run_fma_chains(int64_t iterations, float* out) {
  // Starting values the compiler cannot see: it must not fold a chain whose
  // start is a fixed point (it did so for 1.0 in the 128-bit build).
  volatile float first = 1.01f;
  Vec acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = broadcast(first + 0.01f * float(c));
  const Vec a = broadcast(0.9999f), b = broadcast(1e-4f);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = multiply_add(acc[c], a, b);
  }
  for (int c = 0; c < kChains; ++c) store(out + c * kLanes, acc[c]);
}

// ---- the measurement -------------------------------------------------------------------

PeakMeasurement measure_fp32_peak(int threads, int64_t iterations, int repeats) {
  if (threads <= 0) threads = num_threads();
  repeats = std::max(repeats, 1);
  using Clock = std::chrono::steady_clock;
  std::vector<Clock::time_point> starts(static_cast<size_t>(threads)), ends(starts.size());
  double best = 0;
  int team = 1;
  volatile float sink = 0;  // keeps the results alive
  // One team for all repeats: each repeat starts at a barrier (no thread start-up
  // inside the timing) and spans the first start to the last end.
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int id = omp_get_thread_num();
#pragma omp single
    team = omp_get_num_threads();
#else
    const int id = 0;
#endif
    float out[kChains * kLanes];
    for (int r = 0; r < repeats; ++r) {
#pragma omp barrier
      starts[id] = Clock::now();
      run_fma_chains(iterations, out);
      ends[id] = Clock::now();
#pragma omp barrier
#pragma omp single
      {
        const auto first = *std::min_element(starts.begin(), starts.begin() + team);
        const auto last = *std::max_element(ends.begin(), ends.begin() + team);
        const double seconds = std::chrono::duration<double>(last - first).count();
        best = std::max(best, 2.0 * kChains * kLanes * double(iterations) * team / seconds * 1e-9);
        float total = 0;
        for (float x : out) total += x;
        sink = sink + total;
      }
    }
  }
  return PeakMeasurement{kIsa, team, best};
}

// ---- what the machine says about itself ---------------------------------------------------

namespace {

std::string read_file(const char* path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The value after "key<spaces/tabs>:" on the first line that starts with key.
std::string cpuinfo_value(const std::string& cpuinfo, const std::string& key) {
  std::istringstream lines(cpuinfo);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(key, 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos || line.find_first_not_of(" \t", key.size()) != colon) continue;
    const size_t begin = line.find_first_not_of(" \t", colon + 1);
    return begin == std::string::npos ? "" : line.substr(begin);
  }
  return "";
}

}  // namespace

std::string parse_cpuinfo_model(const std::string& cpuinfo) { return cpuinfo_value(cpuinfo, "model name"); }

double parse_cpuinfo_mhz(const std::string& cpuinfo) {
  try {
    return std::stod(cpuinfo_value(cpuinfo, "cpu MHz"));
  } catch (const std::exception&) {
    return 0;
  }
}

std::string cpu_model_name() {
  const std::string model = parse_cpuinfo_model(read_file("/proc/cpuinfo"));
  return model.empty() ? "unknown CPU" : model;
}

CpuClock cpu_clock() {
  const char* max_freq = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq";
  try {
    const double khz = std::stod(read_file(max_freq));
    if (khz > 0) return {khz * 1e-6, max_freq};
  } catch (const std::exception&) {
  }
  const double mhz = parse_cpuinfo_mhz(read_file("/proc/cpuinfo"));
  if (mhz > 0) return {mhz * 1e-3, "/proc/cpuinfo cpu MHz"};
  return {};
}

double measure_cpu_clock_ghz() {
#if defined(__x86_64__)
  // Many short bursts (about 30 us each), the fastest one counts: on a busy
  // machine a longer run is interrupted and reads as a lower clock. The add
  // takes a register, not an immediate: recent Intel cores fold chains of
  // immediate adds at register renaming, several per cycle.
  constexpr int kLoops = 1000, kAddsPerLoop = 100, kBursts = 300;
  double best = 0;
  for (int burst = 0; burst < kBursts; ++burst) {
    uint64_t x = 0, one = 1;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kLoops; ++i) asm volatile(".rept 100\n\tadd %1, %0\n\t.endr" : "+r"(x) : "r"(one));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, double(kLoops) * kAddsPerLoop / seconds * 1e-9);
  }
  return best;
#else
  return 0;
#endif
}

double theoretical_peak_gflops(const FmaProbeIsa& isa, int cores, double ghz) {
  return ghz > 0 ? double(cores) * isa.flops_per_cycle * ghz : 0.0;
}

std::string describe_peak(const PeakMeasurement& peak) {
  char buffer[256];
  std::snprintf(buffer, sizeof buffer, "fp32 peak measured with %s (%d chains of %d lanes) on %d thread%s: %.0f GFLOP/s",
                peak.isa.name, peak.isa.chains, peak.isa.lanes, peak.threads, peak.threads == 1 ? "" : "s",
                peak.gflops);
  return "CPU: " + cpu_model_name() + "; " + buffer;
}

bool exceeds_peak(double rate, double peak) { return peak > 0 && rate > peak; }

std::string share_of_peak(double rate, double peak) {
  if (!(peak > 0)) return "n/a";
  if (exceeds_peak(rate, peak)) return "ABOVE PEAK?!";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f%%", 100.0 * rate / peak);
  return buffer;
}

}  // namespace loom
