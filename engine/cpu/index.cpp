// index.cpp: CPU kernels (not written yet: each throws until implemented).
#include "engine/cpu/cpu_backend.h"

namespace loom {

void CpuBackend::index_select(const Tensor&, int, const Tensor&, const Tensor&) { missing("index_select"); }
void CpuBackend::index_add(const Tensor&, int, const Tensor&, const Tensor&) { missing("index_add"); }
void CpuBackend::gather(const Tensor&, int, const Tensor&, const Tensor&) { missing("gather"); }
void CpuBackend::scatter_add(const Tensor&, int, const Tensor&, const Tensor&) { missing("scatter_add"); }

}  // namespace loom
