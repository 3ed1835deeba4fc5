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

}  // namespace detail

class checkpoint {
 public:
  virtual ~checkpoint() = default;

  [[nodiscard]] virtual bool contains(std::string_view name) const = 0;
  /// format_error naming the checkpoint when `name` is absent.
  [[nodiscard]] virtual const tensor_info& info(std::string_view name) const = 0;
  /// The raw bytes of a tensor, of any dtype; valid while the checkpoint lives.
  [[nodiscard]] virtual std::span<const std::byte> bytes(std::string_view name) const = 0;
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
    const tensor_info& found = info(name);
    constexpr std::string_view expected = name_of(dtype_of<T>);
    if (found.dtype != expected) {
      throw format_error(describe(name) + " has dtype " + found.dtype + ", expected " + std::string(expected));
    }
    const std::span<const std::byte> raw = bytes(name);
    if (raw.empty()) {
      return {};
    }
    if (reinterpret_cast<std::uintptr_t>(raw.data()) % alignof(T) != 0) {
      throw format_error(describe(name) + " at data offset " + std::to_string(found.begin) + " is not aligned for " +
                         std::string(expected) + " (" + std::to_string(alignof(T)) + " bytes)");
    }
    return {reinterpret_cast<const T*>(raw.data()), raw.size() / sizeof(T)};
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

 protected:
  checkpoint() = default;
  checkpoint(const checkpoint&) = default;
  checkpoint(checkpoint&&) = default;
  checkpoint& operator=(const checkpoint&) = default;
  checkpoint& operator=(checkpoint&&) = default;
};

}  // namespace ngemb
