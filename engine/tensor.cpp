#include "engine/tensor.h"

#include <cstring>

#include "engine/backend.h"
#include "engine/ops.h"
#include "engine/record.h"

namespace loom {

// ---- Storage ------------------------------------------------------------------------

Storage::Storage(size_t bytes, Device dev) : device(dev) {
  data = backend_for(dev).allocator().allocate(bytes, &capacity);
}

Storage::~Storage() { backend_for(device).allocator().deallocate(data, capacity); }

// ---- creation -------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    LOOM_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  int64_t bytes = 0;  // shape_numel checks its own product; this checks the byte count
  LOOM_CHECK(!__builtin_mul_overflow(shape_numel(shape), static_cast<int64_t>(dtype_size(dtype)), &bytes), "empty: shape ",
             shape_str(shape), " of ", dtype_name(dtype), " needs more than 2^63 bytes");
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(bytes), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  backend_for(device).fill(t, value);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  LOOM_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
             " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>::value, Device::cpu);
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  return t;
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&);

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  Tensor t = empty({n}, dtype, Device::cpu);
  dispatch_all(dtype, [&](auto zero) {
    using T = decltype(zero);
    T* p = t.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(i);
  });
  return device == Device::cpu ? t : t.to(device);
}

// ---- description ----------------------------------------------------------------------

TensorImpl& Tensor::impl() const {
  LOOM_CHECK(impl_ != nullptr, "use of an undefined tensor (default-constructed or moved from)");
  return *impl_;
}

int64_t Tensor::size(int64_t axis) const { return shape()[normalize_axis(axis, dim(), "size")]; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;
  int64_t expected = 1;
  const auto& sh = shape();
  const auto& st = strides();
  for (size_t i = sh.size(); i-- > 0;) {
    if (sh[i] == 1) continue;
    if (st[i] != expected) return false;
    expected *= sh[i];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return detail::concat(dtype_name(dtype()), shape_str(shape()), " on ", device_name(device()));
}

// ---- element access ---------------------------------------------------------------------

void* Tensor::raw_data() const {
  return static_cast<char*>(storage()->data) + offset() * dtype_size(dtype());
}

template <class T>
T* Tensor::data() const {
  LOOM_CHECK(dtype() == dtype_of<T>::value, "data<", dtype_name(dtype_of<T>::value), ">: the tensor is ",
             describe());
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int64_t* Tensor::data<int64_t>() const;

double Tensor::item() const {
  LOOM_CHECK(numel() == 1, "item: expected a tensor with one element, got ", describe());
  Tensor host = device() == Device::cpu ? *this : to(Device::cpu);
  return dispatch_all(dtype(), [&](auto zero) {
    using T = decltype(zero);
    return static_cast<double>(*host.data<T>());
  });
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  LOOM_CHECK(dtype() == dtype_of<T>::value, "to_vector<", dtype_name(dtype_of<T>::value), ">: the tensor is ",
             describe());
  GradModeGuard no_grad(false);
  Tensor host = loom::contiguous(device() == Device::cpu ? *this : to(Device::cpu));
  const T* p = host.data<T>();
  return std::vector<T>(p, p + host.numel());
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;

// ---- views and copies: thin wrappers over ops.h ---------------------------------------

Tensor Tensor::reshape(const Shape& s) const { return loom::reshape(*this, s); }
Tensor Tensor::transpose(int64_t a, int64_t b) const { return loom::transpose(*this, a, b); }
Tensor Tensor::permute(const std::vector<int64_t>& dims) const { return loom::permute(*this, dims); }
Tensor Tensor::narrow(int64_t axis, int64_t start, int64_t length) const {
  return loom::narrow(*this, axis, start, length);
}
Tensor Tensor::expand(const Shape& s) const { return loom::expand(*this, s); }
Tensor Tensor::squeeze(int64_t axis) const { return loom::squeeze(*this, axis); }
Tensor Tensor::unsqueeze(int64_t axis) const { return loom::unsqueeze(*this, axis); }
Tensor Tensor::contiguous() const { return loom::contiguous(*this); }
Tensor Tensor::clone() const { return loom::clone(*this); }
Tensor Tensor::to(DType t) const { return loom::cast(*this, t); }

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  // Moving between devices goes through contiguous host memory.
  Tensor src = loom::contiguous(*this);
  Tensor out = empty(shape(), dtype(), target);
  const size_t bytes = numel() * dtype_size(dtype());
  if (bytes) {
    if (target == Device::cpu) {
      backend_for(src.device()).copy_to_host(out.raw_data(), src.raw_data(), bytes);
    } else {
      Tensor host = src.device() == Device::cpu ? src : src.to(Device::cpu);
      backend_for(target).copy_from_host(out.raw_data(), host.raw_data(), bytes);
    }
  }
  return out;
}

// ---- autodiff state ----------------------------------------------------------------------

Tensor& Tensor::requires_grad_(bool value) {
  LOOM_CHECK(!value || is_floating(dtype()), "requires_grad_: only floating-point tensors can require grad, got ",
             describe());
  LOOM_CHECK(value || !grad_fn(), "requires_grad_(false): the tensor was made by an op; use detach()");
  impl().requires_grad = value;
  return *this;
}

Tensor Tensor::grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) const {
  if (g.defined())
    LOOM_CHECK(g.shape() == shape() && g.dtype() == dtype(), "set_grad: gradient ", g.describe(),
               " does not match tensor ", describe());
  impl().grad = g.defined() ? g.impl_ptr() : nullptr;
}

void Tensor::zero_grad() const { impl().grad = nullptr; }

Tensor Tensor::detach() const { return as_strided(shape(), strides(), offset()); }

Tensor Tensor::as_strided(const Shape& s, const Strides& st, int64_t off) const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage();
  impl->offset = off;
  impl->shape = s;
  impl->strides = st;
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

}  // namespace loom
