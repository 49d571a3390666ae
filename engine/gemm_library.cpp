// gemm_library.cpp: the choice between Eigen's GEMM and OpenBLAS's (see the header).
#include "engine/gemm_library.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include <Eigen/Core>

#include "engine/error.h"

#ifdef LOOM_OPENBLAS
#include <cblas.h>
#endif

namespace loom {

namespace {

std::string eigen_name() {
  return detail::concat("Eigen ", EIGEN_WORLD_VERSION, ".", EIGEN_MAJOR_VERSION, ".", EIGEN_MINOR_VERSION);
}

#ifdef LOOM_OPENBLAS
// "OpenBLAS 0.3.21 (its Zen kernels<note>)": the first two words of its build
// configuration, and the core it took its kernels for.
std::string openblas_description(const char* note = "") {
  const std::string config = openblas_get_config();
  const size_t first = config.find(' '), second = first == std::string::npos ? first : config.find(' ', first + 1);
  const std::string name = second == std::string::npos ? config : config.substr(0, second);
  return detail::concat(name, " (its ", openblas_get_corename(), " kernels", note, ")");
}
#endif

const char* isa_name(VectorIsa isa) {
  switch (isa) {
    case VectorIsa::avx512: return "AVX-512";
    case VectorIsa::avx2: return "AVX2+FMA";
    case VectorIsa::older: break;
  }
  return "pre-AVX2";
}

// Why OpenBLAS cannot be used here ("" when it can). Asked once.
std::string openblas_obstacle() {
#ifndef LOOM_OPENBLAS
  return "this build of loom has no OpenBLAS (install libopenblas-pthread-dev and reconfigure)";
#else
  // loom's threads call OpenBLAS at once, each for its own block, so it must
  // run one thread per call and be safe to call from several threads. Debian
  // builds three flavours (a build links the one pkg-config's openblas.pc
  // names, and its run path points at that flavour's folder): the pthread one is safe; the serial one is
  // built without the locks (concurrent small products came out wrong, in
  // tests/test_gemm_library.cpp and in a scratch program); the OpenMP one is
  // not meant to be called from inside another OpenMP parallel region.
  openblas_set_num_threads(1);
  if (const int threading = openblas_get_parallel(); threading != 1)
    return detail::concat("the OpenBLAS loaded is its ", threading == 0 ? "serial" : "OpenMP",
                          " flavour, which loom's threads cannot call at once; install libopenblas0-pthread");
  return "";
#endif
}

const std::string& obstacle() {
  static const std::string reason = openblas_obstacle();
  return reason;
}

GemmChoice decide() {
  const GemmRequest request = parse_gemm_request(std::getenv("LOOM_GEMM"));
  if (request == GemmRequest::eigen) return {GemmLibrary::eigen, eigen_name() + " (LOOM_GEMM=eigen)"};
  if (!obstacle().empty()) {
    LOOM_CHECK(request != GemmRequest::openblas, "LOOM_GEMM=openblas: ", obstacle(), "; or unset LOOM_GEMM");
    return {GemmLibrary::eigen, detail::concat(eigen_name(), " (", obstacle(), ")")};
  }
#ifdef LOOM_OPENBLAS
  if (request == GemmRequest::openblas) return {GemmLibrary::openblas, openblas_description("; LOOM_GEMM=openblas")};
  const std::string core = openblas_get_corename();
  const VectorIsa kernels = openblas_kernel_isa(core), build = build_isa();
  if (openblas_kernels_fit(kernels, build)) return {GemmLibrary::openblas, openblas_description()};
  return {GemmLibrary::eigen, detail::concat(eigen_name(), " (OpenBLAS detected a ", core, " core, whose ",
                                             isa_name(kernels), " kernels are narrower than this ", isa_name(build),
                                             " build's; LOOM_GEMM=openblas overrides)")};
#else
  return {GemmLibrary::eigen, eigen_name()};  // unreachable: without OpenBLAS there is an obstacle
#endif
}

const GemmChoice& decided() {
  static const GemmChoice choice = decide();
  return choice;
}

// -1: the decided choice; else a GemmLibrary set by set_cpu_gemm.
std::atomic<int> override_library{-1};

}  // namespace

GemmRequest parse_gemm_request(const char* value) {
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) return GemmRequest::rule;
  if (std::strcmp(value, "eigen") == 0) return GemmRequest::eigen;
  if (std::strcmp(value, "openblas") == 0) return GemmRequest::openblas;
  LOOM_FAIL("LOOM_GEMM=", value, ": expected eigen, openblas or auto (or unset)");
}

VectorIsa openblas_kernel_isa(const std::string& core_name) {
  for (const char* name : {"SkylakeX", "Cooperlake", "SapphireRapids"})
    if (core_name == name) return VectorIsa::avx512;
  for (const char* name : {"Haswell", "Zen"})
    if (core_name == name) return VectorIsa::avx2;
  return VectorIsa::older;
}

VectorIsa build_isa() {
#if defined(__AVX512F__)
  return VectorIsa::avx512;
#elif defined(__AVX2__) && defined(__FMA__)
  return VectorIsa::avx2;
#else
  return VectorIsa::older;
#endif
}

bool openblas_kernels_fit(VectorIsa kernels, VectorIsa build) {
  return kernels >= VectorIsa::avx2 && kernels >= build;
}

bool openblas_usable() { return obstacle().empty(); }

GemmChoice cpu_gemm() {
  const int forced = override_library.load(std::memory_order_relaxed);
  if (forced < 0) return decided();
  if (static_cast<GemmLibrary>(forced) == decided().library) return decided();
  if (static_cast<GemmLibrary>(forced) == GemmLibrary::eigen) return {GemmLibrary::eigen, eigen_name() + " (set by the program)"};
#ifdef LOOM_OPENBLAS
  return {GemmLibrary::openblas, openblas_description("; set by the program")};
#else
  return {GemmLibrary::eigen, eigen_name()};  // unreachable: set_cpu_gemm refuses
#endif
}

GemmLibrary cpu_gemm_library() {
  const int forced = override_library.load(std::memory_order_relaxed);
  return forced < 0 ? decided().library : static_cast<GemmLibrary>(forced);
}

void set_cpu_gemm(GemmLibrary library) {
  LOOM_CHECK(library == GemmLibrary::eigen || openblas_usable(), "set_cpu_gemm: OpenBLAS asked for, but ", obstacle());
  (void)decided();
  override_library.store(static_cast<int>(library), std::memory_order_relaxed);
}

}  // namespace loom
