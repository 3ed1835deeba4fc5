#pragma once
// A third execution policy, written only from the execution_policy concept (policy/policy.hpp): one thread, its
// own buffer type, naive loops for gemm_nt and sort_pairs. Library code that runs under it asks nothing of a
// policy beyond the concept. Its buffers start as NaN bytes rather than zeros (a device buffer starts as
// whatever was there), so code that reads memory it never wrote shows up as wrong numbers.
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/memory_resource.hpp"

namespace ngemb_test {

struct serial_policy;

template <class T>
class serial_buffer {
 public:
  serial_buffer() = default;
  serial_buffer(const serial_policy& policy, std::size_t size);
  serial_buffer(const serial_buffer&) = delete;
  serial_buffer& operator=(const serial_buffer&) = delete;
  serial_buffer(serial_buffer&& other) noexcept
      : resource_(other.resource_), data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  serial_buffer& operator=(serial_buffer&& other) noexcept {
    std::swap(resource_, other.resource_);
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  ~serial_buffer() {
    if (data_ != nullptr) {
      resource_.deallocate(data_, size_ * sizeof(T), alignof(T));
    }
  }

  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] T* data() { return data_; }
  [[nodiscard]] const T* data() const { return data_; }
  [[nodiscard]] ngemb::view<T> as_view() { return {data_, size_}; }
  [[nodiscard]] ngemb::view<const T> as_view() const { return {data_, size_}; }

 private:
  ngemb::host_resource_ref resource_;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

struct serial_policy {
  ngemb::host_resource_ref resource{};

  template <class T>
  using buffer = serial_buffer<T>;
};

template <class T>
serial_buffer<T>::serial_buffer(const serial_policy& policy, std::size_t size)
    : resource_(policy.resource), size_(size) {
  if (size_ != 0) {
    data_ = static_cast<T*>(resource_.allocate(size_ * sizeof(T), alignof(T)));
    std::memset(static_cast<void*>(data_), 0xff, size_ * sizeof(T));
  }
}

template <class Op>
void for_each_n(const serial_policy& /*policy*/, std::size_t n, Op op) {
  for (std::size_t i = 0; i < n; ++i) {
    op(i);
  }
}

template <class T>
void copy_to(const serial_policy& /*policy*/, std::type_identity_t<ngemb::view<const T>> source,
             ngemb::view<T> destination) {
  if (source.size() != destination.size()) {
    throw ngemb::shape_mismatch("serial copy_to: " + std::to_string(source.size()) + " values into " +
                                std::to_string(destination.size()));
  }
  std::copy(source.begin(), source.end(), destination.begin());
}

template <class T>
void copy_to_host(const serial_policy& policy, std::type_identity_t<ngemb::view<const T>> source,
                  ngemb::view<T> destination) {
  copy_to(policy, source, destination);
}

/// C = A * B^T by the textbook triple loop, accumulating in C's type.
template <class T, class W>
void naive_gemm_nt(std::size_t m, std::size_t n, std::size_t k, ngemb::view<const T> a, ngemb::view<const W> b,
                   ngemb::view<T> c) {
  if (a.size() != m * k || b.size() != n * k || c.size() != m * n) {
    throw ngemb::shape_mismatch("serial gemm_nt: operands do not match " + std::to_string(m) + " x " +
                                std::to_string(n) + " x " + std::to_string(k));
  }
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      T sum = 0;
      for (std::size_t l = 0; l < k; ++l) {
        if constexpr (std::same_as<T, W>) {
          sum += a[i * k + l] * b[j * k + l];
        } else {
          sum += a[i * k + l] * ngemb::to_float(b[j * k + l]);
        }
      }
      c[i * n + j] = sum;
    }
  }
}

template <class T>
  requires std::same_as<T, float> || std::same_as<T, double>
void gemm_nt(const serial_policy& /*policy*/, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<ngemb::view<const T>> a, std::type_identity_t<ngemb::view<const T>> b,
             ngemb::view<T> c) {
  naive_gemm_nt<T, T>(m, n, k, a, b, c);
}

/// C = A * B, B's rows ldb apart, by the textbook triple loop.
template <class T>
  requires std::same_as<T, float> || std::same_as<T, double>
void gemm_nn(const serial_policy& /*policy*/, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<ngemb::view<const T>> a, std::type_identity_t<ngemb::view<const T>> b,
             std::size_t ldb, ngemb::view<T> c) {
  if (a.size() != m * k || c.size() != m * n || ldb < n || (k > 0 && n > 0 && b.size() < (k - 1) * ldb + n)) {
    throw ngemb::shape_mismatch("serial gemm_nn: operands do not match " + std::to_string(m) + " x " +
                                std::to_string(n) + " x " + std::to_string(k) + " with ldb " + std::to_string(ldb));
  }
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      T sum = 0;
      for (std::size_t l = 0; l < k; ++l) {
        sum += a[i * k + l] * b[l * ldb + j];
      }
      c[i * n + j] = sum;
    }
  }
}

template <class W>
  requires std::same_as<W, ngemb::bf16> || std::same_as<W, ngemb::fp16>
void gemm_nt(const serial_policy& /*policy*/, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<ngemb::view<const float>> a, ngemb::view<const W> b, ngemb::view<float> c) {
  naive_gemm_nt<float, W>(m, n, k, a, b, c);
}

/// Insertion sort: stable, and quadratic, which the few pairs of a test batch do not notice.
template <class Key, class Value>
void sort_pairs(const serial_policy& /*policy*/, ngemb::view<const Key> keys_in, ngemb::view<const Value> values_in,
                ngemb::view<Key> keys_out, ngemb::view<Value> values_out, int /*key_bits*/,
                serial_buffer<std::byte>& /*temp*/) {
  for (std::size_t i = 0; i < keys_in.size(); ++i) {
    std::size_t place = i;
    for (; place > 0 && keys_out[place - 1] > keys_in[i]; --place) {
      keys_out[place] = keys_out[place - 1];
      values_out[place] = values_out[place - 1];
    }
    keys_out[place] = keys_in[i];
    values_out[place] = values_in[i];
  }
}

/// Three elements per operation: neither a whole row (host) nor a power of two (device), so row tails are covered.
constexpr std::size_t row_chunk(const serial_policy& /*policy*/) { return 3; }

inline serial_policy for_operations_of(const serial_policy& policy, std::size_t /*elements*/) { return policy; }

inline void synchronize(const serial_policy& /*policy*/) {}

inline ngemb::host_resource_ref get_memory_resource(const serial_policy& policy) { return policy.resource; }

}  // namespace ngemb_test
