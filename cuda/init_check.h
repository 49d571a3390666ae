// init_check.h: whether CUDA can be used here, and what to say when it cannot.
//
// Pure C++ (no CUDA header), so that the decision is tested in test_loom on any
// machine by feeding it error codes. runtime.cu gathers the real facts once.
//
// Three outcomes, and only the second may be reported as "skipped":
//   ready   - a driver, a device, the runtime initialised;
//   absent  - no NVIDIA driver (cudaDriverGetVersion reports 0; cudaGetDeviceCount
//             then says cudaErrorInsufficientDriver), or a driver but no device
//             (cudaErrorNoDevice, or a device count of 0);
//   broken  - anything else: a driver older than the runtime (cudaErrorInsufficientDriver
//             with a driver present), a fabric manager that is down
//             (cudaErrorSystemNotReady), a busy or prohibited device, a mismatched
//             driver/kernel module... A CUDA machine that cannot run CUDA must fail
//             its tests loudly, not skip them.
#pragma once

#include <cstdio>
#include <cstring>
#include <string>

namespace loom::cuda {

// The cudaError_t values the decision needs; runtime.cu checks them against
// cuda_runtime.h with static_assert.
inline constexpr int kCudaSuccess = 0;
inline constexpr int kCudaErrorInsufficientDriver = 35;
inline constexpr int kCudaErrorNoDevice = 100;

enum class CudaInit { ready, absent, broken };

struct CudaInitFacts {
  int driver_version = 0;      // cudaDriverGetVersion: 1000*major + 10*minor, 0 without a driver
  int runtime_version = 0;     // cudaRuntimeGetVersion
  int device_count_status = 0; // what cudaGetDeviceCount returned (a cudaError_t)
  int device_count = 0;        // the count it reported (meaningful on success)
};

inline CudaInit classify_cuda_init(const CudaInitFacts& f) {
  if (f.driver_version <= 0) return CudaInit::absent;  // no driver at all
  if (f.device_count_status == kCudaErrorNoDevice) return CudaInit::absent;
  if (f.device_count_status == kCudaSuccess) return f.device_count > 0 ? CudaInit::ready : CudaInit::absent;
  return CudaInit::broken;
}

// 13000 -> "13.0"; 0 -> "none".
inline std::string cuda_version_text(int version) {
  if (version <= 0) return "none";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%d.%d", version / 1000, (version % 1000) / 10);
  return buffer;
}

// What to tell the user; `error_name` is cudaGetErrorName(device_count_status).
inline std::string cuda_init_message(const CudaInitFacts& f, const std::string& error_name) {
  const std::string versions =
      "driver supports CUDA " + cuda_version_text(f.driver_version) + ", runtime is CUDA " + cuda_version_text(f.runtime_version);
  switch (classify_cuda_init(f)) {
    case CudaInit::ready:
      return std::to_string(f.device_count) + " CUDA device(s); " + versions;
    case CudaInit::absent:
      if (f.driver_version <= 0) return "no NVIDIA driver is installed (" + versions + ")";
      return "the NVIDIA driver sees no CUDA device (" + error_name + "; " + versions + ")";
    case CudaInit::broken:
      break;
  }
  std::string message = "CUDA is installed but cannot start: cudaGetDeviceCount failed with " + error_name + " (" +
                        versions + ")";
  if (f.device_count_status == kCudaErrorInsufficientDriver)
    message += "; the driver is older than the runtime: update the driver";
  return message;
}

struct CudaInitReport {
  CudaInit verdict = CudaInit::absent;
  std::string message;
};
// Asked once, on first use (defined in runtime.cu; only in builds with CUDA).
const CudaInitReport& cuda_init_report();

// NVIDIA_TF32_OVERRIDE is read by cuBLAS itself, below loom's math-mode choice.
// "0" forbids TF32 everywhere, which only confirms loom's default (plain float32
// matmuls). Any other value is outside what loom's CPU-parity tolerances were
// set for (1e-5 relative; TF32 keeps 10 mantissa bits, about 1e-3).
enum class Tf32Override { unset, forced_off, other };
inline Tf32Override tf32_override(const char* value) {
  if (value == nullptr) return Tf32Override::unset;
  return std::strcmp(value, "0") == 0 ? Tf32Override::forced_off : Tf32Override::other;
}

}  // namespace loom::cuda
