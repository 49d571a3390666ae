// shape.h: shapes, strides and the broadcasting rule (numpy's).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;  // in elements, not bytes

int64_t shape_numel(const Shape& shape);
Strides contiguous_strides(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 3]"

// numpy broadcasting of two shapes; `op` names the caller in the error.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Maps a possibly negative axis into [0, ndim); throws naming `op` otherwise.
int normalize_axis(int64_t axis, int64_t ndim, const char* op);

// The permutation that moves `axis` to the end, keeping the others in order.
std::vector<int64_t> axis_last_permutation(int64_t ndim, int64_t axis);
// The permutation that undoes `perm`.
std::vector<int64_t> inverse_permutation(const std::vector<int64_t>& perm);

// Sorted, unique, normalized axes; an empty list means "all axes".
std::vector<int> normalize_axes(const std::vector<int64_t>& axes, int64_t ndim, const char* op);

}  // namespace loom
