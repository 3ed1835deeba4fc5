#pragma once
// The checkpoint interface every loader reads through: named tensors, each with a dtype, a shape and its bytes.
// Compute headers include only this (no file format, no JSON, no mmap); io/safetensors_reader.hpp implements it
// over mapped files, and an engine can implement it over its own storage (a blob store, a network cache).
// Loading is not a hot path, so the interface is virtual.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"

namespace ngemb {

/// One tensor's entry: its dtype as spelled in safetensors ("F32", "BF16", "I64", ...), its shape, and where its
/// bytes sit in the data buffer of the file that holds it.
struct tensor_info {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::size_t begin = 0;  // byte offsets inside the data buffer
  std::size_t end = 0;

  [[nodiscard]] std::int64_t num_elements() const {
    std::int64_t count = 1;
    for (const std::int64_t dimension : shape) {
      count *= dimension;
    }
    return count;
  }
};

namespace detail {

/// "[2, 3]", as error messages print shapes.
inline std::string format_shape(std::span<const std::int64_t> shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    text += (i == 0 ? "" : ", ") + std::to_string(shape[i]);
  }
  return text + "]";
}

/// format_error "<where>: bytes [begin, end) are outside its <size> bytes" unless begin <= end <= size.
inline void require_byte_range(const std::string& where, std::size_t begin, std::size_t end, std::size_t size) {
  if (begin > end || end > size) {
    throw format_error(where + ": bytes [" + std::to_string(begin) + ", " + std::to_string(end) +
                       ") are outside its " + std::to_string(size) + " bytes");
  }
}

}  // namespace detail

class checkpoint {
 public:
  virtual ~checkpoint() = default;

  [[nodiscard]] virtual bool contains(std::string_view name) const = 0;
  /// format_error naming the checkpoint when `name` is absent.
  [[nodiscard]] virtual const tensor_info& info(std::string_view name) const = 0;
  /// The raw bytes of a tensor, of any dtype; valid while the checkpoint lives.
  [[nodiscard]] virtual std::span<const std::byte> bytes(std::string_view name) const = 0;
  /// Bytes [begin, end) of a tensor's data, valid while the checkpoint lives: format_error naming the location,
  /// the tensor, the range and the tensor's size unless begin <= end <= its size. A checkpoint that can read part
  /// of a tensor without the rest (one mapping only the pages asked for) overrides this subspan of the whole.
  [[nodiscard]] virtual std::span<const std::byte> bytes(std::string_view name, std::size_t begin,
                                                         std::size_t end) const {
    const std::span<const std::byte> whole = bytes(name);
    detail::require_byte_range(describe(name), begin, end, whole.size());
    return whole.subspan(begin, end - begin);
  }
  /// Every tensor name, sorted.
  [[nodiscard]] virtual std::vector<std::string> names() const = 0;
  /// Where `name` lives (its file), for error messages; format_error when absent.
  [[nodiscard]] virtual std::string location_of(std::string_view name) const = 0;

  /// `"<location>: tensor "<name>""`, the start of every message about one tensor.
  [[nodiscard]] std::string describe(std::string_view name) const {
    return location_of(name) + ": tensor \"" + std::string(name) + "\"";
  }

  /// A zero-copy typed view, valid while the checkpoint lives. The stored dtype must be T's and the data aligned
  /// for T (a conforming writer aligns it; a file cannot be trusted to): format_error naming both otherwise.
  template <storage_type T>
  [[nodiscard]] view<const T> tensor(std::string_view name) const {
    require_dtype<T>(name);
    return typed_view<T>(name, bytes(name), 0);
  }

  /// As above, and the shape must equal `expected_shape` (format_error "... has shape [a, b], expected [c, d]").
  template <storage_type T>
  [[nodiscard]] view<const T> tensor(std::string_view name, std::span<const std::int64_t> expected_shape) const {
    require_shape(name, expected_shape);
    return tensor<T>(name);
  }

