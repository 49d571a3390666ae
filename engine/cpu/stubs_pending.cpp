// Kernels not written yet: each throws until its stem file implements it.
#include "engine/cpu/cpu_backend.h"

namespace loom {
void CpuBackend::softmax(const Tensor&, const Tensor&, bool) { missing("softmax"); }
void CpuBackend::softmax_backward(const Tensor&, const Tensor&, const Tensor&, bool) { missing("softmax_backward"); }
void CpuBackend::cross_entropy(const Tensor&, const Tensor&, const Tensor&) { missing("cross_entropy"); }
void CpuBackend::cross_entropy_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  missing("cross_entropy_backward");
}
void CpuBackend::layer_norm(const Tensor&, const Tensor&, const Tensor&, double, const Tensor&, const Tensor&,
                            const Tensor&) {
  missing("layer_norm");
}
void CpuBackend::layer_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&, const Tensor&, const Tensor&) {
  missing("layer_norm_backward");
}
void CpuBackend::index_select(const Tensor&, int, const Tensor&, const Tensor&) { missing("index_select"); }
void CpuBackend::index_add(const Tensor&, int, const Tensor&, const Tensor&) { missing("index_add"); }
void CpuBackend::gather(const Tensor&, int, const Tensor&, const Tensor&) { missing("gather"); }
void CpuBackend::scatter_add(const Tensor&, int, const Tensor&, const Tensor&) { missing("scatter_add"); }
void CpuBackend::causal_conv1d(const Tensor&, const Tensor&, const Tensor&, const Tensor&) { missing("causal_conv1d"); }
void CpuBackend::causal_conv1d_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                        const Tensor&) {
  missing("causal_conv1d_backward");
}
}  // namespace loom
