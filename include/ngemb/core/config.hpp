#pragma once
// The n-gram embedding configuration (SPEC §1): sizes, hash moduli and segment rules, validated with errors
// that name the offending field.
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"

namespace ngemb {

struct ngram_config {
  std::int64_t vocab_size = 0;             ///< V, `vocab_size`: the base vocabulary
  std::int64_t hidden_size = 0;            ///< H, `hidden_size`
  int max_order = 0;                       ///< N, `emb_neighbor_num`: n-gram orders 2..N are used
  int splits = 0;                          ///< K, `emb_split_num`: hash functions (sub-tables) per order
  std::optional<double> ratio;             ///< r, `ngram_vocab_size_ratio`: m_i = trunc(r*V + 2i + 1)
  std::optional<std::int64_t> m_base;      ///< alternative to ratio: m_i = m_base + 2i + 1
  std::optional<std::int64_t> eos_token;   ///< `eos_token_id`: ends a segment (SPEC §2); none disables the rule
  std::vector<std::int64_t> ignored_tokens;  ///< optional: cut the look-back and hash to id 0 (SGLang feature)

  /// Sane upper bounds: far above any released model, low enough that sizes derived from them cannot overflow.
  static constexpr std::int64_t max_hidden_size = std::int64_t{1} << 20;
  static constexpr int max_max_order = 64;
  static constexpr std::int64_t max_tables = std::int64_t{1} << 12;

  /// LongCat-Flash-Lite: V=131072, H=3072, N=4, K=4, r=78, eos=2.
  static ngram_config longcat_flash_lite() {
    ngram_config config;
    config.vocab_size = 131072;
    config.hidden_size = 3072;
    config.max_order = 4;
    config.splits = 4;
    config.ratio = 78.0;
    config.eos_token = 2;
    return config;
  }

  /// T = K*(N-1).
  [[nodiscard]] int num_tables() const { return splits * (max_order - 1); }
  /// N-1 tokens of look-back are all any id needs.
  [[nodiscard]] int lookback() const { return max_order - 1; }
  /// d = floor(H / T).
  [[nodiscard]] std::int64_t row_width() const { return hidden_size / num_tables(); }
  /// The n-gram order of sub-table i = (n-2)*K + k.
  [[nodiscard]] int order_of(int table) const { return table / splits + 2; }

  /// Rows of sub-table i. With a ratio this follows the official `int(r*V + i*2 + 1)` evaluated left to right in
  /// double precision, so non-integer ratios truncate exactly as the reference does.
  [[nodiscard]] std::int64_t modulus(int table) const {
    if (m_base) {
      return *m_base + 2 * static_cast<std::int64_t>(table) + 1;
    }
    const double rows = (ratio.value_or(0.0) * static_cast<double>(vocab_size) + 2.0 * table) + 1.0;
    return static_cast<std::int64_t>(rows);
  }

  [[nodiscard]] std::vector<std::int64_t> moduli() const {
    std::vector<std::int64_t> rows(static_cast<std::size_t>(num_tables()));
    for (int table = 0; table < num_tables(); ++table) {
      rows[static_cast<std::size_t>(table)] = modulus(table);
    }
    return rows;
  }

  /// Throws invalid_argument naming the first field that is out of range.
  void validate() const {
    const auto fail = [](const std::string& message) { throw invalid_argument("ngram_config: " + message); };
    // Token ids are int32 in engines and the hash multiplies them by 32-bit weights in 64 bits.
    if (vocab_size < 1 || vocab_size > (std::int64_t{1} << 31)) {
      fail("vocab_size must be in [1, 2^31], got " + std::to_string(vocab_size));
    }
    if (max_order < 2 || max_order > max_max_order) {
      fail("emb_neighbor_num (N) must be in [2, " + std::to_string(max_max_order) + "], got " +
           std::to_string(max_order));
    }
    if (splits < 1 || splits > max_tables) {
      fail("emb_split_num (K) must be in [1, " + std::to_string(max_tables) + "], got " + std::to_string(splits));
    }
    if (const std::int64_t tables = static_cast<std::int64_t>(splits) * (max_order - 1); tables > max_tables) {
      fail("K*(N-1) = " + std::to_string(tables) + " sub-tables is more than " + std::to_string(max_tables));
    }
    if (hidden_size > max_hidden_size) {
      fail("hidden_size (H) " + std::to_string(hidden_size) + " is larger than 2^20");
    }
    if (hidden_size < num_tables()) {
      fail("hidden_size (H) must be >= K*(N-1) = " + std::to_string(num_tables()) +
           " so every sub-table row has at least one element, got " + std::to_string(hidden_size));
    }
    if (ratio.has_value() == m_base.has_value()) {
      fail("exactly one of ngram_vocab_size_ratio and m_base must be set");
    }
    if (ratio && (!std::isfinite(*ratio) || *ratio <= 0.0)) {
      fail("ngram_vocab_size_ratio must be finite and > 0, got " + std::to_string(*ratio));
    }
    // Checked before modulus() adds to it: every m_i = m_base + 2i + 1 must stay below 2^32.
    if (m_base && (*m_base < 0 || *m_base >= (std::int64_t{1} << 32))) {
      fail("m_base must be in [0, 2^32), got " + std::to_string(*m_base));
    }
    if (ratio && *ratio * static_cast<double>(vocab_size) >= 4294967296.0) {
      fail("ngram_vocab_size_ratio * vocab_size = " + std::to_string(*ratio * static_cast<double>(vocab_size)) +
           " overflows 32-bit row ids (must be < 2^32)");
    }
    for (int table = 0; table < num_tables(); ++table) {
      if (modulus(table) >= (std::int64_t{1} << 32)) {
        fail("modulus of sub-table " + std::to_string(table) + " is " + std::to_string(modulus(table)) +
             ", which overflows 32-bit row ids (must be < 2^32)");
      }
    }
    const auto check_token = [&](std::int64_t token, const std::string& field) {
      if (token < 0 || token >= vocab_size) {
        fail(field + " = " + std::to_string(token) + " is outside [0, vocab_size = " + std::to_string(vocab_size) + ")");
      }
    };
    if (eos_token) {
      check_token(*eos_token, "eos_token_id");
    }
    for (std::size_t i = 0; i < ignored_tokens.size(); ++i) {
      check_token(ignored_tokens[i], "ignored_tokens[" + std::to_string(i) + "]");
    }
  }
};

}  // namespace ngemb
