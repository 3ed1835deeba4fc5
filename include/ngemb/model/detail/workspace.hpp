#pragma once
// Scratch buffers of the model layers: members that grow to the largest step seen and are reused after that.
#include <cstddef>

#include "ngemb/core/views.hpp"

namespace ngemb::detail {

/// The first `size` elements of `buffer`, reallocated first when it is smaller (old contents are not kept).
template <class Policy, class Buffer>
auto workspace(const Policy& policy, Buffer& buffer, std::size_t size) {
  if (buffer.size() < size) {
    buffer = Buffer(policy, size);
  }
  return buffer.as_view().subview(0, size);
}

}  // namespace ngemb::detail
