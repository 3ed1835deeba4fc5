#pragma once
// ngram_embedding: the whole n-gram embedding of SPEC §3 as one type,
//   e(p) = ( E_0[x_p] + a( sum_i W_i E_i[id_i(p)] ) ) / (1 + T),
// assembled from a hasher (the ids), a store (where E_0 and the E_i live), a projection (the W_i, fused into one
// GEMM) and an amplification a (none: the official module). Structure is the type, sizes come from the config.
//
//   using embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::mmap_store<ngemb::bf16>>;
//   auto embed = embedding::load(ngemb::host_policy{0}, "LongCat-Flash-Lite/");
//   embed.forward(policy, cache, slots, tokens, out);  cache.advance(slots, tokens);   // prefill and decode
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <system_error>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "ngemb/cache/ngram_cache.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/input_checks.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/embed/amplification.hpp"
#include "ngemb/embed/cached_embedding.hpp"
#include "ngemb/embed/detail/embedding_pipeline.hpp"
#include "ngemb/embed/fused_projection.hpp"
#include "ngemb/embed/projection.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/hash/hasher.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/hf_config.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/store/store.hpp"

namespace ngemb {

/// Output element types of a forward.
template <class T>
concept output_element = storage_type<T> || std::is_same_v<T, double>;

namespace detail {

/// Ids, rows and widths of the components must agree; each mismatch names the component and the sub-table.
template <class Hasher, class Store, class Projection>
void check_embedding_parts(const char* who, const Hasher& hasher, const Store& store, const Projection& projection) {
  const auto fail = [&](const std::string& message) { throw shape_mismatch(std::string(who) + ": " + message); };
  if (store.num_tables() != hasher.num_tables() || projection.num_tables() != hasher.num_tables()) {
    fail("the hasher has " + std::to_string(hasher.num_tables()) + " sub-tables, the store " +
         std::to_string(store.num_tables()) + ", the projection " + std::to_string(projection.num_tables()));
  }
  for (int table = 0; table < hasher.num_tables(); ++table) {
    if (store.rows(table) != hasher.rows(table)) {
      fail("sub-table " + std::to_string(table) + " has " + std::to_string(store.rows(table)) +
           " rows but the hash needs m_" + std::to_string(table) + " = " + std::to_string(hasher.rows(table)));
    }
  }
  if (store.vocab_size() != hasher.vocab_size()) {
    fail("the store's vocabulary is " + std::to_string(store.vocab_size()) + ", the hasher's " +
         std::to_string(hasher.vocab_size()));
  }
  if (projection.row_width() != store.row_width()) {
    fail("the projection takes rows of " + std::to_string(projection.row_width()) + " elements, the store holds " +
         std::to_string(store.row_width()));
  }
  if (store.has_base() && projection.output_width() != store.hidden_size()) {
    fail("the projection outputs " + std::to_string(projection.output_width()) + " values but base rows have H = " +
         std::to_string(store.hidden_size()));
  }
}

/// Opens a checkpoint folder as every loader wants it: the config and shared ownership of the mapped files.
inline std::pair<ngram_config, std::shared_ptr<const checkpoint>> open_checkpoint(const std::filesystem::path& path) {
  std::error_code unreadable;  // a failed probe reads as "not a folder"; reading the config then says why
  const std::filesystem::path folder = std::filesystem::is_directory(path, unreadable) ? path : path.parent_path();
  return {read_ngram_config(folder), std::make_shared<const safetensors_checkpoint>(path)};
}

/// The readable failures of a part that does not fit (a constrained parameter would only say "not satisfied"):
/// each part kind's check names the member it lacks.
template <class Hasher, class Store, class Projection>
constexpr bool check_embedding_types() {
  static_assert(check_hasher<Hasher>());
  static_assert(check_store<Store>());
  static_assert(check_projection<Projection>());
  static_assert(std::is_same_v<typename Store::policy_type, typename Projection::policy_type>,
                "ngram_embedding: the store and the projection must live in the same policy's memory");
  return true;
}

}  // namespace detail

template <class Hasher, class Store, class Projection = fused_projection<float, typename Store::policy_type>,
          class Amplification = no_amplification>
class ngram_embedding {
  static_assert(detail::check_embedding_types<Hasher, Store, Projection>());
  static_assert(detail::check_amplification<Amplification, typename Store::policy_type>());

