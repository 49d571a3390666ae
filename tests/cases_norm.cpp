// cases_norm.cpp: op-table cases for the norm ops (not written yet).
#include "engine/ops.h"
#include "tests/op_table.h"

namespace loom::test {}  // namespace loom::test
