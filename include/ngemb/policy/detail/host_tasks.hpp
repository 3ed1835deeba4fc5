#pragma once
// Uneven tasks on host_policy's shared pool (detail/host_pool.hpp): a few workers take tasks from an atomic counter
// in the caller's order (largest first, so the last ones claimed are the smallest and the workers finish close
// together), each task running single-threaded under a host_policy{1} whose scratch comes from its worker's arena.
// The MoE layer runs its active experts side by side this way (moe/detail/host_experts.hpp).
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <vector>

#include "ngemb/policy/detail/host_pool.hpp"
#include "ngemb/policy/host_buffer.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/memory_resource.hpp"

namespace ngemb::detail {

/// One worker's scratch: a block taken on the caller's thread from the caller's resource (a user resource need not
/// be thread-safe), handed out bump-wise and reset whenever everything handed out is back (a GEMM frees its scratch
/// when it returns). A request the block cannot hold goes to the caller's resource under a lock the workers share,
/// and is remembered: before the next run the blocks grow to the largest need seen, so once warm (a batch no larger
/// than one seen) the workers never call the resource.
class worker_arena {
 public:
  void* allocate(std::size_t bytes, std::size_t alignment) {
    // What the block would need if this and every live request were in it, wherever the block starts.
    virtual_top_ += bytes + alignment - 1;
    need_ = std::max(need_, virtual_top_);
    const auto base = reinterpret_cast<std::uintptr_t>(block_.data());
    const std::uintptr_t start = (base + top_ + alignment - 1) / alignment * alignment;
    void* memory = nullptr;
    if (block_.size() != 0 && start + bytes <= base + block_.size()) {
      top_ = start + bytes - base;
      memory = reinterpret_cast<void*>(start);
    } else {
      const std::lock_guard lock(*upstream_lock_);
      memory = upstream_.allocate(bytes, alignment);
    }
    ++live_;
    return memory;
  }

  void deallocate(void* pointer, std::size_t bytes, std::size_t alignment) noexcept {
    const auto address = reinterpret_cast<std::uintptr_t>(pointer);
    const auto base = reinterpret_cast<std::uintptr_t>(block_.data());
    if (address < base || address >= base + block_.size()) {
      const std::lock_guard lock(*upstream_lock_);
      upstream_.deallocate(pointer, bytes, alignment);
    }
    if (--live_ == 0) {
      top_ = 0;
      virtual_top_ = 0;
    }
  }

  /// On the caller's thread, before a run: the block holds `bytes` and comes from the policy's resource.
  void prepare(const host_policy& policy, std::size_t bytes, std::mutex& upstream_lock) {
    if (block_.size() < bytes || !(upstream_ == get_memory_resource(policy))) {
      block_ = host_buffer<std::byte>();  // the old block back first, so the two never coexist
      block_ = host_buffer<std::byte>(policy, bytes, for_overwrite);
    }
    upstream_ = get_memory_resource(policy);
    upstream_lock_ = &upstream_lock;
  }

  /// The most any run asked of this worker at once (with alignment padding).
  [[nodiscard]] std::size_t need() const { return need_; }

 private:
  host_buffer<std::byte> block_;
  host_resource_ref upstream_;
  std::mutex* upstream_lock_ = nullptr;
  std::size_t top_ = 0;          ///< end of the block's live allocations
  std::size_t virtual_top_ = 0;  ///< the same counting requests the block could not hold, with worst-case padding
  std::size_t live_ = 0;         ///< allocations not yet given back, in the block or not
  std::size_t need_ = 0;
};

/// Runs uneven tasks on the shared pool and keeps its workers' arenas between runs (a workspace, as the layers'
/// buffers: it grows to the largest need seen).
class host_task_runner {
 public:
  /// Calls task(i, worker_policy) once for each i in [0, count), on up to `workers` threads (the caller's among
  /// them), claiming i in increasing order; worker_policy is `policy` with one thread and the worker's arena as its
  /// resource. The first exception a task throws is rethrown here once every worker has stopped; no task starts
  /// after it.
  template <class Task>
  void run(const host_policy& policy, std::size_t workers, std::size_t count, const Task& task) {
    workers = std::min(workers, count);
    if (workers == 0) {
      return;
    }
    if (arenas_.size() < workers) {
      arenas_.resize(workers);
    }
    std::size_t need = 0;
    for (const worker_arena& arena : arenas_) {  // any worker may take any task: each holds the largest need
      need = std::max(need, arena.need());
    }
    std::mutex upstream_lock;
    for (std::size_t worker = 0; worker < workers; ++worker) {
      arenas_[worker].prepare(policy, need, upstream_lock);
    }
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::vector<std::exception_ptr> failures(workers);
    host_pool::shared().run(workers, [&](std::size_t worker) {
      host_policy single = policy.with(arenas_[worker]);
      single.threads = 1;
      try {
        for (std::size_t i = next.fetch_add(1); i < count && !failed.load(); i = next.fetch_add(1)) {
          task(i, static_cast<const host_policy&>(single));
        }
      } catch (...) {
        failures[worker] = std::current_exception();
        failed.store(true);
      }
    });
    for (const auto& failure : failures) {
      if (failure) {
        std::rethrow_exception(failure);
      }
    }
  }

 private:
  std::vector<worker_arena> arenas_;
};

}  // namespace ngemb::detail
