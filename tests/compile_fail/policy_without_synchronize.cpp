// Must not compile: a user policy with every operation but synchronize(policy). Its first use with the library
// (upload, which every part's constructor calls) must fail with the execution_policy check naming synchronize.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "ngemb/policy/upload.hpp"

namespace user {

struct unsynchronised_policy;

template <class T>
class buffer {
 public:
  buffer() = default;
  buffer(const unsynchronised_policy& /*policy*/, std::size_t size) : values_(new T[size]()), size_(size) {}
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] T* data() { return values_.get(); }
  [[nodiscard]] const T* data() const { return values_.get(); }
  [[nodiscard]] ngemb::view<T> as_view() { return {values_.get(), size_}; }
  [[nodiscard]] ngemb::view<const T> as_view() const { return {values_.get(), size_}; }

 private:
  std::unique_ptr<T[]> values_;
  std::size_t size_ = 0;
};

struct unsynchronised_policy {
  template <class T>
  using buffer = user::buffer<T>;
};

template <class Op>
void for_each_n(const unsynchronised_policy&, std::size_t n, Op op) {
  for (std::size_t i = 0; i < n; ++i) {
    op(i);
  }
}
template <class T>
void copy_to(const unsynchronised_policy&, std::type_identity_t<ngemb::view<const T>>, ngemb::view<T>) {}
template <class T>
void copy_to_host(const unsynchronised_policy&, std::type_identity_t<ngemb::view<const T>>, ngemb::view<T>) {}
template <class T>
void gemm_nt(const unsynchronised_policy&, std::size_t, std::size_t, std::size_t,
             std::type_identity_t<ngemb::view<const T>>, std::type_identity_t<ngemb::view<const T>>, ngemb::view<T>) {}
template <class T>
void gemm_nn(const unsynchronised_policy&, std::size_t, std::size_t, std::size_t,
             std::type_identity_t<ngemb::view<const T>>, std::type_identity_t<ngemb::view<const T>>, std::size_t,
             ngemb::view<T>) {}
template <class W>
void gemm_nt(const unsynchronised_policy&, std::size_t, std::size_t, std::size_t,
             std::type_identity_t<ngemb::view<const float>>, ngemb::view<const W>, ngemb::view<float>) {}
template <class Key, class Value>
void sort_pairs(const unsynchronised_policy&, ngemb::view<const Key>, ngemb::view<const Value>, ngemb::view<Key>,
                ngemb::view<Value>, int, buffer<std::byte>&) {}
constexpr std::size_t row_chunk(const unsynchronised_policy&) { return 1; }
inline unsynchronised_policy for_operations_of(const unsynchronised_policy& policy, std::size_t) { return policy; }
inline ngemb::host_resource_ref get_memory_resource(const unsynchronised_policy&) { return {}; }

}  // namespace user

int main() {
  const float values[3] = {1, 2, 3};
  const auto uploaded = ngemb::upload(user::unsynchronised_policy{}, ngemb::view<const float>(values, 3));
  return static_cast<int>(uploaded.size());
}