 public:
  using policy_type = typename Store::policy_type;
  using accumulator = typename Projection::accumulator;
  using hasher_type = Hasher;
  using store_type = Store;
  using projection_type = Projection;
  using amplification_type = Amplification;

  /// Checks that the parts agree with the config and each other (shape_mismatch naming the part otherwise).
  ngram_embedding(const ngram_config& config, Store store, Projection projection, Amplification amplification = {})
      : config_(config),
        hasher_(config),
        store_(std::move(store)),
        projection_(std::move(projection)),
        amplification_(std::move(amplification)) {
    detail::check_embedding_parts("ngram_embedding", hasher_, store_, projection_);
    if (!store_.has_base()) {
      throw invalid_argument("ngram_embedding: the store has no base table E_0 (per-layer stores belong to "
                             "per_layer_ngram_embedding)");
    }
    (void)amplification_.ref(output_width());  // throws when built for another width
  }

  /// config.json and the tensors of SPEC §4 from a checkpoint folder (or its index / single .safetensors file).
  static ngram_embedding load(const policy_type& policy, const std::filesystem::path& path) {
    const auto [config, source] = detail::open_checkpoint(path);
    return load(policy, source, ngram_names::released_owner, config);
  }

  /// The embedding of the model or layer `prefix` (ngram_names: the store reads `{prefix}.embed_tokens.weight` and
  /// the module's sub-tables, the projection and amplification the module's). The store may keep `source` alive.
  static ngram_embedding load(const policy_type& policy, const std::shared_ptr<const checkpoint>& source,
                              const std::string& prefix, const ngram_config& config) {
    // The store reads E_0 only where the checkpoint has it (per-layer stores have none); this embedding needs it,
    // so its absence is a format_error naming the tensor.
    (void)source->info(ngram_names::base_table(prefix));
    const std::string module = ngram_names::module(prefix);
    Store store = Store::load(policy, source, prefix, config);
    Projection projection = Projection::load(
        policy, *source, module,
        typename Projection::shape(projection_shape{.num_tables = config.num_tables(),
                                                    .row_width = config.row_width(),
                                                    .output_width = config.hidden_size}));
    Amplification amplification = Amplification::load(
        policy, *source, ngram_names::norm(module),
        typename Amplification::shape(amplification_shape{.width = config.hidden_size}));
    return ngram_embedding(config, std::move(store), std::move(projection), std::move(amplification));
  }

  /// The tensors load() reads, for write_safetensors_checkpoint; config.json is the caller's.
  void save(const policy_type& policy, const std::string& prefix, tensor_collection& out) const {
    const std::string module = ngram_names::module(prefix);
    store_.save(policy, prefix, out);
    projection_.save(policy, module, out);
    amplification_.save(policy, ngram_names::norm(module), out);
  }

  [[nodiscard]] const ngram_config& config() const { return config_; }
  [[nodiscard]] const Hasher& hasher() const { return hasher_; }
  [[nodiscard]] const Store& store() const { return store_; }
  /// The store, to change its settings (a sharded store's lookup); its sizes must stay those of the config.
  [[nodiscard]] Store& store() { return store_; }
  [[nodiscard]] const Projection& projection() const { return projection_; }
  [[nodiscard]] const Amplification& amplification() const { return amplification_; }
  /// H: values per token of the output.
  [[nodiscard]] std::int64_t output_width() const { return projection_.output_width(); }

  /// out [tokens x H] for a ragged batch in which every sequence starts its stream (a prefill). Token and
  /// output views are in the policy's memory. Errors as hash_tokens raises them (before launching: one
  /// synchronising read-back on a device), and shape_mismatch for `out`.
  template <std::integral Token, output_element Out>
  void forward(const policy_type& policy, ragged_view<const Token> tokens, view<Out> out) {
    run(policy, tokens, out, [&](view<std::uint32_t> ids) {
      hash_tokens(policy, hasher_, tokens, ids);
    });
  }

