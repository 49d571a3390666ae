// cases_delta_rule.cpp (being written)
#include "engine/ops.h"
#include "tests/op_table.h"

namespace loom::test {}  // namespace loom::test
