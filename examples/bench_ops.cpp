// bench_ops: how close loom's CPU kernels come to what the machine can do.
//
// For 1 and 2 threads it prints one table:
//   - the float32 peak measured by engine/cpu_peak.h's FMA probe (the one train
//     uses for MFU), beside the peak the clock allows (cores x flops/cycle x GHz),
//   - matmul GFLOP/s for a [2048x512]·[512x2048] product and the two products
//     its backward rule issues (with the same transposed views autodiff uses),
//     and their share of the measured peak,
//   - GB/s of a large elementwise add and of softmax, beside a memcpy baseline.
// Every number is the median of several timed runs after warm-up runs; on a
// shared machine the spread is still large, so compare medians, not digits.
// Only figures the machine backs are shown: a peak from a clock the probe beats
// (a VM reporting its base clock while the cores run at turbo), or a share of a
// peak a product beats, is left out, with one sentence under the table saying why.
//
//   bench_ops           full run (a few seconds)
//   bench_ops --quick   small shapes, few runs: a smoke test for the build
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>
#pragma GCC diagnostic pop

#include "engine/backend.h"
#include "engine/cpu_peak.h"
#include "engine/gemm_library.h"
#include "engine/ops.h"
#include "engine/timing.h"
#include "examples/command_line.h"

namespace {

using loom::timing::Clock;
using loom::timing::median;

struct Config {
  bool quick = false;
  int warmup = 2;
  int reps = 7;
  // matmul: [m x k]·[k x n]
  int64_t m = 2048, k = 512, n = 2048;
  int64_t add_numel = int64_t{16} << 20;
  int64_t softmax_rows = 4096, softmax_cols = 4096;
  int64_t fma_iters = int64_t{1} << 18;  // per thread and repeat
  int fma_repeats = 100;                 // the fastest repeat counts (engine/cpu_peak.h)
};

// System allocations made inside timed runs: in steady state the allocator's
// cache should serve every tensor, so this stays 0.
size_t g_timed_allocations = 0;

// CPU time this process got during timed runs, against wall time x threads: well
// below 100% means other processes took cores from us and the numbers are low.
struct CpuShare {
  int threads = 1;
  double cpu_seconds = 0, wall_seconds = 0;
  double percent() const { return 100.0 * cpu_seconds / (wall_seconds * threads); }
};
CpuShare g_share;

// Median wall-clock seconds of fn() over cfg.reps runs, after cfg.warmup untimed
// runs (they fault in pages and fill the allocator's cache).
double time_median(const Config& cfg, const std::function<void()>& fn) {
  for (int i = 0; i < cfg.warmup; ++i) fn();
  const size_t allocations = loom::cpu_allocator().stats().system_allocations;
  const double cpu0 = loom::timing::cpu_seconds();
  std::vector<double> secs;
  for (int i = 0; i < cfg.reps; ++i) {
    const auto t0 = Clock::now();
    fn();
    secs.push_back(loom::timing::seconds_since(t0));
  }
  g_share.cpu_seconds += loom::timing::cpu_seconds() - cpu0;
  for (double t : secs) g_share.wall_seconds += t;
  g_timed_allocations += loom::cpu_allocator().stats().system_allocations - allocations;
  return median(secs);
}

// ---- matmul --------------------------------------------------------------------------

// Largest error of a few sampled entries of c = a·b against a float64 dot
// product, relative to sum |a_ik b_kj| (the scale of fp32 rounding). Catches a
// fast but wrong kernel; it is not a timing check.
double matmul_sample_error(const loom::Tensor& a, const loom::Tensor& b, const loom::Tensor& c) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const float* pc = c.data<float>();
  const int64_t as0 = a.strides()[0], as1 = a.strides()[1];
  const int64_t bs0 = b.strides()[0], bs1 = b.strides()[1];
  double worst = 0;
  for (int s = 0; s < 64; ++s) {
    const int64_t i = (s * 7919) % M, j = (s * 104729 + 13) % N;
    double dot = 0, scale = 0;
    for (int64_t kk = 0; kk < K; ++kk) {
      const double x = pa[i * as0 + kk * as1], y = pb[kk * bs0 + j * bs1];
      dot += x * y;
      scale += std::abs(x * y);
    }
    worst = std::max(worst, std::abs(pc[i * N + j] - dot) / std::max(scale, 1e-30));
  }
  return worst;
}

