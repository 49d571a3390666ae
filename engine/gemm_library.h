// gemm_library.h: which library computes the CPU backend's matrix products.
//
// Eigen's GEMM is always there. OpenBLAS is used instead when loom was built
// with it (meson option `openblas`) and its kernels fit this CPU: OpenBLAS
// picks its kernels at run time from the CPU it detects, and in a virtual
// machine it can detect an old core ("Prescott") and run generic code 4x
// slower than Eigen. So it is chosen only when its kernels use vectors at least
// as wide as this build's (AVX2+FMA kernels for an AVX2 build, AVX-512 kernels
// for an AVX-512 build). LOOM_GEMM=eigen or LOOM_GEMM=openblas overrides the
// rule. The two libraries round differently, so the choice is printed by train
// and the benchmarks: a run's numbers are reproducible with the same choice.
#pragma once

#include <string>

namespace loom {

enum class GemmLibrary { eigen, openblas };

struct GemmChoice {
  GemmLibrary library = GemmLibrary::eigen;
  std::string description;  // e.g. "OpenBLAS 0.3.21 (its Zen kernels)", "Eigen 3.4.0 (...why not OpenBLAS)"
};

// The library in use: decided on first use (LOOM_GEMM, else the rule), then
// whatever set_cpu_gemm last set.
GemmChoice cpu_gemm();
GemmLibrary cpu_gemm_library();

// For tests and benchmarks that compare the two. Fails, saying why, when
// OpenBLAS is asked for and cannot be used.
void set_cpu_gemm(GemmLibrary library);

// OpenBLAS built in, and the flavour loaded can be called from several threads at once
// (Debian's pthread flavour: its serial one lacks the locks).
bool openblas_usable();

// The vector width of a library's kernels or of this build, in the order of
// the rule: OpenBLAS is used when its kernels' width is at least avx2 and at
// least the build's.
enum class VectorIsa { older, avx2, avx512 };
// The width of OpenBLAS's kernels from the core name it reports
// (openblas_get_corename): "Haswell" and "Zen" are AVX2+FMA, "SkylakeX",
// "Cooperlake" and "SapphireRapids" AVX-512; any other name counts as older.
VectorIsa openblas_kernel_isa(const std::string& core_name);
// The widest vectors this build compiles for (-march=native follows the CPU).
VectorIsa build_isa();
// The rule, without LOOM_GEMM: does OpenBLAS with these kernels beat Eigen?
bool openblas_kernels_fit(VectorIsa kernels, VectorIsa build);
// LOOM_GEMM's value: "" or "auto" (the rule), "eigen", "openblas"; anything else
// fails, naming the variable and the values it takes.
enum class GemmRequest { rule, eigen, openblas };
GemmRequest parse_gemm_request(const char* value);

}  // namespace loom
