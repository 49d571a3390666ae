// cpu_peak.h: the float32 peak of this CPU, measured and from the clock, and
// how measured rates are shown against it (train's MFU, bench_ops' % of peak).
//
// The probe runs independent chains of fused multiply-adds that never touch
// memory, on every thread at once. Its vector width is the widest the build
// targets (-march=native): AVX-512, AVX2+FMA, or 128-bit multiply and add where
// there is neither. The chains must outnumber FMA latency x FMA pipes (4-5 cycles
// x 2 pipes on current x86 cores) or the probe measures latency, not throughput,
// and must fit in the vector registers with the two constants, or the loop
// spills to memory and measures stores.
#pragma once

#include <cstdint>
#include <string>

namespace loom {

// What the probe runs, fixed at compile time by the build's target macros.
struct FmaProbeIsa {
  const char* name;       // "AVX-512", "AVX2+FMA", "128-bit mul+add"
  int lanes;              // float32 lanes per vector
  int chains;             // independent accumulators (vector registers)
  bool fused;             // one FMA instruction per multiply-add (2 flops), else a multiply and an add
  int flops_per_cycle;    // per core, from the ISA: lanes x 2 flops x 2 pipes (assumed, see cpu_peak.cpp)
};
FmaProbeIsa fma_probe_isa();

// Runs the probe's kernel on the calling thread for `iterations` and writes its
// chains x lanes accumulators to `out` (so a test can check the arithmetic).
void run_fma_chains(int64_t iterations, float* out);

struct PeakMeasurement {
  FmaProbeIsa isa;
  int threads = 0;
  double gflops = 0;  // the best of the repeats: other processes only ever lower it
};
// All threads run the kernel at once, `repeats` times, each repeat starting at
// a barrier and timed from the first thread's start to the last one's end; the
// fastest repeat counts. Many short repeats (under a millisecond each) rather
// than a few long ones: on a busy machine a long run is always interrupted, so
// its rate says more about the other processes than about the CPU. About 0.1 s
// on an idle machine. `threads` <= 0: loom's thread count.
PeakMeasurement measure_fp32_peak(int threads = 0, int64_t iterations = int64_t{1} << 18, int repeats = 100);

// "model name" from /proc/cpuinfo, "unknown CPU" when it cannot be read.
std::string cpu_model_name();
// The first "model name" value of a /proc/cpuinfo text ("" when absent).
std::string parse_cpuinfo_model(const std::string& cpuinfo);
// The first "cpu MHz" value of a /proc/cpuinfo text (0 when absent).
double parse_cpuinfo_mhz(const std::string& cpuinfo);

struct CpuClock {
  double ghz = 0;      // 0: not readable
  std::string source;  // the file it came from
};
// The highest clock cpufreq reports for cpu0 (cpuinfo_max_freq), else the
// "cpu MHz" of /proc/cpuinfo (the current clock; under a hypervisor usually the
// nominal one, so turbo can beat it).
CpuClock cpu_clock();

// The clock the calling thread runs at, measured: a chain of dependent
// register-to-register integer adds retires one add per cycle on x86 cores, so
// adds per second is the clock, turbo included (under a hypervisor
// /proc/cpuinfo shows the nominal clock instead). Heavy AVX-512 work may run at
// a lower clock than this scalar loop. 0 where not implemented (not x86-64).
double measure_cpu_clock_ghz();

// cores x flops/cycle x clock; 0 when the clock is unknown.
double theoretical_peak_gflops(const FmaProbeIsa& isa, int cores, double ghz);

// One line for the logs: "CPU: <model>; fp32 peak measured with AVX-512 (16 chains of 16 lanes) on 2 threads: 290 GFLOP/s".
std::string describe_peak(const PeakMeasurement& peak);

// A measured rate as a share of a peak: "87.3%". A rate above the peak is never
// shown as a percentage over 100: the text says the peak (or the FLOP count)
// must be wrong. `peak` <= 0: "n/a".
bool exceeds_peak(double rate, double peak);
std::string share_of_peak(double rate, double peak);

}  // namespace loom
