// feedback.cpp: CPU kernels (being written)
#include "engine/cpu/cpu_backend.h"

namespace loom {}  // namespace loom
