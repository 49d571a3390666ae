// test_autodiff.cpp: the graph machinery around the rules: accumulation,
// reuse, NoGradGuard, detach, freeing, in-place detection, deep graphs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "autodiff/backward.h"
#include "autodiff/grad_mode.h"
#include "autodiff/gradcheck.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/record.h"

namespace loom {

namespace {
Tensor leaf(std::vector<double> v, Shape s) {
  Tensor t = Tensor::from_vector(v, s);
  t.requires_grad_();
  return t;
}

// The shapes every add_ wrote, while a SliceAddWatch lives.
thread_local std::vector<Shape>* t_add_shapes = nullptr;
void watch_adds(OpId op, const Tensor& output) {
  if (op == OpId::add_ && t_add_shapes) t_add_shapes->push_back(output.shape());
}
struct SliceAddWatch {
  std::vector<Shape> shapes;
  OpWatcher previous;
  SliceAddWatch() : previous(set_op_watcher(&watch_adds)) { t_add_shapes = &shapes; }
  ~SliceAddWatch() {
    t_add_shapes = nullptr;
    set_op_watcher(previous);
  }
};
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

TEST_CASE("autodiff: the slices of one tensor add their gradients into its windows") {
  // y = 2x is cut into three slices of its columns, as a fused projection is cut
  // into q, k, v; each slice's loss weight is its own. dx = 2 · weight of the
  // column's slice. The first slice walked makes y's gradient buffer; the other
  // two add into their windows of it (engine/record.h, AddIntoFn), so no add_
  // writes the whole [2, 6].
  Tensor x = leaf({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 6});
  const Tensor y = x * 2.0;
  const Tensor a = narrow(y, 1, 0, 1), b = narrow(y, 1, 1, 3), c = narrow(y, 1, 4, 2);
  const Tensor loss = sum(a * 3.0) + sum(b * 5.0) + sum(c * 7.0);
  SliceAddWatch watch;
  loss.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{6, 10, 10, 10, 14, 14, 6, 10, 10, 10, 14, 14});
  CHECK(watch.shapes.size() == 2);
  for (const Shape& shape : watch.shapes) CHECK(shape != Shape{2, 6});
}

TEST_CASE("autodiff: overlapping and nested slices, beside a whole-tensor use, against finite differences") {
  // Windows that overlap (their sums meet in the buffer), a slice of a slice, and
  // y itself read whole by a product: every order in which the walker meets them.
  const autodiff::TensorFn f = [](const std::vector<Tensor>& in) {
    const Tensor y = in[0] * in[1];
    const Tensor a = narrow(y, 1, 0, 4), b = narrow(y, 1, 2, 3), inner = narrow(narrow(y, 1, 1, 4), 0, 1, 2);
    return sum(a * a, {1}) + sum(exp(b), {1}) * 0.5 + sum(y * y * y, {1}) + sum(inner * inner);
  };
  Tensor x = leaf({0.3, -0.7, 1.1, 0.2, -0.4, 0.9, 0.5, -1.2, 0.8, 0.1, -0.6, 0.4, 0.7, 0.2, -0.3}, {3, 5});
  Tensor w = leaf({0.5, -1.5, 2.0, 0.25, 1.0}, {5});
  const autodiff::GradcheckResult result = autodiff::gradcheck(f, {x, w});
  CHECK_MESSAGE(result.ok, result.report);
}

TEST_CASE("autodiff: a slice's gradient is not added into a buffer another gradient shares") {
  // z = p + q hands one tensor to p's and q's sums; a slice of p then must not
  // add into it in place, or q's gradient would change too. With p = 3x, q = 5x,
  // w = Σ (p + q) + Σ 2 p[:, 1:]: dw/dx = 8 + 6 on the columns of the slice.
  for (const bool slice_first : {true, false}) {
    Tensor x = leaf({1.0, -2.0, 3.0}, {1, 3});
    const Tensor p = x * 3.0, q = x * 5.0;
    const Tensor z = sum(p + q), s = sum(narrow(p, 1, 1, 2) * 2.0);
    const Tensor w = slice_first ? s + z : z + s;
    w.backward();
    CHECK(x.grad().to_vector<double>() == std::vector<double>{8.0, 14.0, 14.0});
  }
}

TEST_CASE("autodiff: relu's and squared_relu's backward kernels give their compositions' bits") {
  // Each rule runs one kernel for what was a composition of engine ops (engine/
  // elementwise_functors.h, ReluBackward): relu's g * gt(x, 0), squared_relu's
  // g * relu(x) * 2. Both dtypes, exact zeros in x (where the mask decides), and
  // a gradient that is a transposed view (the kernel's strided path).
  for (const DType dtype : {DType::f32, DType::f64}) {
    Generator gen(11);
    Tensor x = cast(uniform({37, 19}, -1, 1, gen), dtype);
    {
      NoGradGuard no_grad;
      fill_(narrow(x, 0, 5, 3), 0.0);
    }
    const Tensor g = transpose(cast(uniform({19, 37}, -2, 2, gen), dtype), 0, 1);
    for (const bool squared : {false, true}) {
      Tensor input = x.detach();
      input.requires_grad_();
      (squared ? squared_relu(input) : relu(input)).backward(g);
      NoGradGuard no_grad;
      const Tensor composed = squared ? g * relu(x) * 2.0 : g * gt(x, 0.0);
      // memcmp, not ==: a -0 where the composition gives +0 is another bit too.
      const std::vector<double> got = cast(input.grad(), DType::f64).to_vector<double>();
      const std::vector<double> want = cast(composed, DType::f64).to_vector<double>();
      REQUIRE(got.size() == want.size());
      CHECK_MESSAGE(std::memcmp(got.data(), want.data(), got.size() * sizeof(double)) == 0,
                    (squared ? "squared_relu" : "relu"), " in ", dtype_name(dtype));
    }
  }
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
