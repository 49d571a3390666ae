// norm.cpp: CPU kernels (not written yet: each throws until implemented).
#include "engine/cpu/cpu_backend.h"

namespace loom {

void CpuBackend::layer_norm(const Tensor&, const Tensor&, const Tensor&, double, const Tensor&, const Tensor&,
                            const Tensor&) {
  missing("layer_norm");
}
void CpuBackend::layer_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&, const Tensor&, const Tensor&) {
  missing("layer_norm_backward");
}

}  // namespace loom
