// delta_rule.cpp (being written)
#include "engine/ops/op_helpers.h"

namespace loom {}  // namespace loom
