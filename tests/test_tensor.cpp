// test_tensor.cpp: tensor creation, views sharing storage, strides, copies.
#include <doctest/doctest.h>

#include "engine/ops.h"

namespace loom {

TEST_CASE("tensor: creation, shape and element access") {
  const Tensor t = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(t.shape() == Shape{2, 3});
  CHECK(t.strides() == Strides{3, 1});
  CHECK(t.numel() == 6);
  CHECK(t.dim() == 2);
  CHECK(t.size(-1) == 3);
  CHECK(t.dtype() == DType::f32);
  CHECK(t.is_contiguous());
  CHECK(t.to_vector<float>() == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(Tensor::full({2}, 2.5, DType::f64).to_vector<double>() == std::vector<double>{2.5, 2.5});
  CHECK(Tensor::scalar(3.0).item() == 3.0);
  CHECK(Tensor::arange(4).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(Tensor::zeros({0, 3}).numel() == 0);
}

TEST_CASE("tensor: CPU memory is 64-byte aligned") {
  for (int64_t n : {1, 7, 100, 4097}) {
    const Tensor t = Tensor::empty({n});
    CHECK(reinterpret_cast<uintptr_t>(t.raw_data()) % 64 == 0);
  }
}

TEST_CASE("tensor: views share storage and copy nothing") {
  const Tensor base = Tensor::from_vector<double>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  const Tensor t = base.transpose(0, 1);
  CHECK(t.same_storage(base));
  CHECK(t.shape() == Shape{4, 3});
  CHECK(t.strides() == Strides{1, 4});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.to_vector<double>() == std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});

  const Tensor n = base.narrow(1, 1, 2);  // columns 1..2
  CHECK(n.same_storage(base));
  CHECK(n.offset() == 1);
  CHECK(n.to_vector<double>() == std::vector<double>{1, 2, 5, 6, 9, 10});

  const Tensor e = Tensor::from_vector<double>({1, 2, 3}, {3, 1}).expand({3, 4});
  CHECK(e.strides()[1] == 0);
  CHECK(e.to_vector<double>() == std::vector<double>{1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3});

  const Tensor u = base.unsqueeze(0).squeeze(0);
  CHECK(u.same_storage(base));
  CHECK(u.shape() == base.shape());

  // Writing through a view is seen by the base.
  fill_(n, -1.0);
  CHECK(base.to_vector<double>()[1] == -1.0);
  CHECK(base.to_vector<double>()[0] == 0.0);
}

TEST_CASE("tensor: reshape is a view when the layout allows, a copy otherwise") {
  const Tensor base = Tensor::arange(24, DType::f32).reshape({2, 3, 4});
  CHECK(base.reshape({6, 4}).same_storage(base));
  CHECK(base.reshape({-1}).shape() == Shape{24});
  // Narrowing the last axis keeps rows mergeable along the first two axes.
  const Tensor n = base.narrow(2, 0, 2);
  CHECK(n.reshape({6, 2}).same_storage(base));
  // A transposed view cannot be flattened without a copy.
  const Tensor t = base.transpose(1, 2);
  const Tensor flat = t.reshape({24});
  CHECK_FALSE(flat.same_storage(base));
  CHECK(flat.to_vector<float>()[1] == 4.0f);  // t[0,0,1] = base[0,1,0]
  CHECK_THROWS_AS(base.reshape({5, 5}), Error);
}

TEST_CASE("tensor: contiguous, clone and cast") {
  const Tensor base = Tensor::arange(6, DType::f64).reshape({2, 3});
  CHECK(base.contiguous().same_storage(base));  // already contiguous: no copy
  const Tensor t = base.transpose(0, 1).contiguous();
  CHECK_FALSE(t.same_storage(base));
  CHECK(t.is_contiguous());
  CHECK(t.to_vector<double>() == std::vector<double>{0, 3, 1, 4, 2, 5});
  CHECK_FALSE(base.clone().same_storage(base));
  const Tensor f = base.to(DType::f32);
  CHECK(f.dtype() == DType::f32);
  CHECK(f.to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4, 5});
  CHECK(Tensor::from_vector<double>({2.7, -1.2}, {2}).to(DType::i64).to_vector<int64_t>() ==
        std::vector<int64_t>{2, -1});
}

TEST_CASE("tensor: the allocator reuses freed blocks") {
  Allocator& alloc = cpu_allocator();
  { Tensor warm = Tensor::empty({1000, 1000}); }
  const size_t before = alloc.stats().system_allocations;
  for (int i = 0; i < 10; ++i) {
    Tensor a = Tensor::empty({1000, 1000});
    Tensor b = Tensor::empty({999, 1000});  // within 2x: reuses a cached block
  }
  CHECK(alloc.stats().system_allocations - before <= 1);
  CHECK(alloc.stats().peak_bytes >= alloc.stats().active_bytes);
}

TEST_CASE("tensor: in-place ops refuse tensors that require grad") {
  Tensor w = Tensor::ones({3}, DType::f64);
  w.requires_grad_();
  CHECK_THROWS_WITH_AS(fill_(w, 0.0), doctest::Contains("fill_"), Error);
  {
    GradModeGuard no_grad(false);
    add_(w, Tensor::ones({3}, DType::f64), 2.0);
    mul_(w, 0.5);
  }
  CHECK(w.to_vector<double>() == std::vector<double>{1.5, 1.5, 1.5});
}

}  // namespace loom
