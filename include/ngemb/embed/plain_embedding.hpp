#pragma once
// The plain token embedding: out[t] = E[token t], a row of the [V x H] table `{owner}.embed_tokens.weight`
// (transformers' nn.Embedding). The embedding of the `longcat_flash` model type and of LongCat's MTP module. It
// models cached_embedding so causal_lm takes it where an ngram_embedding goes; the n-gram cache it is handed is
// not read (a plain embedding has no look-back), and the model still advances it.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ngemb/cache/ngram_cache.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/input_checks.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

namespace detail {

/// out[index] = table[token * H + column] for index = row * H + column. A token outside [0, V) (possible only
/// while its check is deferred, and then reported by it) writes zeros instead of reading outside the table.
template <class Weight, class Token>
struct embedding_row_op {
  const Weight* table;
  const Token* tokens;
  float* out;
  std::uint64_t vocab_size;
  std::size_t hidden;

  NGEMB_HD void operator()(std::size_t index) const {
    const std::size_t row = index / hidden;
    const std::size_t column = index % hidden;
    const auto token = static_cast<std::uint64_t>(static_cast<std::int64_t>(tokens[row]));
    out[index] = token < vocab_size ? convert<float>(table[token * hidden + column]) : 0.0f;
  }
};

}  // namespace detail

template <class Weight = float, class Policy = host_policy>
class plain_embedding {
  static_assert(storage_type<Weight>, "plain_embedding<Weight, Policy>: Weight must be float, ngemb::bf16 or ngemb::fp16");

 public:
  using policy_type = Policy;
  using weight_type = Weight;
  /// No n-gram tables: causal_lm can load an n-gram checkpoint's base table alone (load_options::drop_ngram_embedding).
  static constexpr bool reads_ngram_tables = false;

  /// `table`: [V x H] host array, row-major.
  plain_embedding(const Policy& policy, std::int64_t vocab_size, std::int64_t hidden, view<const Weight> table)
      : vocab_size_(vocab_size), hidden_(hidden) {
    if (vocab_size < 1 || hidden < 1) {
      throw invalid_argument("plain_embedding: vocab_size and hidden_size must be >= 1, got " +
                             std::to_string(vocab_size) + " and " + std::to_string(hidden));
    }
    if (table.size() != static_cast<std::size_t>(vocab_size) * static_cast<std::size_t>(hidden)) {
      throw shape_mismatch("plain_embedding: the table must hold V x H = " + std::to_string(vocab_size) + " x " +
                           std::to_string(hidden) + " values, got " + std::to_string(table.size()));
    }
    table_ = upload(policy, table);
  }

  /// `{prefix}.embed_tokens.weight` [V x H] in any float dtype (converted to Weight); format_error naming the
  /// tensor when it is missing or has another shape. Only V and H of `config` are used.
  static plain_embedding load(const Policy& policy, const checkpoint& source, const std::string& prefix,
                              const ngram_config& config) {
    const std::int64_t shape[] = {config.vocab_size, config.hidden_size};
    const std::string name = ngram_names::base_table(prefix);
    check_float_tensor(source, name, shape);  // before allocating what the config asks for
    const std::vector<Weight> table = read_tensor_as<Weight>(source, name, shape);
    return plain_embedding(policy, config.vocab_size, config.hidden_size, view<const Weight>(table));
  }

  /// The cached_embedding form: the table is copied, so the checkpoint is not kept.
  static plain_embedding load(const Policy& policy, const std::shared_ptr<const checkpoint>& source,
                              const std::string& prefix, const ngram_config& config) {
    return load(policy, *source, prefix, config);
  }

  /// The table under the name load() reads, in Weight.
  void save(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
    out.add<Weight>(policy, ngram_names::base_table(prefix), {vocab_size_, hidden_}, table_.as_view());
  }

  [[nodiscard]] std::int64_t output_width() const { return hidden_; }
  [[nodiscard]] std::int64_t vocab_size() const { return vocab_size_; }
  /// The table [V x H] in policy memory.
  [[nodiscard]] view<const Weight> table() const { return table_.as_view(); }

  /// out [tokens x H] (policy memory) = the table's rows of `tokens`. Throws shape_mismatch for bad offsets, a
  /// slot count other than the sequence count or a wrong output size, and token_out_of_range for a token outside
  /// [0, V), before writing (one synchronising read-back on a device).
  template <std::integral Token>
  void forward(const Policy& policy, ngram_cache<Token, Policy>& /*cache*/, view<const std::int32_t> slots,
               ragged_view<const Token> tokens, view<float> out) {
    if (slots.size() != tokens.num_sequences()) {
      throw shape_mismatch("plain_embedding::forward: " + std::to_string(slots.size()) + " slots for " +
                           std::to_string(tokens.num_sequences()) + " sequences");
    }
    forward(policy, tokens, out);
  }

  /// As above, without a cache.
  template <std::integral Token>
  void forward(const Policy& policy, ragged_view<const Token> tokens, view<float> out) {
    const std::size_t count = tokens.num_values();
    const auto hidden = static_cast<std::size_t>(hidden_);
    if (out.size() != count * hidden) {
      throw shape_mismatch("plain_embedding::forward: out must hold tokens x H = " + std::to_string(count) + " x " +
                           std::to_string(hidden) + " values, got " + std::to_string(out.size()));
    }
    input_checks<Policy> checks(policy);
    checks.ragged(tokens, "plain_embedding::forward: tokens");
    checks.in_vocabulary(tokens, vocab_size_, "plain_embedding::forward: tokens");
    checks.raise_if_failed();
    for_each_n(policy, count * hidden,
               detail::embedding_row_op<Weight, Token>{table_.data(), tokens.values().data(), out.data(),
                                                       static_cast<std::uint64_t>(vocab_size_), hidden});
  }

 private:
  std::int64_t vocab_size_;
  std::int64_t hidden_;
  typename Policy::template buffer<Weight> table_;
};

}  // namespace ngemb
