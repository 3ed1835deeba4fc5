#pragma once
// Reads a checkpoint tensor, or some rows of one, into a chosen element type, whatever float type the file stores:
// widening is exact, narrowing rounds to nearest even. Works on unaligned data (it copies), unlike the zero-copy
// typed views. F8_E4M3 tensors are block-scaled weights whose values mean nothing without their scale tensor: they
// are read only into fp8_e4m3, as stored, and fp8_e4m3 only from them (policy/fp8_gemm.hpp pairs them with scales).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/io/checkpoint.hpp"

namespace ngemb {

/// Element types a tensor can be read into: the storage types, and double for references.
template <class T>
concept readable_element = storage_type<T> || std::is_same_v<T, double>;

namespace detail {

template <storage_type Stored, readable_element T>
void convert_bytes(std::span<const std::byte> bytes, std::span<T> values) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    Stored stored;
    std::memcpy(&stored, bytes.data() + i * sizeof(Stored), sizeof(Stored));
    values[i] = convert<T>(stored);
  }
}

/// Bytes per element of a dtype check_tensor_for accepted.
inline std::size_t float_dtype_bytes(std::string_view stored) {
  return stored == name_of(dtype::f32) ? 4 : stored == name_of(dtype::f8_e4m3) ? 1 : 2;
}

/// Converts the elements `bytes` holds in the dtype `stored`, already checked against T by check_tensor_for<T>.
template <readable_element T>
void convert_float_tensor(std::string_view stored, std::span<const std::byte> bytes, std::span<T> values) {
  if constexpr (std::is_same_v<T, fp8_e4m3>) {
    std::memcpy(values.data(), bytes.data(), values.size());  // F8_E4M3 into fp8_e4m3: the bytes themselves
  } else if (stored == name_of(dtype::f32)) {
    convert_bytes<float>(bytes, values);
  } else if (stored == name_of(dtype::bf16)) {
    convert_bytes<bf16>(bytes, values);
  } else {
    convert_bytes<fp16>(bytes, values);
  }
}

}  // namespace detail

/// Checks that tensor `name` exists with shape `expected_shape` and a float dtype (F32, BF16 or F16), without
/// reading it; format_error naming the file and tensor otherwise. Loaders call it for every tensor before they
/// allocate, so a config that disagrees with the checkpoint never makes them allocate what the file does not hold.
inline void check_float_tensor(const checkpoint& source, std::string_view name,
                               std::span<const std::int64_t> expected_shape) {
  source.require_shape(name, expected_shape);
  const tensor_info& info = source.info(name);
  if (info.dtype != name_of(dtype::f32) && info.dtype != name_of(dtype::bf16) && info.dtype != name_of(dtype::f16)) {
    const char* hint = info.dtype == name_of(dtype::f8_e4m3)
                           ? " (fp8 weights are scaled by their weight_scale_inv: load them as weight_matrix<fp8_e4m3>)"
                           : "";
    throw format_error(source.describe(name) + " has dtype " + info.dtype + ", expected F32, BF16 or F16" + hint);
  }
}

namespace detail {

/// check_float_tensor for the float element types; fp8_e4m3 reads only F8_E4M3, as stored (narrowing a float
/// tensor to fp8 needs a scale, which a plain read cannot choose).
template <readable_element T>
void check_tensor_for(const checkpoint& source, std::string_view name, std::span<const std::int64_t> expected_shape) {
  if constexpr (std::is_same_v<T, fp8_e4m3>) {
    source.require_shape(name, expected_shape);
    const tensor_info& info = source.info(name);
    if (info.dtype != name_of(dtype::f8_e4m3)) {
      throw format_error(source.describe(name) + " has dtype " + info.dtype +
                         ", expected F8_E4M3 (fp8 values are read as stored; a float tensor is quantised with a "
                         "block scale by weight_matrix<fp8_e4m3>)");
    }
  } else {
    check_float_tensor(source, name, expected_shape);
  }
}

}  // namespace detail

/// Converts tensor `name` into `destination`, which must hold its elements. The tensor must have shape
/// `expected_shape` and a float dtype (F32, BF16 or F16; F8_E4M3 exactly when T is fp8_e4m3); otherwise
/// format_error names the file and tensor.
template <readable_element T>
void read_tensor_into(const checkpoint& source, std::string_view name,
                      std::span<const std::int64_t> expected_shape, std::span<T> destination) {
  detail::check_tensor_for<T>(source, name, expected_shape);
  const tensor_info& info = source.info(name);
  if (destination.size() != static_cast<std::size_t>(info.num_elements())) {
    throw shape_mismatch(source.describe(name) + " has " +
                         std::to_string(info.num_elements()) + " elements, destination " +
                         std::to_string(destination.size()));
  }
  detail::convert_float_tensor(info.dtype, source.bytes(name), destination);
}

/// Converts rows [first_row, first_row + row_count) of the 2-D tensor `name` into `destination`, which must hold
/// their elements, reading only their bytes (a checkpoint that maps on demand maps only them). Shape and dtype are
/// checked as read_tensor_into checks them; rows outside the tensor raise invalid_argument naming them.
template <readable_element T>
void read_tensor_rows_into(const checkpoint& source, std::string_view name,
                           std::span<const std::int64_t> expected_shape, std::int64_t first_row,
                           std::int64_t row_count, std::span<T> destination) {
  detail::check_tensor_for<T>(source, name, expected_shape);
  const tensor_info& info = source.info(name);
  const auto [begin, end] = source.row_byte_range(name, first_row, row_count, detail::float_dtype_bytes(info.dtype));
  if (destination.size() != static_cast<std::size_t>(row_count * info.shape[1])) {
    throw shape_mismatch(source.describe(name) + ": rows {first " + std::to_string(first_row) + ", count " +
                         std::to_string(row_count) + "} hold " + std::to_string(row_count * info.shape[1]) +
                         " elements, destination " + std::to_string(destination.size()));
  }
  detail::convert_float_tensor(info.dtype, source.bytes(name, begin, end), destination);
}

/// As read_tensor_into, into a new vector.
template <readable_element T>
std::vector<T> read_tensor_as(const checkpoint& source, std::string_view name,
                              std::span<const std::int64_t> expected_shape) {
  detail::check_tensor_for<T>(source, name, expected_shape);  // before allocating what the shape asks for
  std::vector<T> values(static_cast<std::size_t>(source.info(name).num_elements()));
  read_tensor_into<T>(source, name, expected_shape, std::span<T>(values));
  return values;
}

}  // namespace ngemb
