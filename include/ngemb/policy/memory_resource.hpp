#pragma once
// Host memory resources in the shape of libcu++'s cuda::mr: a resource is anything with
// allocate(bytes, alignment) and a noexcept deallocate(pointer, bytes, alignment); host_resource_ref is a
// non-owning, type-erased, trivially copyable handle to one (as cuda::mr::resource_ref), which a host policy
// carries and host buffers remember for freeing. An engine passes its own pool this way; the default resource
// counts its allocations, so a caller can check that nothing went around the pool it handed over.
// (policy/device_memory_resource.cuh is the stream-ordered device counterpart.)
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <type_traits>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "ngemb/core/checked.hpp"

namespace ngemb {

/// A host memory resource: allocate returns memory aligned to `alignment` (a power of two) or throws
/// (std::bad_alloc when the memory is not there); deallocate takes back exactly what allocate returned, with the
/// same bytes and alignment, and cannot fail. Buffers call it from the thread that creates or destroys them.
template <class R>
concept host_resource = requires(R& resource, void* pointer, std::size_t bytes, std::size_t alignment) {
  { resource.allocate(bytes, alignment) } -> std::same_as<void*>;
  { resource.deallocate(pointer, bytes, alignment) } noexcept;
};

/// The process-wide default: std::aligned_alloc. Buffers from 2 MiB on are aligned to 2 MiB and offered to
/// transparent huge pages: a gather over gigabyte tables in 4 KiB pages misses the TLB on nearly every row, and
/// the page walk costs as much as the row. Stateless; every instance counts into one process-wide counter.
class default_host_resource {
 public:
  static constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;

  void* allocate(std::size_t bytes, std::size_t alignment) {
    if (bytes >= huge_page_bytes && alignment < huge_page_bytes) {
      alignment = huge_page_bytes;
    }
    // aligned_alloc wants a multiple of the alignment.
    const std::size_t rounded = checked_add(bytes, alignment - 1, "default_host_resource") / alignment * alignment;
    void* memory = std::aligned_alloc(alignment, rounded);
    if (memory == nullptr) {
      throw std::bad_alloc();
    }
#if defined(__linux__)
    if (alignment == huge_page_bytes) {
      madvise(memory, rounded, MADV_HUGEPAGE);  // a hint: without THP the buffer simply keeps small pages
    }
#endif
    allocations_.fetch_add(1, std::memory_order_relaxed);
    return memory;
  }

  void deallocate(void* pointer, std::size_t /*bytes*/, std::size_t /*alignment*/) noexcept { std::free(pointer); }

  /// Allocations every default_host_resource made since the process started (it only grows).
  [[nodiscard]] static std::uint64_t allocation_count() noexcept {
    return allocations_.load(std::memory_order_relaxed);
  }

  friend bool operator==(const default_host_resource&, const default_host_resource&) = default;

 private:
  static inline std::atomic<std::uint64_t> allocations_{0};
};

/// A non-owning reference to a host_resource: the resource must outlive every policy and buffer that refers to
/// it. Default-constructed, it refers to the process-wide default_host_resource (as std::pmr's default resource).
class host_resource_ref {
 public:
  host_resource_ref() noexcept : host_resource_ref(default_instance()) {}

  template <host_resource Resource>
    requires(!std::same_as<Resource, host_resource_ref>)  // copies stay copies
  host_resource_ref(Resource& resource) noexcept  // NOLINT(google-explicit-constructor): as cuda::mr::resource_ref
      : resource_(&resource),
        allocate_([](void* self, std::size_t bytes, std::size_t alignment) {
          return static_cast<Resource*>(self)->allocate(bytes, alignment);
        }),
        deallocate_([](void* self, void* pointer, std::size_t bytes, std::size_t alignment) noexcept {
          static_cast<Resource*>(self)->deallocate(pointer, bytes, alignment);
        }) {}

  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment) const {
    return allocate_(resource_, bytes, alignment);
  }
  void deallocate(void* pointer, std::size_t bytes, std::size_t alignment) const noexcept {
    deallocate_(resource_, pointer, bytes, alignment);
  }

  /// The same resource object.
  friend bool operator==(const host_resource_ref& lhs, const host_resource_ref& rhs) noexcept {
    return lhs.resource_ == rhs.resource_;
  }

 private:
  static default_host_resource& default_instance() noexcept {
    static default_host_resource resource;
    return resource;
  }

  void* resource_;
  void* (*allocate_)(void*, std::size_t, std::size_t);
  void (*deallocate_)(void*, void*, std::size_t, std::size_t) noexcept;
};

static_assert(host_resource<default_host_resource> && host_resource<host_resource_ref> &&
              std::is_trivially_copyable_v<host_resource_ref>);

}  // namespace ngemb
