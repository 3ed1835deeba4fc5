#pragma once
// Input validation that runs under any policy: element operations flag the first bad element in a status word
// (atomically, so host threads and device threads behave the same), and one read-back turns flags into typed
// exceptions that name the offending value and where it is. Kernels therefore never see unchecked offsets.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"

namespace ngemb {

namespace detail {

inline constexpr std::uint64_t no_failure = ~std::uint64_t{0};

/// Keeps the smallest failing index in `word`.
NGEMB_HD inline void record_first_failure(std::uint64_t* word, std::uint64_t index) {
#if NGEMB_IN_DEVICE_CODE
  atomicMin(reinterpret_cast<unsigned long long*>(word), static_cast<unsigned long long>(index));
#else
  std::atomic_ref<std::uint64_t> status(*word);
  std::uint64_t seen = status.load(std::memory_order_relaxed);
  while (index < seen && !status.compare_exchange_weak(seen, index, std::memory_order_relaxed)) {
  }
#endif
}

/// Flags sequence s when offsets[0] != 0, offsets[s] < offsets[s-1], or the last offset != number of values.
struct check_offsets_op {
  view<const std::int64_t> offsets;
  std::uint64_t num_values;
  std::uint64_t* status;

  NGEMB_HD void operator()(std::size_t s) const {
    const bool bad = (s == 0 && offsets[0] != 0) || (s > 0 && offsets[s] < offsets[s - 1]) ||
                     (s + 1 == offsets.size() && static_cast<std::uint64_t>(offsets[s]) != num_values);
    if (bad) {
      record_first_failure(status, s);
    }
  }
};

/// Flags value i when it is outside [0, vocab_size).
template <class Token>
struct check_vocab_op {
  view<const Token> tokens;
  std::int64_t vocab_size;
  std::uint64_t* status;

  NGEMB_HD void operator()(std::size_t i) const {
    const auto token = static_cast<std::int64_t>(tokens[i]);
    if (token < 0 || token >= vocab_size) {
      record_first_failure(status, i);
    }
  }
};

/// Flags value i when it is NaN or infinite.
struct check_finite_op {
  const float* values;
  std::uint64_t* status;

  NGEMB_HD void operator()(std::size_t i) const {
    const float value = values[i];
    if (!(value - value == 0.0f)) {  // NaN and +-inf; no <cmath> call, so it reads the same on host and device
      record_first_failure(status, i);
    }
  }
};

/// Clears the status words (a kernel on a device: a pageable host-to-device copy could block the host).
struct clear_status_op {
  std::uint64_t* status;

  NGEMB_HD void operator()(std::size_t word) const { status[word] = no_failure; }
};

template <class T, class Policy>
T read_one(const Policy& policy, const T* element) {
  T value{};
  copy_to_host(policy, view<const T>(element, 1), view<T>(&value, 1));
  return value;
}

}  // namespace detail

/// Collects checks of inputs in policy memory and raises the first failure with one read-back.
///
/// Operations such as hash_tokens make their own and raise before launching (one synchronising read-back on a
/// device). An engine that cannot afford that sync calls the `_async` variant (hash_tokens_async, ...) with its own
/// `input_checks`: the checks are queued on the stream, the operation runs memory-safely on whatever the input
/// holds, and the engine calls `raise_if_failed()` where it synchronises anyway. The inputs must stay alive until then.
template <class Policy>
class input_checks {
 public:
  static constexpr std::size_t capacity = 8;

  explicit input_checks(const Policy& policy) : policy_(policy), status_(policy, capacity) {
    for_each_n(policy_, capacity, detail::clear_status_op{status_.data()});
  }
  // The queued raisers point at this object.
  input_checks(const input_checks&) = delete;
  input_checks& operator=(const input_checks&) = delete;

  /// The offsets must start at 0, never decrease and end at the number of values. What the sizes alone show
  /// (no offsets, or values but no sequence) is raised at once, even when the checks are deferred.
  template <class T>
  void ragged(ragged_view<const T> batch, std::string name) {
    if (batch.offsets().empty()) {
      throw shape_mismatch(name + ": offsets must hold num_sequences + 1 entries, got none");
    }
    if (batch.num_sequences() == 0 && batch.num_values() != 0) {  // element operations need a sequence to read
      throw shape_mismatch(name + ": offsets describe no sequence but there are " +
                           std::to_string(batch.num_values()) + " values");
    }
    const std::size_t word = add([this, batch, name](std::uint64_t s) {
      const std::int64_t here = detail::read_one(policy_, batch.offsets().data() + s);
      const std::string message = name + ": offsets[" + std::to_string(s) + "] = " + std::to_string(here);
      if (s == 0 && here != 0) {
        throw shape_mismatch(message + " but must be 0");
      }
      if (s > 0) {
        const std::int64_t before = detail::read_one(policy_, batch.offsets().data() + s - 1);
        if (here < before) {
          throw shape_mismatch(message + " is less than offsets[" + std::to_string(s - 1) +
                               "] = " + std::to_string(before));
        }
      }
      throw shape_mismatch(message + " but there are " + std::to_string(batch.num_values()) + " values");
    });
    for_each_n(policy_, batch.offsets().size(),
               detail::check_offsets_op{batch.offsets(), batch.num_values(), status_.data() + word});
  }

