// cpu_backend.h: the CPU implementation of every kernel in engine/backend.h.
//
// One class; its kernels (declared once, in engine/backend.h's LOOM_KERNELS)
// are defined in the stem files beside this header (elementwise.cpp,
// reduce.cpp, linalg.cpp, softmax.cpp, norm.cpp, index.cpp, conv.cpp, dpfp.cpp,
// attention.cpp, delta_rule.cpp, delta_rnn.cpp, feedback.cpp, recurrent_delta_net.cpp,
// random.cpp), so a reader finds each kernel next to its siblings.
#pragma once

#include "engine/backend.h"

namespace loom {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  Allocator& allocator() override { return cpu_allocator(); }

  LOOM_BACKEND_KERNELS  // every kernel of engine/backend.h, defined in the stem files
};

Backend& cpu_backend();

}  // namespace loom