  /// As forward without synchronising: the offset and token checks are queued in `checks` (see input_checks), the
  /// forward stays memory-safe on bad input, and checks.raise_if_failed() reports it later.
  template <std::integral Token, output_element Out>
  void forward_async(const policy_type& policy, ragged_view<const Token> tokens, view<Out> out,
                     input_checks<policy_type>& checks) {
    run(policy, tokens, out, [&](view<std::uint32_t> ids) {
      hash_tokens_async(policy, hasher_, tokens, ids, id_layout::per_table, checks);
    });
  }

  /// As above, with `context[s]` the earlier tokens of sequence s (look-back only).
  template <std::integral Token, output_element Out>
  void forward(const policy_type& policy, ragged_view<const Token> tokens, ragged_view<const Token> context,
               view<Out> out) {
    run(policy, tokens, out, [&](view<std::uint32_t> ids) {
      hash_tokens(policy, hasher_, tokens, context, ids);
    });
  }

  /// As above, with the checks queued in `checks` (see the first forward_async).
  template <std::integral Token, output_element Out>
  void forward_async(const policy_type& policy, ragged_view<const Token> tokens, ragged_view<const Token> context,
                     view<Out> out, input_checks<policy_type>& checks) {
    run(policy, tokens, out, [&](view<std::uint32_t> ids) {
      hash_tokens_async(policy, hasher_, tokens, context, ids, id_layout::per_table, checks);
    });
  }

  /// The next tokens of the sequences in `slots`, with the cache's windows as look-back (prefill and decode).
  /// The cache is not changed: record the tokens with cache.advance / cache.append afterwards.
  template <std::integral Token, output_element Out>
  void forward(const policy_type& policy, ngram_cache<Token, policy_type>& cache, view<const std::int32_t> slots,
               ragged_view<const Token> tokens, view<Out> out) {
    run(policy, tokens, out, [&](view<std::uint32_t> ids) {
      hash_tokens(policy, hasher_, cache, slots, tokens, ids);
    });
  }

  /// As above, with the slot list checked at once on the host and the token checks queued in `checks`.
  template <std::integral Token, output_element Out>
  void forward_async(const policy_type& policy, ngram_cache<Token, policy_type>& cache,
                     view<const std::int32_t> slots, ragged_view<const Token> tokens, view<Out> out,
                     input_checks<policy_type>& checks) {
    run(policy, tokens, out, [&](view<std::uint32_t> ids) {
      hash_tokens_async(policy, hasher_, cache, slots, tokens, ids, id_layout::per_table, checks);
    });
  }

  /// The ids [tokens x T] of the last forward, in policy memory (valid until the next call).
  [[nodiscard]] view<const std::uint32_t> last_ids() const { return {workspace_.ids.data(), last_id_count_}; }

 private:
  /// Checks the output, hashes with `hash(ids)` into the workspace, then gathers, projects and combines.
  template <class Token, class Out, class Hash>
  void run(const policy_type& policy, ragged_view<const Token> tokens, view<Out> out, Hash&& hash) {
    detail::check_output_size("ngram_embedding::forward", tokens.num_values(), output_width(), out.size());
    last_id_count_ = tokens.num_values() * static_cast<std::size_t>(hasher_.num_tables());
    hash(workspace_type::template ensure<std::uint32_t>(policy, workspace_.ids, last_id_count_));
    detail::embed_hashed(policy, store_, projection_, amplification_, tokens.num_values(), tokens.values().data(),
                         workspace_, out);
  }

  using workspace_type = detail::embedding_workspace<policy_type, accumulator>;

  ngram_config config_;
  Hasher hasher_;
  Store store_;
  Projection projection_;
  Amplification amplification_;
  workspace_type workspace_;
  std::size_t last_id_count_ = 0;
};

}  // namespace ngemb