  /// Every value must be finite; `row_width` lets the message name the row and column of the first that is not.
  void finite(view<const float> values, std::size_t row_width, std::string name) {
    const std::size_t word = add([this, values, row_width, name](std::uint64_t index) {
      const float value = detail::read_one(policy_, values.data() + index);
      throw invalid_argument(name + ": value " + std::to_string(value) + " at row " +
                             std::to_string(index / row_width) + ", column " + std::to_string(index % row_width) +
                             " is not finite");
    });
    for_each_n(policy_, values.size(), detail::check_finite_op{values.data(), status_.data() + word});
  }

  /// Every token must be in [0, vocab_size). Run after ragged() on the same batch so positions can be named.
  template <class Token>
  void in_vocabulary(ragged_view<const Token> batch, std::int64_t vocab_size, std::string name) {
    const std::size_t word = add([this, batch, vocab_size, name](std::uint64_t index) {
      const auto token = static_cast<std::int64_t>(detail::read_one(policy_, batch.values().data() + index));
      std::vector<std::int64_t> offsets(batch.offsets().size());
      copy_to_host(policy_, batch.offsets(), view<std::int64_t>(offsets));
      const ragged_view<const Token> host_offsets(view<const Token>(nullptr, batch.num_values()), offsets);
      const std::size_t sequence = host_offsets.sequence_of(static_cast<std::int64_t>(index));
      const std::int64_t position = static_cast<std::int64_t>(index) - offsets[sequence];
      throw token_out_of_range(name + ": token id " + std::to_string(token) + " at sequence " +
                                   std::to_string(sequence) + ", position " + std::to_string(position) +
                                   " (flat index " + std::to_string(index) + ") is outside [0, " +
                                   std::to_string(vocab_size) + ")",
                               sequence, position, token);
    });
    for_each_n(policy_, batch.num_values(),
               detail::check_vocab_op<Token>{batch.values(), vocab_size, status_.data() + word});
  }

  /// Reads the status words back (one synchronising copy on a device) and throws the first failure, in the
  /// order the checks were added: shape problems as shape_mismatch, tokens as token_out_of_range.
  void raise_if_failed() {
    std::vector<std::uint64_t> status(capacity);
    copy_to_host(policy_, status_.as_view(), view<std::uint64_t>(status));
    for (std::size_t word = 0; word < raisers_.size(); ++word) {
      if (status[word] != detail::no_failure) {
        raisers_[word](status[word]);
      }
    }
  }

 private:
  /// `raise(first_failing_index)` reads what it needs back and throws the typed error.
  std::size_t add(std::function<void(std::uint64_t)> raise) {
    if (raisers_.size() == capacity) {
      throw invalid_argument("input_checks: more than " + std::to_string(capacity) + " checks in one batch");
    }
    raisers_.push_back(std::move(raise));
    return raisers_.size() - 1;
  }

  Policy policy_;
  typename Policy::template buffer<std::uint64_t> status_;
  std::vector<std::function<void(std::uint64_t)>> raisers_;
};

namespace detail {

/// The caller's deferred checks, or local ones raised before the operation launches.
template <class Policy>
class checks_or_deferred {
 public:
  checks_or_deferred(const Policy& policy, input_checks<Policy>* deferred) {
    if (deferred == nullptr) {
      local_.emplace(policy);
    }
    checks_ = deferred != nullptr ? deferred : &*local_;
  }

  input_checks<Policy>* operator->() { return checks_; }

  /// Raises local failures; deferred ones wait for the caller.
  void before_launch() {
    if (local_) {
      local_->raise_if_failed();
    }
  }

 private:
  std::optional<input_checks<Policy>> local_;
  input_checks<Policy>* checks_ = nullptr;
};

}  // namespace detail

}  // namespace ngemb
