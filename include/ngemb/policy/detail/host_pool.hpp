#pragma once
// The threads behind host_policy: started once and reused, because a decode step of a small model issues hundreds
// of parallel loops and starting threads for each (tens of microseconds apiece) cost more than the loops' work.
//
// run(count, chunk) calls chunk(0..count-1), each exactly once. The caller claims chunks itself alongside the pool
// threads, so a run always completes even when every pool thread is busy, and a chunk may itself call run (a
// nested loop): nothing ever waits for a chunk that nobody is running.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace ngemb::detail {

class host_pool {
 public:
  static host_pool& shared() {
    static host_pool pool;
    return pool;
  }

  host_pool() = default;
  host_pool(const host_pool&) = delete;
  host_pool& operator=(const host_pool&) = delete;
  ~host_pool() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_available_.notify_all();
    for (std::thread& thread : threads_) {
      thread.join();
    }
  }

  /// `chunk` must not throw (for_each_n catches inside it).
  template <class Chunk>
  void run(std::size_t count, const Chunk& chunk) {
    batch work{[](const void* body, std::size_t index) { (*static_cast<const Chunk*>(body))(index); }, &chunk, count};
    {
      const std::lock_guard lock(mutex_);
      start_threads(count - 1);
      queue_.push_back(&work);
    }
    work_available_.notify_all();
    claim_chunks(work);
    std::unique_lock lock(mutex_);
    // Taken off the queue here at the latest, so no thread can join the batch after this point.
    if (const auto queued = std::find(queue_.begin(), queue_.end(), &work); queued != queue_.end()) {
      queue_.erase(queued);
    }
    batch_done_.wait(lock, [&] { return work.finished == work.count && work.helpers == 0; });
  }

 private:
  struct batch {
    void (*invoke)(const void*, std::size_t);
    const void* body;
    std::size_t count;
    std::atomic<std::size_t> next{0};
    std::size_t finished = 0;  // guarded by mutex_
    std::size_t helpers = 0;   // pool threads inside the batch; guarded by mutex_
  };

  void claim_chunks(batch& work) {
    for (std::size_t index = work.next.fetch_add(1); index < work.count; index = work.next.fetch_add(1)) {
      work.invoke(work.body, index);
      bool last = false;
      {
        const std::lock_guard lock(mutex_);
        last = ++work.finished == work.count;
      }
      if (last) {
        batch_done_.notify_all();
      }
    }
  }

  /// Grows the pool to `wanted` threads (it never shrinks); called with mutex_ held.
  void start_threads(std::size_t wanted) {
    while (threads_.size() < wanted) {
      threads_.emplace_back([this] { serve(); });
    }
  }

  void serve() {
    std::unique_lock lock(mutex_);
    for (;;) {
      work_available_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) {
        return;
      }
      batch& work = *queue_.front();
      if (work.next.load() >= work.count) {  // every chunk claimed: nothing left to help with
        queue_.pop_front();
        continue;
      }
      ++work.helpers;
      lock.unlock();
      claim_chunks(work);
      lock.lock();
      if (--work.helpers == 0 && work.finished == work.count) {
        batch_done_.notify_all();
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable work_available_;
  std::condition_variable batch_done_;
  std::deque<batch*> queue_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;
};

}  // namespace ngemb::detail
