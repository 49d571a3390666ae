// cuda_backend.h: the CUDA implementation of the kernels in engine/backend.h.
//
// backend_for(Device::cuda) returns this backend (cuda_backend() below). Its
// memory and host copies are in backend.cu; its kernels in the stem files
// beside this header, one per stem of the top-level meson.build's
// `kernel_stems` (the build lists them from there), named as in engine/cpu/ so
// the two implementations can be read side by side. The kernels are declared
// once, in engine/op_list.h's LOOM_KERNELS; a kernel without a definition here
// fails the link of every program built with the CUDA backend.
#pragma once

#include "engine/backend.h"

namespace loom::cuda {

class CudaBackend final : public Backend {
 public:
  Device device() const override { return Device::cuda; }
  Allocator& allocator() override;
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void synchronize() override;

  LOOM_BACKEND_KERNELS  // every kernel of engine/backend.h, defined in the .cu files
};

CudaBackend& backend();

// Lets float32 matmuls use TF32 tensor cores (faster, about 1e-3 relative error).
// Off by default, so CUDA results match the CPU's to float32 rounding.
void set_matmul_tf32(bool allow);

}  // namespace loom::cuda
