#pragma once
// Where a forward spends its time, by stage. Timing a device forward means synchronising at each stage boundary,
// which costs overlap, so the clock runs only when asked (profiling), and then every stage's work is complete
// when its time is taken.
#include <array>
#include <chrono>
#include <cstddef>

namespace ngemb {

enum class model_stage : std::size_t { embedding, attention, dense_ffn, moe, norm_and_head, count };

inline const char* name_of(model_stage stage) {
  constexpr const char* names[] = {"embedding", "attention", "dense FFN", "MoE", "norms + lm_head"};
  return names[static_cast<std::size_t>(stage)];
}

struct stage_times {
  std::array<double, static_cast<std::size_t>(model_stage::count)> seconds{};

  double& operator[](model_stage stage) { return seconds[static_cast<std::size_t>(stage)]; }
  double operator[](model_stage stage) const { return seconds[static_cast<std::size_t>(stage)]; }
  [[nodiscard]] double total() const {
    double sum = 0.0;
    for (const double part : seconds) {
      sum += part;
    }
    return sum;
  }
  [[nodiscard]] double share(model_stage stage) const { return total() > 0.0 ? (*this)[stage] / total() : 0.0; }
};

/// mark(policy, stage) charges the time since the previous mark to `stage`; a no-op when disabled.
template <class Policy>
class stage_clock {
 public:
  stage_clock(const Policy& policy, stage_times* times) : times_(times) {
    if (times_ != nullptr) {
      synchronize(policy);
      last_ = std::chrono::steady_clock::now();
    }
  }

  void mark(const Policy& policy, model_stage stage) {
    if (times_ == nullptr) {
      return;
    }
    synchronize(policy);
    const auto now = std::chrono::steady_clock::now();
    (*times_)[stage] += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

 private:
  stage_times* times_;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace ngemb
