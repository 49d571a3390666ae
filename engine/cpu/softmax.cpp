// softmax.cpp: CPU kernels (not written yet: each throws until implemented).
#include "engine/cpu/cpu_backend.h"

namespace loom {

void CpuBackend::softmax(const Tensor&, const Tensor&, bool) { missing("softmax"); }
void CpuBackend::softmax_backward(const Tensor&, const Tensor&, const Tensor&, bool) { missing("softmax_backward"); }
void CpuBackend::cross_entropy(const Tensor&, const Tensor&, const Tensor&) { missing("cross_entropy"); }
void CpuBackend::cross_entropy_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  missing("cross_entropy_backward");
}

}  // namespace loom
