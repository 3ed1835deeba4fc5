#pragma once
// Stream-ordered device memory resources in the shape of libcu++'s cuda::mr async resources: a resource is anything
// with allocate_async(bytes, alignment, stream) and a noexcept deallocate_async(pointer, bytes, alignment, stream);
// device_resource_ref is a non-owning, type-erased, trivially copyable handle to one (as cuda::mr::resource_ref),
// which device_policy carries and device buffers remember for freeing. An engine hands ngemb its memory pool this
// way; the default resource (cudaMallocAsync on the stream) counts its allocations, so a caller can check that
// nothing went around the pool it handed over. Include this header only from nvcc-compiled code.
#include <cuda_runtime_api.h>

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <type_traits>

#include "ngemb/core/error.hpp"
#include "ngemb/cuda/error.cuh"

namespace ngemb {

/// A stream-ordered device memory resource: allocate_async returns device memory aligned to `alignment` (a power of
/// two), usable by work queued on `stream` after the call, or throws (std::bad_alloc when the memory is not
/// there); deallocate_async takes back what allocate_async returned, with the same bytes and alignment, once the
/// work queued on `stream` before it is done, and cannot fail.
template <class R>
concept device_resource =
    requires(R& resource, void* pointer, std::size_t bytes, std::size_t alignment, cudaStream_t stream) {
      { resource.allocate_async(bytes, alignment, stream) } -> std::same_as<void*>;
      { resource.deallocate_async(pointer, bytes, alignment, stream) } noexcept;
    };

/// The process-wide default: cudaMallocAsync / cudaFreeAsync on the given stream (the device's default memory
/// pool), so creating and dropping scratch per call never synchronises the device the way cudaFree does.
/// Stateless; every instance counts into one process-wide counter.
class default_device_resource {
 public:
  /// What cudaMallocAsync guarantees (cuda::mr's default alignment too).
  static constexpr std::size_t max_alignment = 256;

  void* allocate_async(std::size_t bytes, std::size_t alignment, cudaStream_t stream) {
    if (alignment == 0 || alignment > max_alignment || (alignment & (alignment - 1)) != 0) {
      throw invalid_argument("default_device_resource: alignment " + std::to_string(alignment) +
                             " is not a power of two up to " + std::to_string(max_alignment));
    }
    void* memory = nullptr;
    const cudaError_t status = cudaMallocAsync(&memory, bytes, stream);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not a sticky error: clear it so the next call does not report it again
      throw std::bad_alloc();
    }
    NGEMB_CUDA_CHECK(status);
    allocations_.fetch_add(1, std::memory_order_relaxed);
    return memory;
  }

  void deallocate_async(void* pointer, std::size_t /*bytes*/, std::size_t /*alignment*/,
                        cudaStream_t stream) noexcept {
    cudaFreeAsync(pointer, stream);  // a failure cannot be reported from a destructor; the pointer is ours alone
  }

  /// Allocations every default_device_resource made since the process started (it only grows).
  [[nodiscard]] static std::uint64_t allocation_count() noexcept {
    return allocations_.load(std::memory_order_relaxed);
  }

  friend bool operator==(const default_device_resource&, const default_device_resource&) = default;

 private:
  static inline std::atomic<std::uint64_t> allocations_{0};
};

/// A non-owning reference to a device_resource: the resource must outlive every policy and buffer that refers to
/// it. Default-constructed, it refers to the process-wide default_device_resource.
class device_resource_ref {
 public:
  device_resource_ref() noexcept : device_resource_ref(default_instance()) {}

  template <device_resource Resource>
    requires(!std::same_as<Resource, device_resource_ref>)  // copies stay copies
  device_resource_ref(Resource& resource) noexcept  // NOLINT(google-explicit-constructor): as cuda::mr::resource_ref
      : resource_(&resource),
        allocate_([](void* self, std::size_t bytes, std::size_t alignment, cudaStream_t stream) {
          return static_cast<Resource*>(self)->allocate_async(bytes, alignment, stream);
        }),
        deallocate_([](void* self, void* pointer, std::size_t bytes, std::size_t alignment,
                       cudaStream_t stream) noexcept {
          static_cast<Resource*>(self)->deallocate_async(pointer, bytes, alignment, stream);
        }) {}

  [[nodiscard]] void* allocate_async(std::size_t bytes, std::size_t alignment, cudaStream_t stream) const {
    return allocate_(resource_, bytes, alignment, stream);
  }
  void deallocate_async(void* pointer, std::size_t bytes, std::size_t alignment, cudaStream_t stream) const noexcept {
    deallocate_(resource_, pointer, bytes, alignment, stream);
  }

  /// The same resource object.
  friend bool operator==(const device_resource_ref& lhs, const device_resource_ref& rhs) noexcept {
    return lhs.resource_ == rhs.resource_;
  }

 private:
  static default_device_resource& default_instance() noexcept {
    static default_device_resource resource;
    return resource;
  }

  void* resource_;
  void* (*allocate_)(void*, std::size_t, std::size_t, cudaStream_t);
  void (*deallocate_)(void*, void*, std::size_t, std::size_t, cudaStream_t) noexcept;
};

static_assert(device_resource<default_device_resource> && device_resource<device_resource_ref> &&
              std::is_trivially_copyable_v<device_resource_ref>);

}  // namespace ngemb
