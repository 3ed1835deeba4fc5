#pragma once
// What a writer takes: a named tensor's dtype, shape and bytes. Its own header, so tensor_collection (the save side
// of every part) can build them without pulling in the file writer.
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/detail/safetensors_format.hpp"

namespace ngemb {

/// A tensor for the writer: a name, a dtype name, a shape and the raw bytes. `data` is not owned: it must stay
/// valid until the write call returns.
struct tensor_to_write {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> data;

  /// Throws shape_mismatch unless `values` holds exactly prod(shape) elements.
  template <storage_type T>
  static tensor_to_write of(std::string name, std::vector<std::int64_t> shape, view<const T> values) {
    const auto elements = detail::checked_element_count(shape);
    if (!elements || static_cast<std::uint64_t>(*elements) != values.size()) {
      throw shape_mismatch("tensor \"" + name + "\": shape " + detail::format_shape(shape) + " needs " +
                           (elements ? std::to_string(*elements) : std::string("an invalid number of")) +
                           " elements, got " + std::to_string(values.size()));
    }
    return {std::move(name), std::string(name_of(dtype_of<T>)), std::move(shape),
            std::as_bytes(std::span<const T>(values.data(), values.size()))};
  }
};

}  // namespace ngemb
