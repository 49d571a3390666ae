// eigen.h: Eigen for the CPU kernels, included in one place.
//
// GCC 12 warns inside its own AVX-512 intrinsics as Eigen uses them
// (-Wmaybe-uninitialized); the warnings are not about our code.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>
#pragma GCC diagnostic pop
