// test_errors.cpp: bad input throws loom::Error whose message names the op and
// the offending shapes or values (index/softmax/norm/conv errors are tested
// beside their cases).
#include <doctest/doctest.h>

#include "tests/test_util.h"
#include "engine/ops.h"

namespace loom {

using test::contains;
using test::error_of;

TEST_CASE("errors: shape mismatches name the op and both shapes") {
  const Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
  const std::string msg = error_of([&] { add(a, b); });
  CHECK(contains(msg, "add"));
  CHECK(contains(msg, "[2, 3]"));
  CHECK(contains(msg, "[4]"));
  const std::string mm = error_of([&] { matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})); });
  CHECK(contains(mm, "matmul"));
  CHECK(contains(mm, "[2, 3]"));
  CHECK(contains(mm, "[4, 5]"));
  const std::string cat = error_of([&] { concat({Tensor::zeros({2, 3}), Tensor::zeros({2, 4})}, 0); });
  CHECK(contains(cat, "concat"));
  CHECK(contains(cat, "[2, 4]"));
  const std::string st = error_of([&] { stack({Tensor::zeros({2}), Tensor::zeros({3})}, 0); });
  CHECK(contains(st, "stack"));
  CHECK(contains(st, "[3]"));
  CHECK(contains(error_of([&] { reshape(a, {4, 2}); }), "[2, 3]"));
  CHECK(contains(error_of([&] { expand(a, {3, 3}); }), "expand"));
  CHECK(contains(error_of([&] { masked_fill(a, Tensor::zeros({3, 3}), 0.0); }), "masked_fill"));
}

TEST_CASE("errors: a stepped matmul names a wrong input and buffers that are full") {
  Tensor w = Tensor::zeros({3, 2});
  w.requires_grad_();
  StepWeight stepped = step_weight(w, 4);
  const std::string shape = error_of([&] { stepped_matmul(Tensor::zeros({2, 5}), stepped); });
  CHECK(contains(shape, "stepped_matmul"));
  CHECK(contains(shape, "[2, 5]"));
  CHECK(contains(shape, "[3, 2]"));
  stepped_matmul(Tensor::zeros({3, 3}), stepped);
  const std::string full = error_of([&] { stepped_matmul(Tensor::zeros({2, 3}), stepped); });
  CHECK(contains(full, "full"));
  CHECK(contains(full, "capacity 4"));
  CHECK(stepped.rows == 3);  // the refused step filed nothing
  CHECK(contains(error_of([&] { step_weight(Tensor::zeros({3}), 2); }), "step_weight"));
  const std::string bias = error_of([&] { step_weight(w, 4, Tensor::zeros({3})); });
  CHECK(contains(bias, "bias must be [2]"));
  CHECK(contains(bias, "[3]"));
}

TEST_CASE("errors: a bad axis names the op, the axis and the rank") {
  const Tensor a = Tensor::zeros({2, 3});
  for (const std::string& msg : {error_of([&] { sum(a, {2}); }), error_of([&] { transpose(a, 0, 5); }),
                                 error_of([&] { narrow(a, -3, 0, 1); }), error_of([&] { argmax(a, 2); })}) {
    CHECK(contains(msg, "axis"));
    CHECK(contains(msg, "2 dimensions"));
  }
  CHECK(contains(error_of([&] { sum(a, {2}); }), "sum"));
  CHECK(contains(error_of([&] { narrow(a, 1, 2, 2); }), "out of bounds"));
  CHECK(contains(error_of([&] { squeeze(a, 0); }), "squeeze"));
  CHECK(contains(error_of([&] { permute(a, {0, 0}); }), "permute"));
  CHECK(contains(error_of([&] { sum(a, {1, -1}); }), "repeated axis"));
}

TEST_CASE("errors: dtype and device mismatches name both tensors") {
  const Tensor f = Tensor::zeros({2}, DType::f32), d = Tensor::zeros({2}, DType::f64);
  const std::string msg = error_of([&] { mul(f, d); });
  CHECK(contains(msg, "mul"));
  CHECK(contains(msg, "float32[2]"));
  CHECK(contains(msg, "float64[2]"));
  const Tensor ids = Tensor::zeros({2}, DType::i64);
  CHECK(contains(error_of([&] { exp(ids); }), "int64"));
  CHECK(contains(error_of([&] { Tensor x = ids; x.requires_grad_(); }), "floating-point"));
  CHECK(contains(error_of([&] { f.data<double>(); }), "float32"));
  CHECK(contains(error_of([&] { Tensor::zeros({2}, DType::f32, Device::cuda); }), "CUDA"));
}

TEST_CASE("errors: bad values name the op and the value") {
  Generator gen(1);
  CHECK(contains(error_of([&] { dropout(Tensor::zeros({2}), 1.5, gen); }), "1.5"));
  CHECK(contains(error_of([&] { relu_dropout(Tensor::zeros({2}), 1.0, gen); }), "relu_dropout: probability 1"));
  CHECK(contains(error_of([&] { relu_dropout(Tensor::zeros({2}, DType::i64), 0.5, gen); }), "relu_dropout"));
  CHECK(contains(error_of([&] { bernoulli({2}, -0.1, gen); }), "-0.1"));
  CHECK(contains(error_of([&] { Tensor::empty({2, -1}); }), "[2, -1]"));
  CHECK(contains(error_of([&] { Tensor::zeros({2}).item(); }), "one element"));
  CHECK(contains(error_of([&] { Tensor().shape(); }), "undefined tensor"));
  CHECK(contains(error_of([&] { sum(Tensor::zeros({2, 2})).backward(); }), "does not require grad"));
  Tensor x = Tensor::zeros({2}, DType::f64);
  x.requires_grad_();
  CHECK(contains(error_of([&] { (x * 2.0).backward(); }), "2 elements"));
}

}  // namespace loom