struct MatmulResult {
  double gflops = 0;
  double error = 0;
};

MatmulResult bench_matmul(const Config& cfg, const loom::Tensor& a, const loom::Tensor& b) {
  MatmulResult r;
  loom::Tensor c;
  // The old result is dropped first, so its block is reused as in a training step.
  const double secs = time_median(cfg, [&] {
    c = loom::Tensor();
    c = loom::matmul(a, b);
  });
  r.gflops = 2.0 * double(a.size(0)) * double(a.size(1)) * double(b.size(1)) / secs * 1e-9;
  r.error = matmul_sample_error(a, b, c);
  return r;
}

// ---- memory-bound ops ---------------------------------------------------------------

// memcpy split over the threads: the bandwidth a streaming kernel can hope for.
double memcpy_gbps(const Config& cfg, int threads, float* dst, const float* src, int64_t numel) {
  const double secs = time_median(cfg, [&] {
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
#else
      const int64_t nt = 1, t = 0;
#endif
      const int64_t chunk = (numel + nt - 1) / nt;
      const int64_t begin = std::min(numel, t * chunk), end = std::min(numel, begin + chunk);
      std::memcpy(dst + begin, src + begin, (end - begin) * sizeof(float));
    }
  });
  return 2.0 * numel * sizeof(float) / secs * 1e-9;  // read + write
}

// ---- the table ------------------------------------------------------------------------

struct Row {
  std::string label;
  std::vector<std::string> cells;  // one per thread count
  bool left_out = false;           // a figure the machine cannot back: the row is not printed
};

std::string fmt(const char* f, double x) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}


std::string shape_text(const loom::Tensor& t) { return loom::shape_str(t.shape()); }

