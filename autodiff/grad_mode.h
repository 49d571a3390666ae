// grad_mode.h: switching recording off for a scope.
//
//   { loom::NoGradGuard no_grad; ... }   // nothing in here is recorded
//
// Use it for evaluation, sampling and optimizer updates. It is per thread.
#pragma once

#include "engine/record.h"

namespace loom {

class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};

}  // namespace loom
