// tensor.h: the Tensor handle.
//
// A Tensor is a cheap, shared handle (like torch.Tensor): copying it copies a
// pointer. It describes a window onto a Storage buffer: a shape, strides (in
// elements) and an offset. Views (transpose, narrow, expand, ...) make a new
// handle onto the same storage and copy nothing.
//
// Autodiff state lives here too, as in PyTorch: `requires_grad`, the accumulated
// `grad` of a leaf, and `grad_fn`, the autodiff node that produced this tensor.
// The engine only holds that node opaquely; autodiff/ defines it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/allocator.h"
#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/shape.h"

namespace loom {

namespace autodiff {
struct Node;  // defined in autodiff/node.h
}

// A reference-counted block of memory on one device. `version` counts in-place
// writes, so autodiff can tell when a tensor it saved for backward was modified.
struct Storage {
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data = nullptr;
  size_t capacity = 0;
  Device device;
  uint64_t version = 0;
};

class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  Strides strides;
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;            // accumulated gradient (leaves)
  std::shared_ptr<autodiff::Node> grad_fn;     // the node that made this tensor
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation (uninitialised, constant, from host data) -------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::cpu);
  static Tensor scalar(double value, DType dtype = DType::f32, Device device = Device::cpu);
  // Copies `values` (row-major, shape_numel(shape) of them) into a new CPU tensor.
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  // Evenly spaced values start, start+1, ... (like torch.arange).
  static Tensor arange(int64_t n, DType dtype = DType::i64, Device device = Device::cpu);

  // ---- description -----------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t axis) const;  // negative axes count from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device; }
  bool is_contiguous() const;
  std::string describe() const;  // "float32[2, 3] on cpu"

  // ---- element access (CPU) --------------------------------------------------
  // Pointer to the first element (storage + offset); T must match the dtype.
  template <class T>
  T* data() const;
  void* raw_data() const;  // storage + offset, any dtype
  double item() const;     // the single element of a one-element tensor
  template <class T>
  std::vector<T> to_vector() const;  // row-major copy of the logical elements

  // ---- views and copies (recorded by autodiff; see ops.h for the full list) --
  Tensor reshape(const Shape& shape) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor narrow(int64_t axis, int64_t start, int64_t length) const;
  Tensor expand(const Shape& shape) const;
  Tensor squeeze(int64_t axis) const;
  Tensor unsqueeze(int64_t axis) const;
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;

  // ---- autodiff ----------------------------------------------------------------
  bool requires_grad() const { return impl().requires_grad; }
  // Marks a leaf as a parameter/input whose gradient backward() should compute.
  Tensor& requires_grad_(bool value = true);
  Tensor grad() const;  // undefined until backward() reaches this leaf
  void set_grad(const Tensor& grad) const;
  void zero_grad() const;  // drops the accumulated gradient
  // Same data, cut from the graph: the result never requires grad.
  Tensor detach() const;
  const std::shared_ptr<autodiff::Node>& grad_fn() const { return impl().grad_fn; }
  // Backpropagates from this scalar (d self / d self = 1); defined in autodiff/.
  void backward(bool retain_graph = false) const;
  // Backpropagates with the given gradient of this tensor; defined in autodiff/.
  void backward(const Tensor& grad_output, bool retain_graph = false) const;

  // ---- low level (ops and kernels) -------------------------------------------
  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  // A new handle onto the same storage. Not recorded: ops use it to build views.
  Tensor as_strided(const Shape& shape, const Strides& strides, int64_t offset) const;
  // Marks the storage as written in place (autodiff checks saved tensors against it).
  void bump_version() const { ++impl().storage->version; }
  bool same_storage(const Tensor& other) const { return storage() == other.storage(); }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

}  // namespace loom
