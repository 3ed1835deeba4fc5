#pragma once
// Non-owning views that are trivially copyable, so they can be passed by value into kernels and used
// identically by host and device element operations.
#include <cstddef>
#include <cstdint>
#include <concepts>
#include <string>
#include <type_traits>

#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"

namespace ngemb {

/// A pointer and a length; the memory may be host or device memory (the policy that runs an operation decides).
template <class T>
class view {
 public:
  using element_type = T;

  view() = default;
  NGEMB_HD view(T* data, std::size_t size) : data_(data), size_(size) {}
  /// From any contiguous range with data() and size() (std::vector, std::span, std::array, another view).
  template <class Range>
    requires(!std::is_same_v<std::remove_cvref_t<Range>, view>) && requires(Range&& range) {
      { range.data() } -> std::convertible_to<T*>;
      { range.size() } -> std::convertible_to<std::size_t>;
    }
  view(Range&& range) : data_(range.data()), size_(range.size()) {}  // NOLINT: implicit like std::span

  NGEMB_HD T* data() const { return data_; }
  NGEMB_HD std::size_t size() const { return size_; }
  NGEMB_HD bool empty() const { return size_ == 0; }
  NGEMB_HD T& operator[](std::size_t index) const { return data_[index]; }
  NGEMB_HD T* begin() const { return data_; }
  NGEMB_HD T* end() const { return data_ + size_; }
  NGEMB_HD view subview(std::size_t offset, std::size_t count) const { return view(data_ + offset, count); }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

template <class Range>
view(Range&&) -> view<std::remove_reference_t<decltype(*std::declval<Range&>().data())>>;

/// A ragged batch: the values of all sequences back to back, and sequence s at [offsets[s], offsets[s+1]).
/// This is how engines batch requests of different lengths (cu_seqlens / exclusive length sums).
template <class T>
class ragged_view {
 public:
  ragged_view() = default;
  /// `offsets` has one entry per sequence plus one; it is checked on the host by `validate()`.
  NGEMB_HD ragged_view(view<T> values, view<const std::int64_t> offsets) : values_(values), offsets_(offsets) {}

  NGEMB_HD view<T> values() const { return values_; }
  NGEMB_HD view<const std::int64_t> offsets() const { return offsets_; }
  NGEMB_HD std::size_t num_sequences() const { return offsets_.empty() ? 0 : offsets_.size() - 1; }
  NGEMB_HD std::size_t num_values() const { return values_.size(); }
  NGEMB_HD std::int64_t begin_of(std::size_t sequence) const { return offsets_[sequence]; }
  NGEMB_HD std::int64_t size_of(std::size_t sequence) const { return offsets_[sequence + 1] - offsets_[sequence]; }
  NGEMB_HD view<T> sequence(std::size_t sequence) const {
    return values_.subview(static_cast<std::size_t>(begin_of(sequence)), static_cast<std::size_t>(size_of(sequence)));
  }

  /// The sequence holding flat value index `index` (binary search; empty sequences are skipped correctly).
  NGEMB_HD std::size_t sequence_of(std::int64_t index) const {
    std::size_t low = 0;
    std::size_t high = num_sequences();
    while (high - low > 1) {  // invariant: offsets[low] <= index < offsets[high]
      const std::size_t middle = low + (high - low) / 2;
      if (offsets_[middle] <= index) {
        low = middle;
      } else {
        high = middle;
      }
    }
    return low;
  }

 private:
  view<T> values_;
  view<const std::int64_t> offsets_;
};

namespace detail {

/// Copies between policy memory and the host move whole views: sizes must agree.
inline void require_same_size(const char* operation, std::size_t source, std::size_t destination) {
  if (source != destination) {
    throw shape_mismatch(std::string(operation) + ": source has " + std::to_string(source) +
                         " elements, destination " + std::to_string(destination));
  }
}

}  // namespace detail

}  // namespace ngemb