  /// format_error unless tensor `name` exists with shape `expected_shape`.
  void require_shape(std::string_view name, std::span<const std::int64_t> expected_shape) const {
    const tensor_info& found = info(name);
    if (!std::equal(found.shape.begin(), found.shape.end(), expected_shape.begin(), expected_shape.end())) {
      throw format_error(describe(name) + " has shape " + detail::format_shape(found.shape) + ", expected " +
                         detail::format_shape(expected_shape));
    }
  }

  /// A zero-copy typed view of rows [first_row, first_row + row_count) of the 2-D tensor `name`, reading only
  /// their bytes (a checkpoint that maps on demand maps only them). Shape, dtype and alignment are checked as
  /// tensor<T>(name, expected_shape) checks them; rows outside the tensor raise invalid_argument naming them.
  template <storage_type T>
  [[nodiscard]] view<const T> tensor_rows(std::string_view name, std::span<const std::int64_t> expected_shape,
                                          std::int64_t first_row, std::int64_t row_count) const {
    require_shape(name, expected_shape);
    require_dtype<T>(name);
    const auto [begin, end] = row_byte_range(name, first_row, row_count, sizeof(T));
    if (begin == end) {
      return {};
    }
    return typed_view<T>(name, bytes(name, begin, end), begin);
  }

  /// The byte range [begin, end) of rows [first_row, first_row + row_count) of the 2-D tensor `name` whose
  /// elements take `element_bytes` bytes. invalid_argument naming the tensor and the rows when it is not 2-D or
  /// the rows are not inside [0, rows).
  [[nodiscard]] std::pair<std::size_t, std::size_t> row_byte_range(std::string_view name, std::int64_t first_row,
                                                                   std::int64_t row_count,
                                                                   std::size_t element_bytes) const {
    const tensor_info& found = info(name);
    if (found.shape.size() != 2) {
      throw invalid_argument(describe(name) + " has shape " + detail::format_shape(found.shape) +
                             ": rows can be read from 2-D tensors only");
    }
    const std::int64_t rows = found.shape[0];
    if (first_row < 0 || row_count < 0 || first_row > rows || row_count > rows - first_row) {
      throw invalid_argument(describe(name) + ": rows {first " + std::to_string(first_row) + ", count " +
                             std::to_string(row_count) + "} are not inside its " + std::to_string(rows) + " rows");
    }
    const std::size_t row_bytes = static_cast<std::size_t>(found.shape[1]) * element_bytes;
    const auto first = static_cast<std::size_t>(first_row);
    return {first * row_bytes, (first + static_cast<std::size_t>(row_count)) * row_bytes};
  }

 protected:
  checkpoint() = default;
  checkpoint(const checkpoint&) = default;
  checkpoint(checkpoint&&) = default;
  checkpoint& operator=(const checkpoint&) = default;
  checkpoint& operator=(checkpoint&&) = default;

 private:
  template <storage_type T>
  void require_dtype(std::string_view name) const {
    const tensor_info& found = info(name);
    constexpr std::string_view expected = name_of(dtype_of<T>);
    if (found.dtype != expected) {
      throw format_error(describe(name) + " has dtype " + found.dtype + ", expected " + std::string(expected));
    }
  }

  /// `raw`, bytes from `offset` on of tensor `name`, seen as T: format_error unless aligned for T.
  template <storage_type T>
  [[nodiscard]] view<const T> typed_view(std::string_view name, std::span<const std::byte> raw,
                                         std::size_t offset) const {
    if (raw.empty()) {
      return {};
    }
    if (reinterpret_cast<std::uintptr_t>(raw.data()) % alignof(T) != 0) {
      throw format_error(describe(name) + " at data offset " + std::to_string(info(name).begin + offset) +
                         " is not aligned for " + std::string(name_of(dtype_of<T>)) + " (" +
                         std::to_string(alignof(T)) + " bytes)");
    }
    return {reinterpret_cast<const T*>(raw.data()), raw.size() / sizeof(T)};
  }
};

}  // namespace ngemb
