#pragma once
// LongCat's polynomial n-gram hash (SPEC §2), bit-exact with the official module:
//   id_i(p) = (t_0 + sum_{j=1..n-1} t_j * w_{i,j}) mod m_i,   w_{i,j} = V^j mod m_i,   i = (n-2)*K + k.
// When the whole sum provably stays below 2^64 (LongCat: < 2^44) it is reduced once per table; otherwise every
// term is reduced first (SPEC: same residue). Reductions use Barrett's method: independent multiplies instead of
// a divide, which GPUs emulate in software.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/hash/detail/barrett.hpp"
#include "ngemb/hash/hasher.hpp"

namespace ngemb {

class longcat_hash {
 public:
  /// Limits of the by-value kernel parameter (about 2 KiB); LongCat uses N=4, K=4.
  static constexpr int max_order = 8;
  static constexpr int max_tables = 64;
  static constexpr int max_ignored_tokens = 16;

  /// Everything an element operation needs, by value.
  struct ref_type {
    static constexpr int max_lookback = max_order - 1;

    int tables = 0;
    int splits = 1;
    int lookback_tokens = 0;
    std::int64_t eos = -1;  ///< -1: no segment rule
    int ignored_count = 0;
    std::uint32_t ignored[max_ignored_tokens] = {};
    bool reduce_each_term = false;  ///< set when sum_j t_j * w_{i,j} could exceed 2^64
    std::uint32_t weights[max_tables][max_order - 1] = {};  ///< w_{i,j} = V^j mod m_i for j = 1..n-1
    detail::barrett_modulus moduli[max_tables] = {};
    std::uint64_t row_offsets[max_tables] = {};  ///< exclusive sums of m_i (one concatenated table)

    NGEMB_HD int num_tables() const { return tables; }
    NGEMB_HD int lookback() const { return lookback_tokens; }

    NGEMB_HD bool is_ignored(std::uint32_t token) const {
      for (int i = 0; i < ignored_count; ++i) {
        if (ignored[i] == token) {
          return true;
        }
      }
      return false;
    }

    /// EOS and ignored tokens end the look-back of the tokens after them.
    NGEMB_HD bool cuts_lookback(std::uint32_t token) const {
      return (eos >= 0 && static_cast<std::int64_t>(token) == eos) || is_ignored(token);
    }

    /// `history[j-1]` is t_j (zero past a cut or the start). Writes `tables` ids; an ignored current token gets
    /// id 0 in every table (plus the table's row offset when `concatenated`).
    template <class Id>
    NGEMB_HD void hash(std::uint32_t current, const std::uint32_t* history, Id* ids, bool concatenated) const {
      const bool ignored_current = is_ignored(current);
      // Orders outer, splits inner: the table index i = (n-2)*K + k without a division per table.
      int table = 0;
      for (int terms = 1; terms <= lookback_tokens; ++terms) {  // order n = terms + 1
        for (int split = 0; split < splits; ++split, ++table) {
          std::uint64_t id = 0;
          if (!ignored_current) {
            const detail::barrett_modulus& modulus = moduli[table];
            std::uint64_t sum = current;
            for (int j = 0; j < terms; ++j) {
              const std::uint64_t term = static_cast<std::uint64_t>(history[j]) * weights[table][j];
              sum += reduce_each_term ? modulus.reduce(term) : term;
            }
            id = modulus.reduce(sum);
          }
          ids[table] = static_cast<Id>(id + (concatenated ? row_offsets[table] : 0));
        }
      }
    }
  };

  explicit longcat_hash(const ngram_config& config) : config_(config) {
    config_.validate();
    const std::string limits = "longcat_hash supports N <= " + std::to_string(max_order) + ", K*(N-1) <= " +
                               std::to_string(max_tables) + " and at most " + std::to_string(max_ignored_tokens) +
                               " ignored tokens";
    if (config_.max_order > max_order || config_.num_tables() > max_tables ||
        config_.ignored_tokens.size() > static_cast<std::size_t>(max_ignored_tokens)) {
      throw invalid_argument(limits + "; got N = " + std::to_string(config_.max_order) + ", K*(N-1) = " +
                             std::to_string(config_.num_tables()) + ", " +
                             std::to_string(config_.ignored_tokens.size()) + " ignored tokens");
    }
    ref_.tables = config_.num_tables();
    ref_.splits = config_.splits;
    ref_.lookback_tokens = config_.lookback();
    ref_.eos = config_.eos_token.value_or(-1);
    ref_.ignored_count = static_cast<int>(config_.ignored_tokens.size());
    for (int i = 0; i < ref_.ignored_count; ++i) {
      ref_.ignored[i] = static_cast<std::uint32_t>(config_.ignored_tokens[static_cast<std::size_t>(i)]);
    }
    std::uint64_t offset = 0;
    std::uint64_t largest_modulus = 0;
    for (int table = 0; table < ref_.tables; ++table) {
      const auto rows = static_cast<std::uint32_t>(config_.modulus(table));
      ref_.moduli[table] = detail::barrett_modulus(rows);
      std::uint64_t weight = 1;
      for (int j = 0; j < config_.order_of(table) - 1; ++j) {
        weight = weight * static_cast<std::uint64_t>(config_.vocab_size) % rows;  // both < 2^32: exact
        ref_.weights[table][j] = static_cast<std::uint32_t>(weight);
      }
      ref_.row_offsets[table] = offset;
      offset += rows;
      largest_modulus = std::max<std::uint64_t>(largest_modulus, rows);
    }
    // Largest possible sum: t_0 + (N-1) terms of (V-1)*(m-1). It fits 64 bits iff
    // (V-1) * (N-1)*(m-1) <= 2^64-1 - (V-1); (N-1)*(m-1) < 2^35 cannot overflow itself.
    const std::uint64_t largest_token = static_cast<std::uint64_t>(config_.vocab_size) - 1;
    const std::uint64_t weight_bound = static_cast<std::uint64_t>(config_.lookback()) * (largest_modulus - 1);
    ref_.reduce_each_term =
        weight_bound != 0 && largest_token > (~std::uint64_t{0} - largest_token) / weight_bound;
    total_rows_ = static_cast<std::int64_t>(offset);
  }

  [[nodiscard]] const ref_type& ref() const { return ref_; }
  [[nodiscard]] const ngram_config& config() const { return config_; }
  [[nodiscard]] int num_tables() const { return ref_.tables; }
  [[nodiscard]] int lookback() const { return ref_.lookback_tokens; }
  [[nodiscard]] std::int64_t vocab_size() const { return config_.vocab_size; }
  /// m_i, the row count of sub-table i.
  [[nodiscard]] std::int64_t rows(int table) const { return static_cast<std::int64_t>(ref_.moduli[table].modulus); }
  /// Sum of all m_i: the row count of the concatenated table.
  [[nodiscard]] std::int64_t total_rows() const { return total_rows_; }
  /// First row of sub-table i inside the concatenated table.
  [[nodiscard]] std::int64_t row_offset(int table) const { return static_cast<std::int64_t>(ref_.row_offsets[table]); }

 private:
  ngram_config config_;
  ref_type ref_;
  std::int64_t total_rows_ = 0;
};

static_assert(detail::check_hasher<longcat_hash>());

}  // namespace ngemb
