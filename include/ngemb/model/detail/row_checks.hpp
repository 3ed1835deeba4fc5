#pragma once
// Size checks of the model layers' activations, named in the message by the caller.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ngemb/core/error.hpp"

namespace ngemb::detail {

/// Throws shape_mismatch unless `values` holds `rows` x `width` elements.
inline void require_rows(const std::string& what, std::size_t rows, std::int64_t width, std::size_t values) {
  if (values != rows * static_cast<std::size_t>(width)) {
    throw shape_mismatch(what + " must hold " + std::to_string(rows) + " x " + std::to_string(width) + " = " +
                         std::to_string(rows * static_cast<std::size_t>(width)) + " values, got " +
                         std::to_string(values));
  }
}

}  // namespace ngemb::detail
