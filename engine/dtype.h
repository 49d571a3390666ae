// dtype.h: the element types a tensor can hold, and the helper that turns a
// runtime dtype into a compile-time type once per op (never per element).
#pragma once

#include <cstdint>
#include <cstddef>

#include "engine/error.h"

namespace loom {

enum class DType : uint8_t { f32, f64, i64 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i64: return "int64";
  }
  return "?";
}

inline bool is_floating(DType t) { return t == DType::f32 || t == DType::f64; }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };

// Calls fn(T{}) with T = float or double. `op` names the caller in the error.
template <class Fn>
decltype(auto) dispatch_float(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
    default: LOOM_FAIL(op, ": expected a floating-point tensor, got ", dtype_name(t));
  }
}

// Calls fn(T{}) for any dtype.
template <class Fn>
decltype(auto) dispatch_all(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
    case DType::i64: return fn(int64_t{});
  }
  LOOM_FAIL("unknown dtype");
}

}  // namespace loom