// Columns on a terminal: UTF-8 continuation bytes take none (labels use · and ᵀ).
int display_width(const std::string& s) {
  return int(std::count_if(s.begin(), s.end(), [](char ch) { return (ch & 0xC0) != 0x80; }));
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  loom::examples::CommandLine cli(
      "bench_ops",
      "how close loom's CPU kernels come to what the machine can do, on 1 and 2 threads: the float32 peak of the "
      "FMA probe (the one train uses for MFU) beside the peaks the clock allows, matmul GFLOP/s of a "
      "[2048x512]x[512x2048] product and its two backward products with their share of the probe's peak, and GB/s "
      "of add and softmax beside memcpy. Prints one table to stdout (medians of several timed runs; nothing is "
      "written to disk); a figure the machine cannot back is left out with a sentence saying why. Exits 1 when a "
      "product is wrong.",
      "./build/examples/bench_ops");
  cli.flag("--quick", "small shapes and few runs: a smoke test of the build (a second), not a measurement.",
           [&](const auto&) { cfg.quick = true; });
  try {
    if (cli.parse(argc, argv).exit) return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  if (cfg.quick) {
    cfg.warmup = 1;
    cfg.reps = 3;
    cfg.m = 256, cfg.k = 64, cfg.n = 256;
    cfg.add_numel = int64_t{1} << 18;
    cfg.softmax_rows = 256, cfg.softmax_cols = 256;
    cfg.fma_iters = int64_t{1} << 16;
    cfg.fma_repeats = 10;
  }
  const std::vector<int> thread_counts = {2, 1};

  loom::Generator gen(42);
  // The forward product and the tensors its backward rule sees.
  const loom::Tensor A = loom::uniform({cfg.m, cfg.k}, -1, 1, gen);
  const loom::Tensor B = loom::uniform({cfg.k, cfg.n}, -1, 1, gen);
  const loom::Tensor dC = loom::uniform({cfg.m, cfg.n}, -1, 1, gen);
  const loom::Tensor Bt = loom::transpose(B, -1, -2);  // views, as in autodiff/linalg.cpp
  const loom::Tensor At = loom::transpose(A, -1, -2);
  const loom::Tensor x = loom::uniform({cfg.add_numel}, -1, 1, gen);
  const loom::Tensor y = loom::uniform({cfg.add_numel}, -1, 1, gen);
  loom::Tensor copy_dst = loom::Tensor::empty({cfg.add_numel});
  const loom::Tensor logits = loom::uniform({cfg.softmax_rows, cfg.softmax_cols}, -4, 4, gen);
  loom::Tensor probs = loom::Tensor::empty(logits.shape());

  std::vector<Row> rows;
  auto row = [&](const std::string& label) -> Row& {
    for (Row& r : rows)
      if (r.label == label) return r;
    rows.push_back({label, {}});
    return rows.back();
  };
  bool ok = true;
  // Why a row or a figure is left out: one plain sentence each, printed under the table.
  std::vector<std::string> left_out;
  const auto leave_out = [&](const std::string& why) {
    if (std::find(left_out.begin(), left_out.end(), why) == left_out.end()) left_out.push_back(why);
  };
  const loom::CpuClock clock = loom::cpu_clock();
  const loom::FmaProbeIsa isa = loom::fma_probe_isa();
  const double measured_ghz = loom::measure_cpu_clock_ghz();

  for (int threads : thread_counts) {
    loom::set_num_threads(threads);
    g_share = CpuShare{threads};
    row("threads (loom / Eigen)")
        .cells.push_back(std::to_string(loom::num_threads()) + " / " + std::to_string(Eigen::nbThreads()));

    const double peak = loom::measure_fp32_peak(threads, cfg.fma_iters, cfg.fma_repeats).gflops;
    row(std::string("fp32 peak, FMA probe (") + isa.name + ") GFLOP/s").cells.push_back(fmt("%.1f", peak));
    // A peak from a clock is a bound only when the probe stays below it; a probe above it
    // means the cores ran faster than that clock (turbo; VMs often report the base clock).
    const auto clock_row = [&](const std::string& label, double ghz, const std::string& why) {
      const double clock_peak = loom::theoretical_peak_gflops(isa, threads, ghz);
      Row& r = row(label);
      r.cells.push_back(clock_peak > 0 ? fmt("%.1f", clock_peak) + " (" + loom::share_of_peak(peak, clock_peak) + ")"
                                       : std::string("n/a"));
      if (loom::exceeds_peak(peak, clock_peak)) {
        r.left_out = true;
        leave_out(why);
      }
    };
    clock_row(fmt("fp32 peak, cores x %.0f flop/cycle", isa.flops_per_cycle) +
                  fmt(" x %.2f GHz read (probe's share)", clock.ghz),
              clock.ghz,
              fmt("The peak from the clock this machine reports (%.2f GHz) is left out: the FMA probe ran faster "
                  "than that clock allows, so the cores run above it (turbo; virtual machines often report their "
                  "base clock).", clock.ghz));
    clock_row(fmt("fp32 peak, measured clock %.2f GHz (probe's share)", measured_ghz), measured_ghz,
              fmt("The peak from the measured clock (%.2f GHz) is left out: the FMA probe ran faster than that "
                  "clock allows, so the clock measurement read low.", measured_ghz));

    struct Case {
      std::string label;
      const loom::Tensor& a;
      const loom::Tensor& b;
    };
    const Case cases[] = {
        {"matmul C=A·B     " + shape_text(A) + "·" + shape_text(B), A, B},
        {"matmul dA=dC·Bᵀ  " + shape_text(dC) + "·" + shape_text(Bt) + "*", dC, Bt},
        {"matmul dB=Aᵀ·dC  " + shape_text(At) + "*·" + shape_text(dC), At, dC},
    };
    for (const Case& c : cases) {
      const MatmulResult r = bench_matmul(cfg, c.a, c.b);
      if (!(r.error < 1e-4)) {
        std::fprintf(stderr, "%s: wrong result (sampled relative error %.3g)\n", c.label.c_str(), r.error);
        ok = false;
      }
      // A product faster than the probe shows its rate alone: the probe's peak is no bound then.
      const bool backed = !loom::exceeds_peak(r.gflops, peak);
      row(c.label + " GFLOP/s (% probe peak)")
          .cells.push_back(fmt("%.1f", r.gflops) + (backed ? " (" + loom::share_of_peak(r.gflops, peak) + ")" : ""));
      if (!backed)
        leave_out("A matmul share of the probe's peak is left out where the product ran faster than the probe: "
                  "the probe underrates this machine.");
    }

    const double copy_bw =
        memcpy_gbps(cfg, threads, copy_dst.data<float>(), x.data<float>(), cfg.add_numel);
    row("memcpy " + shape_text(x) + " GB/s (read+write)").cells.push_back(fmt("%.1f", copy_bw));

    loom::Tensor sum;
    const double add_secs = time_median(cfg, [&] {
      sum = loom::Tensor();
      sum = loom::add(x, y);
    });
    const double add_bw = 3.0 * cfg.add_numel * sizeof(float) / add_secs * 1e-9;  // 2 reads, 1 write
    row("add " + shape_text(x) + " GB/s (x memcpy)")
        .cells.push_back(fmt("%.1f", add_bw) + fmt(" (%.2fx)", add_bw / copy_bw));

    // The softmax kernel is called directly: it is what loom::softmax runs after its
    // checks, and it links (and throws "no cpu implementation") before the op exists.
    std::string softmax_cell;
    try {
      const double secs = time_median(cfg, [&] { loom::backend_for(logits).softmax(logits, probs, false); });
      softmax_cell = fmt("%.1f", 2.0 * logits.numel() * sizeof(float) / secs * 1e-9);  // read + write
    } catch (const loom::Error& e) {
      if (std::strstr(e.what(), "has no cpu implementation") == nullptr) throw;
      softmax_cell = "n/a";
    }
    row("softmax " + shape_text(logits) + " GB/s (read+write)").cells.push_back(softmax_cell);
    row("CPU share of timed runs (100% = no contention)").cells.push_back(fmt("%.0f%%", g_share.percent()));
  }

  // ---- print -------------------------------------------------------------------------
  std::printf("loom bench_ops%s: median of %d timed runs after %d warm-up runs (wall clock;\n"
              "other processes on this machine add noise: compare medians, not digits)\n",
              cfg.quick ? " --quick" : "", cfg.reps, cfg.warmup);
  std::printf("matmul: * marks a transposed view (no copy), as the backward rule passes it\n");
  std::printf("CPU: %s; clock %s (%s); FMA probe: %s, %d chains of %d lanes, best of %d runs\n",
              loom::cpu_model_name().c_str(), clock.ghz > 0 ? fmt("%.2f GHz", clock.ghz).c_str() : "unknown",
              clock.ghz > 0 ? clock.source.c_str() : "no cpufreq, no cpu MHz", isa.name, isa.chains, isa.lanes,
              cfg.fma_repeats);
  std::printf("build: %s, __AVX512F__ %s, __AVX2__ %s, __FMA__ %s, OpenMP %s, Eigen %d.%d.%d (%s)\n",
#ifdef NDEBUG
              "NDEBUG",
#else
              "asserts on",
#endif
#ifdef __AVX512F__
              "defined",
#else
              "not defined",
#endif
#ifdef __AVX2__
              "defined",
#else
              "not defined",
#endif
#ifdef __FMA__
              "defined",
#else
              "not defined",
#endif
#ifdef _OPENMP
              std::to_string(_OPENMP).c_str(),
#else
              "off",
#endif
              EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, Eigen::SimdInstructionSetsInUse());
  std::printf("GEMM: %s\n", loom::cpu_gemm().description.c_str());
  int width = 0;
  for (const Row& r : rows) width = std::max(width, display_width(r.label));
  std::printf("\n%-*s", width, "");
  for (int t : thread_counts) std::printf("  %16s", (std::to_string(t) + (t == 1 ? " thread" : " threads")).c_str());
  std::printf("\n");
  for (const Row& r : rows) {
    if (r.left_out) continue;
    std::printf("%s%*s", r.label.c_str(), width - display_width(r.label), "");
    for (const std::string& c : r.cells) std::printf("  %16s", c.c_str());
    std::printf("\n");
  }
  if (!left_out.empty()) std::printf("\n");
  for (const std::string& why : left_out) std::printf("%s\n", why.c_str());
  const loom::AllocatorStats st = loom::cpu_allocator().stats();
  std::printf("\nallocator: active %.1f MiB, peak %.1f MiB, cached %.1f MiB, %zu system allocations"
              " (%zu in timed runs)\n",
              st.active_bytes / 1048576.0, st.peak_bytes / 1048576.0, st.cached_bytes / 1048576.0,
              st.system_allocations, g_timed_allocations);
  return ok ? 0 : 1;
}
