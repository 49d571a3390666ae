// model_test_utils.h: helpers shared by the optimizer, config, checkpoint and
// training tests: a temporary directory, error capture, and a tiny Module.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "tests/test_util.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "models/blocks/module.h"

namespace loom::test {

// A purely relative comparison. doctest's Approx adds 1 to the magnitude it
// scales epsilon by, which makes it absolute for small values (a learning
// rate of 5e-7 would match 0); the tiny scale here only lets 0 == 0 pass.
inline doctest::Approx relative(double value, double epsilon = 1e-6) {
  return doctest::Approx(value).epsilon(epsilon).scale(1e-300);
}

// A two-level module with parameters of several shapes and a buffer, named like
// a state_dict: "weight", "bias", "inner.scale", "inner.table" (buffer).
struct TinyModule : models::Module {
  struct Inner : models::Module {
    Tensor scale, table;
    explicit Inner(Generator& gen) {
      scale = register_parameter("scale", normal({4}, 0, 1, gen));
      table = register_buffer("table", normal({2, 2}, 0, 1, gen));
    }
  };
  Tensor weight, bias;
  Inner inner;
  explicit TinyModule(Generator&& gen) : TinyModule(gen) {}
  explicit TinyModule(Generator& gen) : inner(gen) {
    weight = register_parameter("weight", normal({3, 4}, 0, 1, gen));
    bias = register_parameter("bias", normal({3}, 0, 1, gen));
    register_module("inner", inner);
  }
};

}  // namespace loom::test
