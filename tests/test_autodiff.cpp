// test_autodiff.cpp: the graph machinery around the rules: accumulation,
// reuse, NoGradGuard, detach, freeing, in-place detection, deep graphs.
#include <doctest/doctest.h>

#include <cmath>

#include "autodiff/backward.h"
#include "autodiff/grad_mode.h"
#include "engine/ops.h"

namespace loom {

namespace {
Tensor leaf(std::vector<double> v, Shape s) {
  Tensor t = Tensor::from_vector(v, s);
  t.requires_grad_();
  return t;
}
}  // namespace

TEST_CASE("autodiff: a reused input gets the sum of its gradients") {
  Tensor x = leaf({2.0, 3.0}, {2});
  const Tensor y = sum(x * x + x * 3.0);  // dy/dx = 2x + 3
  y.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{7.0, 9.0});
}

TEST_CASE("autodiff: gradients accumulate across backward calls until zeroed") {
  Tensor x = leaf({1.0, -1.0}, {2});
  sum(x * 2.0).backward();
  sum(x * 2.0).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{4.0, 4.0});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  sum(x).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{1.0, 1.0});
}

TEST_CASE("autodiff: broadcast gradients are summed back to the input's shape") {
  Tensor a = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = leaf({10, 20, 30}, {3});
  Tensor s = leaf({2}, {});
  sum((a + b) * s).backward();
  CHECK(b.grad().shape() == Shape{3});
  CHECK(b.grad().to_vector<double>() == std::vector<double>{4, 4, 4});
  CHECK(s.grad().shape() == Shape{});
  CHECK(s.grad().item() == doctest::Approx(21 + 2 * 60));
}

TEST_CASE("autodiff: gradients flow through non-contiguous views to the base") {
  Tensor base = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor v = base.transpose(0, 1).narrow(0, 1, 2);  // base[:, 1:3] transposed
  sum(v * v).backward();
  CHECK(base.grad().to_vector<double>() == std::vector<double>{0, 4, 6, 0, 10, 12});
}

TEST_CASE("autodiff: NoGradGuard and detach record nothing") {
  Tensor x = leaf({1.0}, {1});
  {
    NoGradGuard no_grad;
    const Tensor y = x * 2.0;
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(y.grad_fn());
  }
  const Tensor y = x * 2.0;
  CHECK(y.requires_grad());
  const Tensor d = y.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.same_storage(y));
  CHECK_THROWS_AS((d * 3.0).backward(), Error);
}

TEST_CASE("autodiff: a graph is freed by backward unless retained") {
  Tensor x = leaf({1.0, 2.0}, {2});
  const Tensor y = sum(exp(x));
  y.backward(/*retain_graph=*/true);
  y.backward();
  CHECK(x.grad().to_vector<double>()[0] == doctest::Approx(2 * std::exp(1.0)));
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("already freed"), Error);
}

TEST_CASE("autodiff: an in-place write to a saved tensor is detected") {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor c = Tensor::from_vector<double>({3.0, 4.0}, {2});
  const Tensor y = sum(x * c);  // mul saves c for x's gradient
  fill_(c, 0.0);
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("modified in place"), Error);
}

TEST_CASE("autodiff: an intermediate's data is kept only when its rule needs it") {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor mid = x + 1.0;
  std::weak_ptr<Storage> mid_storage = mid.storage();
  const Tensor y = sum(mid + 2.0);  // add's rule needs no data: mid can go
  mid = Tensor();
  CHECK(mid_storage.expired());

  Tensor mid2 = x + 1.0;
  std::weak_ptr<Storage> mid2_storage = mid2.storage();
  const Tensor z = sum(mid2 * mid2);  // mul's rule needs its inputs: mid2 stays
  mid2 = Tensor();
  CHECK_FALSE(mid2_storage.expired());
  z.backward();  // ...until backward has used it
  CHECK(mid2_storage.expired());
  y.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{1.0 + 4.0, 1.0 + 6.0});
}

TEST_CASE("autodiff: deep graphs do not overflow the stack") {
  Tensor x = leaf({1.0}, {1});
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = y + 1e-5;
  CHECK(autodiff::graph_size(y) == 100000);
  sum(y).backward();
  CHECK(x.grad().item() == 1.0);
  // Destroying a long chain must not recurse 100000 frames deep either.
  y = Tensor();
}

TEST_CASE("autodiff: a gradient handed to two nodes is not summed into in place") {
  // z = p + q hands one gradient tensor to both p and q; p·q then adds more to each.
  // Adding that into the shared tensor in place would change q's pending gradient
  // too. w = Σ (p·q + p + q) with p = 3x, q = 5x: dw/dx = 30x + 8. Both orders of
  // the outer sum, so that either consumer of p and q can be walked first.
  for (const bool product_first : {true, false}) {
    Tensor x = leaf({1.0, -2.0}, {2});
    const Tensor p = x * 3.0, q = x * 5.0;
    const Tensor product = p * q, z = p + q;
    const Tensor w = product_first ? sum(product + z) : sum(z + product);
    w.backward();
    CHECK(x.grad().to_vector<double>() == std::vector<double>{38.0, -52.0});
  }
}

TEST_CASE("autodiff: the gradient of a leaf does not alias other tensors") {
  Tensor a = leaf({1.0, 2.0}, {2});
  Tensor b = leaf({3.0, 4.0}, {2});
  sum(a + b).backward();  // add passes the same gradient to both
  CHECK_FALSE(a.grad().same_storage(b.grad()));
  NoGradGuard no_grad;
  mul_(a.grad(), 10.0);
  CHECK(b.grad().to_vector<double>() == std::vector<double>{1.0, 1.0});
}

}  // namespace loom
