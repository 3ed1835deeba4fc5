#pragma once
// How host_policy runs a MoE layer's active experts (moe.hpp). In a prefill each expert gets a few rows, and one
// after another each expert's small GEMMs would be split across the threads, a fork and join per GEMM; side by side
// each expert runs single-threaded on one worker and streams its own weights. An expert costs its rows plus one (its
// weights are read and widened once: about one row's products), in units of one row's 3 x H x I multiply-adds.
// Experts with more than a worker's share of the whole run alone first, their GEMMs split across the threads (one
// expert with most of the rows, or the only one); so do the smallest few left over after the others fill whole
// rounds of the workers (decode: a handful of one-row experts would otherwise leave a thread idle in the last
// round). A thread is worth as many multiply-adds as in the GEMMs' own split. Each expert runs the same GEMM calls
// either way, and the host GEMMs' thread splits (by whole rows or columns of the output) leave every sum as it is, so
// the outputs are the same bits whatever the plan.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ngemb/policy/detail/host_tasks.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb::detail {

class host_experts {
 public:
  /// Calls run_expert(expert_policy, e) once for each expert e < experts with rows (offsets[e + 1] > offsets[e]);
  /// row_work: the multiply-adds of one row through one expert.
  template <class RunExpert>
  void run(const host_policy& policy, const std::int32_t* offsets, std::size_t experts, std::size_t row_work,
           const RunExpert& run_expert) {
    const auto units = [offsets](std::size_t e) { return static_cast<std::size_t>(offsets[e + 1] - offsets[e]) + 1; };
    active_.clear();
    std::size_t total = 0;
    for (std::size_t e = 0; e < experts; ++e) {
      if (offsets[e + 1] > offsets[e]) {
        active_.push_back(e);
        total += units(e);
      }
    }
    // A thread is worth min_gemm_work_per_thread multiply-adds, as in the GEMMs' own split, under the default
    // policy; a policy that gives threads fewer elements (tests, to run this on small layers) scales it down alike.
    const std::size_t work_per_element = min_gemm_work_per_thread / host_policy{}.min_elements_per_thread;
    const auto workers_for = [&](std::size_t tasks, std::size_t cost) {
      return std::min({static_cast<std::size_t>(policy.resolved_threads()), tasks,
                       cost * row_work / work_per_element / std::max<std::size_t>(1, policy.min_elements_per_thread)});
    };
    std::size_t workers = workers_for(active_.size(), total);
    std::stable_sort(active_.begin(), active_.end(),
                     [&](std::size_t lhs, std::size_t rhs) { return units(lhs) > units(rhs); });
    std::size_t first = 0;  // active_[0, first) run alone: more than a worker's share
    std::size_t rest = total;
    while (workers > 1 && first < active_.size() && units(active_[first]) * workers > total) {
      rest -= units(active_[first]);
      ++first;
    }
    std::size_t last = active_.size();  // active_[last, end) run alone too: the leftover smallest
    workers = workers_for(last - first, rest);
    last = workers > 1 ? last - (last - first) % workers : first;
    for (std::size_t i = 0; i < first; ++i) {
      run_expert(policy, active_[i]);
    }
    runner_.run(policy, workers, last - first, [&](std::size_t i, const host_policy& worker_policy) {
      run_expert(worker_policy, active_[first + i]);
    });
    for (std::size_t i = last; i < active_.size(); ++i) {
      run_expert(policy, active_[i]);
    }
  }

 private:
  std::vector<std::size_t> active_;  ///< the active experts, largest first (reused between calls)
  host_task_runner runner_;
};

}  // namespace ngemb::detail
