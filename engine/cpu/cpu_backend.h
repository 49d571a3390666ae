// cpu_backend.h: the CPU implementation of every kernel in engine/backend.h.
//
// One class; its kernels (declared once, in engine/op_list.h's LOOM_KERNELS)
// are defined in the stem files beside this header, one per stem of the
// top-level meson.build's `kernel_stems` (the build lists them from there), so
// a reader finds each kernel next to its siblings.
#pragma once

#include "engine/backend.h"

namespace loom {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  Allocator& allocator() override { return cpu_allocator(); }

  LOOM_BACKEND_KERNELS  // every kernel of engine/backend.h, defined in the stem files

  // The optional panel kernels (engine/cpu/panel_matmul.h), in linalg.cpp.
  int64_t panel_width(DType dtype) const override;
  void pack_panels(const Tensor& w, const Tensor& panels) override;
  void matmul_panels(const Tensor& a, const Tensor& panels, const Tensor& out, bool accumulate) override;
};

Backend& cpu_backend();

}  // namespace loom
