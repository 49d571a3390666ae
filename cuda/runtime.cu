#include "cuda/runtime.h"

#include "cuda/init_check.h"

#include <cstdlib>
#include <cstring>

#include "engine/device.h"

namespace loom {

namespace cuda {

void throw_error(cudaError_t status, const char* op, const char* call) {
  // Clear the sticky "last error" of a failed launch so the next op starts clean
  // (errors that corrupt the context stay sticky whatever we do).
  (void)cudaGetLastError();
  LOOM_FAIL(op, ": ", call, " failed: ", cudaGetErrorString(status), " (", cudaGetErrorName(status), ")");
}

void check_launch(const char* op) {
  LOOM_CUDA_CHECK(cudaGetLastError(), op);
  static const bool sync_each_launch = [] {
    const char* v = std::getenv("LOOM_CUDA_SYNC");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }();
  if (sync_each_launch) LOOM_CUDA_CHECK(cudaStreamSynchronize(stream()), op);
}

namespace {

struct Runtime {
  cudaStream_t stream = nullptr;
  int sm_count = 1;
  int shared_optin = 48 * 1024;  // the most dynamic shared memory a block may opt in to
};

Runtime& runtime() {
  // Created on first use, never destroyed: tensors freed after main returns may
  // still need the stream, and the CUDA runtime may already be torn down then.
  static Runtime* rt = [] {
    LOOM_CHECK(cuda_available(), "cuda: no usable CUDA device: ", cuda_init_report().message,
               "; use Device::cpu or check nvidia-smi");
    auto* r = new Runtime();
    int device = 0;
    LOOM_CUDA_CHECK(cudaGetDevice(&device), "cuda runtime");
    LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&r->sm_count, cudaDevAttrMultiProcessorCount, device), "cuda runtime");
    LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&r->shared_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                    "cuda runtime");
    // Non-blocking: the legacy default stream (used by other libraries) does not
    // serialise against ours.
    LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&r->stream, cudaStreamNonBlocking), "cuda runtime");
    return r;
  }();
  return *rt;
}

}  // namespace

cudaStream_t stream() { return runtime().stream; }

int grid_for(int64_t n) {
  const int64_t needed = (n + kBlockThreads - 1) / kBlockThreads;
  const int64_t full = static_cast<int64_t>(runtime().sm_count) * 8;  // 8 resident blocks of 256 per SM
  const int64_t blocks = needed < full ? needed : full;
  return static_cast<int>(blocks > 0 ? blocks : 1);
}

void reserve_shared_memory(const void* kernel, size_t bytes, const char* op, const std::string& what) {
  // The limits cover the kernel's static shared memory (block reductions) too.
  cudaFuncAttributes attributes{};
  LOOM_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel), op);
  constexpr size_t kDefault = 48 * 1024;  // available to every kernel without opting in
  const size_t limit = static_cast<size_t>(runtime().shared_optin), total = bytes + attributes.sharedSizeBytes;
  LOOM_CHECK(total <= limit, op, " on cuda: ", what, " needs ", total,
             " bytes of shared memory per thread block, more than this GPU allows (", limit, " bytes)");
  if (total > kDefault)
    LOOM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
                    op);
}

static_assert(kCudaSuccess == cudaSuccess);
static_assert(kCudaErrorInsufficientDriver == cudaErrorInsufficientDriver);
static_assert(kCudaErrorNoDevice == cudaErrorNoDevice);

const CudaInitReport& cuda_init_report() {
  // Asked once. cudaGetDeviceCount returns an error (rather than aborting) when
  // CUDA cannot start; init_check.h decides which errors mean "no CUDA here".
  static const CudaInitReport report = [] {
    CudaInitFacts facts;
    if (cudaDriverGetVersion(&facts.driver_version) != cudaSuccess) facts.driver_version = 0;
    if (cudaRuntimeGetVersion(&facts.runtime_version) != cudaSuccess) facts.runtime_version = 0;
    const cudaError_t status = cudaGetDeviceCount(&facts.device_count);
    facts.device_count_status = static_cast<int>(status);
    if (status != cudaSuccess) (void)cudaGetLastError();
    return CudaInitReport{classify_cuda_init(facts), cuda_init_message(facts, cudaGetErrorName(status))};
  }();
  return report;
}

}  // namespace cuda

bool cuda_available() { return cuda::cuda_init_report().verdict == cuda::CudaInit::ready; }

}  // namespace loom
