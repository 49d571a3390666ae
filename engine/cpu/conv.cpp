// conv.cpp: CPU kernels (not written yet: each throws until implemented).
#include "engine/cpu/cpu_backend.h"

namespace loom {

void CpuBackend::causal_conv1d(const Tensor&, const Tensor&, const Tensor&, const Tensor&) { missing("causal_conv1d"); }
void CpuBackend::causal_conv1d_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                        const Tensor&) {
  missing("causal_conv1d_backward");
}

}  // namespace loom
