#pragma once
// The whole model as a type: causal_lm<Embedding, Block, Mtp = no_mtp, HeadWeight = float> = n-gram embedding, num_layers
// blocks, final norm and lm_head (W_lm stored as HeadWeight), with the per-sequence state (n-gram cache windows and the attention's cache) for ragged prefill and
// decode; optionally the MTP module (model/mtp.hpp), the draft of speculative decoding.
//
//   using lm = ngemb::presets::longcat_shortcut<>::model;             // or causal_lm<embedding, your block>
//   auto model = lm::load(ngemb::host_policy{}, "checkpoint/");        // config.json + safetensors
//   auto result = ngemb::generate(ngemb::host_policy{}, model, {{1, 17, 42}}, {.max_new_tokens = 32});
//
// Checkpoint: config.json (model_config.hpp) and the tensors `model.embed_tokens.weight`,
// `model.ngram_embeddings.*` (SPEC §4), `model.layers.{l}.*` (blocks.hpp), `model.norm.weight`, `lm_head.weight`.
// Loading is strict: a missing, misshapen or unknown tensor is an error naming it, except `model.mtp.*` (the MTP
// module), which is ignored as Hugging Face ignores it unless load_options::mtp asks for it (then it is checked as
// strictly, and saved with the model), and `model.ngram_embeddings.*` under load_options::drop_ngram_embedding.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ngemb/cache/ngram_cache.hpp"
#include "ngemb/core/checked.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/embed/cached_embedding.hpp"
#include "ngemb/io/checkpoint_folder.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/blocks.hpp"
#include "ngemb/model/config_json.hpp"
#include "ngemb/model/detail/workspace.hpp"
#include "ngemb/model/forward_options.hpp"
#include "ngemb/model/lm_head.hpp"
#include "ngemb/model/model_config.hpp"
#include "ngemb/model/mtp.hpp"
#include "ngemb/model/stage_times.hpp"
#include "ngemb/model/sublayer_shape.hpp"

namespace ngemb {

/// How many sequences a model serves at once and how long they may grow.
struct sequence_capacity {
  std::size_t max_sequences = 8;
  std::int64_t max_positions = 0;  ///< 0: the config's max_position_embeddings
  /// Draft tokens a speculative step may verify per sequence: up to max_draft + 1 tokens (the last token and its
  /// drafts) stay pending at once (forward_options::pending, embed_ahead).
  int max_draft = 0;
};

/// What causal_lm::load reads besides the model itself.
struct load_options {
  /// Also load the MTP module (`model.mtp.*`, model/mtp.hpp); needs a model type with an Mtp part. When false its
  /// tensors are ignored.
  bool mtp = false;
  /// Load a checkpoint with an n-gram embedding (model_type "longcat_flash_ngram") into a model type whose embedding
  /// is plain (presets::longcat_flash): only the base table `model.embed_tokens.weight` is read, the n-gram tables
  /// `model.ngram_embeddings.*` are ignored, and the model's config becomes the plain "longcat_flash" one (so save()
  /// writes a checkpoint that loads without this option). The paper's draft model: the target's weights without the
  /// n-gram lookups. invalid_argument for a model type whose embedding reads n-gram tables or a checkpoint of
  /// another model_type.
  bool drop_ngram_embedding = false;
  /// How the safetensors files are mapped: whole (the default), or on demand, only the ranges the parts read (a
  /// sharded_store rank then maps just its rows of the n-gram tables).
  checkpoint_mapping mapping = checkpoint_mapping::whole_files;
};

namespace detail {

/// out row s = in row rows[s]: the last token of each sequence, ahead of the lm_head.
struct gather_last_rows_op {
  const float* in;
  const std::int64_t* rows;
  float* out;
  std::size_t width;
  NGEMB_HD void operator()(std::size_t i) const {
    out[i] = in[static_cast<std::size_t>(rows[i / width]) * width + i % width];
  }
};

/// Row r of a step's embedding output: a row computed this step (source >= 0) or one embedded ahead
/// (source = -1 - its index in the ahead rows).
struct assemble_rows_op {
  const float* computed;
  const float* ahead;
  const std::int64_t* sources;
  float* out;
  std::size_t width;
  NGEMB_HD void operator()(std::size_t i) const {
    const std::int64_t source = sources[i / width];
    const float* row = source >= 0 ? computed + static_cast<std::size_t>(source) * width
                                   : ahead + static_cast<std::size_t>(-1 - source) * width;
    out[i] = row[i % width];
  }
};

/// Row r of `in` goes to row destinations[r] of `out`.
struct scatter_rows_op {
  const float* in;
  const std::int64_t* destinations;
  float* out;
  std::size_t width;
  NGEMB_HD void operator()(std::size_t i) const {
    out[static_cast<std::size_t>(destinations[i / width]) * width + i % width] = in[i];
  }
};

/// The n-gram cache's config. A model without an n-gram embedding (a plain one, which ignores the cache) keeps the
/// smallest valid look-back, one token per sequence, so the cache costs nothing but still tracks its sequences.
inline ngram_config ngram_cache_config(const model_config& config) {
  if (config.has_ngram_embedding()) {
    return config.ngram;
  }
  ngram_config minimal;
  minimal.vocab_size = config.vocab_size();
  minimal.hidden_size = config.hidden_size();
  minimal.max_order = 2;
  minimal.splits = 1;
  minimal.m_base = 1;
  return minimal;
}

template <class Embedding, class Block, class Mtp>
constexpr bool check_model_parts() {
  static_assert(check_cached_embedding<Embedding>());  // its static_asserts name what the embedding lacks
  static_assert(check_decoder_block<Block>());  // its static_asserts name what the block lacks
  static_assert(check_mtp_part<Mtp>());  // its static_asserts name what the MTP part lacks
  if constexpr (requires {
                  typename Mtp::policy_type;
                  typename Block::policy_type;
                }) {
    static_assert(std::is_same_v<typename Mtp::policy_type, typename Block::policy_type>,
                  "causal_lm: the MTP part and the blocks must run under the same policy");
  }
  if constexpr (requires {
                  typename Embedding::policy_type;
                  typename Block::policy_type;
                }) {
    static_assert(std::is_same_v<typename Embedding::policy_type, typename Block::policy_type>,
                  "causal_lm: the embedding and the blocks must run under the same policy");
  }
  return true;
}

}  // namespace detail

template <class Embedding, class Block, class Mtp = no_mtp, class HeadWeight = float>
class causal_lm {
  static_assert(detail::check_model_parts<Embedding, Block, Mtp>());

 public:
  using policy_type = typename Block::policy_type;
  /// The output head; HeadWeight is W_lm's element type (fp32, bf16 or fp16).
  using head_type = lm_head<policy_type, HeadWeight>;
  using token_type = std::int32_t;
  using sequence_id = std::int32_t;
  /// The per-sequence state of every attention sublayer, as the blocks' attention type lays it out.
  using cache_type = typename Block::attention_type::cache_type;
  /// The MTP part this model type can hold (no_mtp: none).
  using mtp_type = Mtp;
  static constexpr bool can_hold_mtp = !std::is_same_v<Mtp, no_mtp>;
  /// Where the MTP module's tensors live in a checkpoint.
  static constexpr const char* mtp_prefix = "model.mtp";
  /// Whether the embedding reads no n-gram tables (plain_embedding), so load_options::drop_ngram_embedding applies.
  static constexpr bool plain_embedding_type = requires { requires !Embedding::reads_ngram_tables; };

  causal_lm(const policy_type& policy, const model_config& config, Embedding embedding, std::vector<Block> blocks,
            head_type head, sequence_capacity capacity = {}, std::optional<Mtp> mtp = std::nullopt)
      : config_(config),
        embedding_(std::move(embedding)),
        blocks_(std::move(blocks)),
        head_(std::move(head)),
        mtp_(std::move(mtp)),
        max_positions_(capacity.max_positions > 0 ? capacity.max_positions : config.max_position_embeddings),
        max_draft_(checked_max_draft(capacity.max_draft)),
        ngram_cache_(policy, detail::ngram_cache_config(config), capacity.max_sequences, max_draft_ + 1),
        cache_(Block::attention_type::make_cache(
            policy, detail::shape_from_config<typename Block::attention_type>(config),
            static_cast<int>(config.num_layers) * Block::attention_sublayers, capacity.max_sequences, max_positions_)),
        slot_of_(capacity.max_sequences, -1),
        pending_(capacity.max_sequences, 0),
        ahead_(capacity.max_sequences) {
    config_.validate();
    ahead_rows_ = typename policy_type::template buffer<float>(
        policy, checked_product("causal_lm: sequences x (max_draft + 1) x H rows embedded ahead",
                                capacity.max_sequences, static_cast<std::size_t>(max_draft_) + 1,
                                static_cast<std::size_t>(config.hidden_size())));
    if (blocks_.size() != static_cast<std::size_t>(config_.num_layers)) {
      throw shape_mismatch("causal_lm: num_layers = " + std::to_string(config_.num_layers) + " but " +
                           std::to_string(blocks_.size()) + " blocks were given");
    }
    if (embedding_.output_width() != config_.hidden_size() || head_.vocab_size() != config_.vocab_size()) {
      throw shape_mismatch("causal_lm: the embedding writes " + std::to_string(embedding_.output_width()) +
                           " values per token and the lm_head scores " + std::to_string(head_.vocab_size()) +
                           " tokens; the config says hidden_size = " + std::to_string(config_.hidden_size()) +
                           ", vocab_size = " + std::to_string(config_.vocab_size()));
    }
    if constexpr (requires(const Mtp& part) {
                    { part.hidden_size() } -> std::convertible_to<std::int64_t>;
                    { part.vocab_size() } -> std::convertible_to<std::int64_t>;
                  }) {
      if (mtp_ && (mtp_->hidden_size() != config_.hidden_size() || mtp_->vocab_size() != config_.vocab_size())) {
        throw shape_mismatch("causal_lm: the MTP module is " + std::to_string(mtp_->hidden_size()) + " wide over " +
                             std::to_string(mtp_->vocab_size()) + " tokens; the config says hidden_size = " +
                             std::to_string(config_.hidden_size()) + ", vocab_size = " +
                             std::to_string(config_.vocab_size()));
      }
    }
  }

  /// config.json and the tensors from a checkpoint folder; strict (see the header comment). options.mtp on a model
  /// type without an MTP part throws invalid_argument.
  static causal_lm load(const policy_type& policy, const std::filesystem::path& folder, sequence_capacity capacity = {},
                        const load_options& options = {}) {
    if (options.mtp && !can_hold_mtp) {
      throw invalid_argument("causal_lm::load: load_options::mtp asks for the MTP module, but this model type has no "
                             "MTP part (causal_lm<Embedding, Block, Mtp> with an Mtp such as mtp_module<...>)");
    }
    if (options.drop_ngram_embedding && !plain_embedding_type) {
      throw invalid_argument("causal_lm::load: load_options::drop_ngram_embedding needs a model type with a plain "
                             "embedding (such as presets::longcat_flash); this one reads the n-gram tables");
    }
    model_config config = read_model_config(folder);
    if (options.drop_ngram_embedding) {
      config = without_ngram_embedding(config, folder);
    }
    const auto checkpoint = std::make_shared<const safetensors_checkpoint>(folder, options.mapping);
    Embedding embedding = Embedding::load(policy, checkpoint, ngram_names::released_owner, config.ngram);
    std::vector<Block> blocks;
    blocks.reserve(static_cast<std::size_t>(config.num_layers));
    for (int layer = 0; layer < config.num_layers; ++layer) {
      blocks.push_back(Block::load(policy, *checkpoint, layer_prefix(layer), config));
    }
    auto head = head_type::load(policy, *checkpoint, "",
                                           {.hidden = config.hidden_size(),
                                            .vocab_size = config.vocab_size(),
                                            .eps = static_cast<float>(config.rms_norm_eps)});
    std::optional<Mtp> mtp;
    if constexpr (can_hold_mtp) {
      if (options.mtp) {
        mtp.emplace(Mtp::load(policy, *checkpoint, mtp_prefix, config));
      }
    }
    causal_lm model(policy, config, std::move(embedding), std::move(blocks), std::move(head), capacity,
                    std::move(mtp));
    model.reject_unknown_tensors(policy, *checkpoint, folder, options.drop_ngram_embedding);
    return model;
  }

  /// Writes config.json and the tensors (sharded above `options.max_shard_bytes`) as the folder `folder`, which
  /// load() reads back. The folder is written whole (io/checkpoint_folder.hpp): into a staging folder beside it that
  /// is then renamed into place, so a failure leaves no partial checkpoint. A folder that already holds files (another
  /// model's checkpoint) is refused with io_error unless `options.overwrite`; then it is replaced as a whole.
  void save(const policy_type& policy, const std::filesystem::path& folder, const save_options& options = {}) const {
    if (options.max_shard_bytes == 0) {
      throw invalid_argument("causal_lm::save: max_shard_bytes must be > 0");
    }
    write_checkpoint_folder(folder, options, [&](const std::filesystem::path& staging) {
      tensor_collection tensors;
      collect(policy, tensors);
      write_safetensors_checkpoint(staging, tensors.tensors(), options.max_shard_bytes);
      detail::write_new_file(staging / "config.json", to_json(config_));
    });
  }
  /// save() with the given shard size and the other options at their defaults.
  void save(const policy_type& policy, const std::filesystem::path& folder, std::size_t max_shard_bytes) const {
    save(policy, folder, save_options{.max_shard_bytes = max_shard_bytes});
  }

  /// Every parameter under its checkpoint name (the MTP module's when the model holds it).
  void collect(const policy_type& policy, tensor_collection& out) const {
    embedding_.save(policy, ngram_names::released_owner, out);
    for (std::size_t layer = 0; layer < blocks_.size(); ++layer) {
      blocks_[layer].save(policy, layer_prefix(static_cast<int>(layer)), out);
    }
    head_.save(policy, "", out);
    if constexpr (can_hold_mtp) {
      if (mtp_) {
        mtp_->save(policy, mtp_prefix, out);
      }
    }
  }

  /// A new, empty sequence. Throws invalid_argument when max_sequences are in use.
  sequence_id start_sequence() {
    const sequence_id sequence = ngram_cache_.allocate();
    try {
      slot_of_[static_cast<std::size_t>(sequence)] = cache_.allocate();
    } catch (...) {
      ngram_cache_.free(sequence);
      throw;
    }
    pending_[static_cast<std::size_t>(sequence)] = 0;
    ahead_[static_cast<std::size_t>(sequence)].clear();
    return sequence;
  }

  void end_sequence(sequence_id sequence) {
    const auto slot = slot_of(sequence, "end_sequence");
    cache_.free(slot);
    ngram_cache_.free(sequence);
    slot_of_[static_cast<std::size_t>(sequence)] = -1;
    pending_[static_cast<std::size_t>(sequence)] = 0;
    ahead_[static_cast<std::size_t>(sequence)].clear();
  }

  /// Tokens the sequence holds so far (its pending ones included).
  [[nodiscard]] std::int64_t length(sequence_id sequence) const {
    return cache_.length(slot_of(sequence, "length"));
  }

  /// Tokens of the sequence fed by pending forwards and not yet committed.
  [[nodiscard]] std::int32_t pending(sequence_id sequence) const {
    static_cast<void>(slot_of(sequence, "pending"));
    return pending_[static_cast<std::size_t>(sequence)];
  }

  /// Appends `tokens` (host memory; sequence b of the ragged batch to sequences[b]) and writes logits (policy
  /// memory, [tokens x V] for logits_for::every_token, [sequences x V] for last_token), timing the stages into
  /// options.profile when set. Bad input (unknown or repeated sequences, token ids outside the vocabulary, a sequence
  /// past max_positions, wrong logits size) throws before any state changes.
  ///
  /// Speculative decoding (options.pending): the tokens stay pending, at most max_draft + 1 per sequence, until
  /// commit_pending() keeps a prefix of them; a forward without `pending` on a sequence with pending tokens throws.
  /// Rows embedded ahead (embed_ahead) for the same leading tokens are reused instead of computed again
  /// (embedding_counts().reused); embedded-ahead tokens the forward does not feed are dropped.
  void forward(const policy_type& policy, view<const sequence_id> sequences, ragged_view<const token_type> tokens,
               view<float> logits, const forward_options& options = {}) {
    const std::size_t count = check_batch(sequences, tokens);
    const auto vocab = static_cast<std::size_t>(config_.vocab_size());
    const auto hidden = static_cast<std::size_t>(config_.hidden_size());
    const std::size_t rows = options.logits == logits_for::every_token ? count : sequences.size();
    if (logits.size() != rows * vocab) {
      throw shape_mismatch("causal_lm::forward: logits must hold " + std::to_string(rows) + " x " +
                           std::to_string(vocab) + " values, got " + std::to_string(logits.size()));
    }
    check_pending_room(sequences, options.pending, "forward");
    stage_clock<policy_type> clock(policy, options.profile);
    grow(policy, count, sequences.size());
    copy_to(policy, tokens.values(), tokens_.as_view().subview(0, count));
    copy_to(policy, tokens.offsets(), offsets_.as_view().subview(0, tokens.offsets().size()));
    const ragged_view<const token_type> device_tokens(
        view<const token_type>(tokens_.data(), count),
        view<const std::int64_t>(offsets_.data(), tokens.offsets().size()));
    const view<float> h = hidden_.as_view().subview(0, count * hidden);
    const bool reused = embed_step(policy, sequences, tokens, device_tokens, h, options.pending);
    clock.mark(policy, model_stage::embedding);

    cache_.begin(policy, view<const slot_id>(slots_), view<const std::int64_t>(sizes_));
    work_.reserve(policy, count * hidden);
    for (std::size_t layer = 0; layer < blocks_.size(); ++layer) {
      blocks_[layer].forward(policy, cache_, static_cast<int>(layer), h, work_, clock);
    }
    run_head(policy, sequences, tokens, h, logits, options);
    clock.mark(policy, model_stage::norm_and_head);
    cache_.commit();
    if (options.pending) {
      if (!reused) {  // otherwise embed_step appended the tokens it computed; the reused ones were already there
        ngram_cache_.append(sequences, device_tokens);
      }
      for (std::size_t b = 0; b < sequences.size(); ++b) {
        pending_[static_cast<std::size_t>(sequences[b])] += static_cast<std::int32_t>(tokens.size_of(b));
      }
    } else {
      ngram_cache_.advance(sequences, device_tokens);
    }
    synchronize(policy);  // the host token and offset arrays may go away when this returns
  }

  /// Verification's result: sequence sequences[b] keeps the first kept[b] of its pending tokens in every cache
  /// (attention and n-gram) and drops the rest, with any rows embedded ahead (host arrays). Everything is checked
  /// before anything changes.
  void commit_pending(view<const sequence_id> sequences, view<const std::int32_t> kept) {
    if (kept.size() != sequences.size()) {
      throw shape_mismatch("causal_lm::commit_pending: " + std::to_string(sequences.size()) + " sequences but " +
                           std::to_string(kept.size()) + " kept counts");
    }
    check_distinct(sequences, "commit_pending");
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      const std::int32_t pending_tokens = pending_[static_cast<std::size_t>(sequences[b])];
      if (kept[b] < 0 || kept[b] > pending_tokens) {
        throw invalid_argument("causal_lm::commit_pending: sequence " + std::to_string(sequences[b]) + " has " +
                               std::to_string(pending_tokens) + " pending tokens, cannot keep " +
                               std::to_string(kept[b]));
      }
    }
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      const auto sequence = static_cast<std::size_t>(sequences[b]);
      const slot_id slot = slot_of_[sequence];
      cache_.truncate(slot, cache_.length(slot) - (pending_[sequence] - kept[b]));
      pending_[sequence] = 0;
      ahead_[sequence].clear();
    }
    ngram_cache_.commit(sequences, kept);
  }

  /// The embedding rows of tokens that will follow each sequence's current (committed and pending) tokens, without
  /// running the layers: rows [tokens x H] (policy memory) for `tokens` (host memory, sequence b after
  /// sequences[b]). The rows are kept, and the next pending forward that feeds the same leading tokens takes them
  /// instead of computing them again (the n-gram-embedding drafter and early rejection compute exactly those; paper
  /// §4.2). A call for a sequence replaces its earlier embedded-ahead tokens, reusing the leading ones that agree.
  /// At most max_draft + 1 tokens per sequence may be pending and ahead together.
  void embed_ahead(const policy_type& policy, view<const sequence_id> sequences, ragged_view<const token_type> tokens,
                   view<float> rows) {
    const std::size_t count = check_batch(sequences, tokens);
    const auto hidden = static_cast<std::size_t>(config_.hidden_size());
    if (rows.size() != count * hidden) {
      throw shape_mismatch("causal_lm::embed_ahead: rows must hold " + std::to_string(count) + " x " +
                           std::to_string(hidden) + " values, got " + std::to_string(rows.size()));
    }
    check_vocabulary(tokens, "embed_ahead");
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      const auto sequence = static_cast<std::size_t>(sequences[b]);
      if (pending_[sequence] + tokens.size_of(b) > max_draft_ + 1) {
        throw invalid_argument("causal_lm::embed_ahead: sequence " + std::to_string(sequences[b]) + " has " +
                               std::to_string(pending_[sequence]) + " pending tokens and cannot hold " +
                               std::to_string(tokens.size_of(b)) + " more ahead (max_draft + 1 = " +
                               std::to_string(max_draft_ + 1) + ")");
      }
    }
    const std::size_t reused = drop_unmatched_ahead(sequences, tokens);
    stage_new_tokens(policy, sequences, tokens);
    if (!new_sequences_.empty()) {  // compute the new rows, record their tokens, and keep the rows ahead
      const view<float> computed = detail::workspace(policy, computed_rows_, (count - reused) * hidden);
      embedding_.forward(policy, ngram_cache_, view<const sequence_id>(new_sequences_), new_tokens_view(), computed);
      ngram_cache_.append(view<const sequence_id>(new_sequences_), new_tokens_view());
      std::vector<std::int64_t>& destinations = row_indices_host_;
      destinations.clear();
      for (std::size_t b = 0; b < sequences.size(); ++b) {
        for (std::int64_t i = matched_[b]; i < tokens.size_of(b); ++i) {
          destinations.push_back(ahead_row(sequences[b], i));
        }
      }
      const view<std::int64_t> staged = detail::workspace(policy, ahead_destinations_, destinations.size());
      copy_to(policy, view<const std::int64_t>(destinations), staged);
      for_each_n(policy, computed.size(),
                 detail::scatter_rows_op{computed.data(), staged.data(), ahead_rows_.data(), hidden});
    }
    std::vector<std::int64_t>& sources = row_indices_host_;
    sources.clear();
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      auto& ahead = ahead_[static_cast<std::size_t>(sequences[b])];
      const view<const token_type> fed = tokens.sequence(b);
      ahead.assign(fed.begin(), fed.end());
      for (std::int64_t i = 0; i < tokens.size_of(b); ++i) {
        sources.push_back(-1 - ahead_row(sequences[b], i));
      }
    }
    const view<std::int64_t> staged = detail::workspace(policy, row_sources_, sources.size());
    copy_to(policy, view<const std::int64_t>(sources), staged);
    for_each_n(policy, rows.size(),
               detail::assemble_rows_op{nullptr, ahead_rows_.data(), staged.data(), rows.data(), hidden});
    embedding_counts_.computed += count - reused;
    synchronize(policy);  // the host index arrays may go away when this returns
  }

  /// Rows the embedding computed (forward and embed_ahead) and rows a pending forward took from embed_ahead
  /// instead of computing them again.
  struct embedding_row_counts {
    std::uint64_t computed = 0;
    std::uint64_t reused = 0;
  };
  [[nodiscard]] embedding_row_counts embedding_counts() const { return embedding_counts_; }

  /// The final-normed rows [tokens x H] (policy memory) of every token of the last forward that asked for them
  /// (forward_options::keep_hidden), in token order; empty otherwise. Valid until the next forward.
  [[nodiscard]] view<const float> hidden_rows() const {
    return view<const float>(hidden_rows_.data(), hidden_row_count_ * static_cast<std::size_t>(config_.hidden_size()));
  }

  /// The final norm and lm_head (the n-gram-embedding drafter's and the MTP drafter's output).
  [[nodiscard]] const head_type& head() const { return head_; }
  [[nodiscard]] head_type& head() { return head_; }
  /// Draft tokens a speculative step may verify per sequence (sequence_capacity::max_draft).
  [[nodiscard]] int max_draft() const { return max_draft_; }

  [[nodiscard]] const model_config& config() const { return config_; }
  [[nodiscard]] const Embedding& embedding() const { return embedding_; }
  /// The embedding, to change its settings (a sharded store's lookup).
  [[nodiscard]] Embedding& embedding() { return embedding_; }
  [[nodiscard]] const std::vector<Block>& blocks() const { return blocks_; }
  [[nodiscard]] std::int64_t max_positions() const { return max_positions_; }
  /// How many sequences may be started at once (sequence_capacity::max_sequences).
  [[nodiscard]] std::size_t max_sequences() const { return slot_of_.size(); }
  [[nodiscard]] std::int64_t vocab_size() const { return config_.vocab_size(); }
  /// Whether the MTP module was loaded (load_options::mtp) or given.
  [[nodiscard]] bool has_mtp() const { return mtp_.has_value(); }
  /// The MTP module; invalid_argument when the model does not hold one.
  [[nodiscard]] Mtp& mtp() { return checked_mtp(*this); }
  [[nodiscard]] const Mtp& mtp() const { return checked_mtp(*this); }

 private:
  template <class Self>
  static auto& checked_mtp(Self& self) {
    if (!self.mtp_) {
      throw invalid_argument("causal_lm::mtp: the model holds no MTP module (load it with load_options::mtp)");
    }
    return *self.mtp_;
  }

  using slot_id = typename cache_type::slot_id;

  /// Row of ahead_rows_ holding the embedded-ahead token `index` of a sequence.
  [[nodiscard]] std::int64_t ahead_row(sequence_id sequence, std::int64_t index) const {
    return static_cast<std::int64_t>(sequence) * (max_draft_ + 1) + index;
  }

  static int checked_max_draft(int max_draft) {
    if (max_draft < 0) {
      throw invalid_argument("causal_lm: sequence_capacity::max_draft must be >= 0, got " + std::to_string(max_draft));
    }
    return max_draft;
  }

  /// Started and listed once.
  void check_distinct(view<const sequence_id> sequences, const char* operation) const {
    std::vector<bool> seen(slot_of_.size(), false);
    for (const sequence_id sequence : sequences) {
      static_cast<void>(slot_of(sequence, operation));
      if (seen[static_cast<std::size_t>(sequence)]) {
        throw invalid_argument(std::string("causal_lm::") + operation + ": sequence " + std::to_string(sequence) +
                               " is listed twice");
      }
      seen[static_cast<std::size_t>(sequence)] = true;
    }
  }

  /// Token ids of a host batch inside the vocabulary, checked before any state changes.
  void check_vocabulary(ragged_view<const token_type> tokens, const char* operation) const {
    for (std::size_t i = 0; i < tokens.num_values(); ++i) {
      const token_type token = tokens.values()[i];
      if (token < 0 || token >= config_.vocab_size()) {
        throw invalid_argument(std::string("causal_lm::") + operation + ": token " + std::to_string(i) + " is " +
                               std::to_string(token) + ", outside the vocabulary [0, " +
                               std::to_string(config_.vocab_size()) + ")");
      }
    }
  }

  /// A plain forward needs no pending tokens; a pending one room for its tokens (sizes_ from check_batch).
  void check_pending_room(view<const sequence_id> sequences, bool pending, const char* operation) const {
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      const std::int32_t held = pending_[static_cast<std::size_t>(sequences[b])];
      if (!pending && held > 0) {
        throw invalid_argument(std::string("causal_lm::") + operation + ": sequence " + std::to_string(sequences[b]) +
                               " has " + std::to_string(held) +
                               " pending tokens; commit_pending them before a forward that is not pending");
      }
      if (pending && held + sizes_[b] > max_draft_ + 1) {
        throw invalid_argument(std::string("causal_lm::") + operation + ": sequence " + std::to_string(sequences[b]) +
                               " would hold " + std::to_string(held + sizes_[b]) +
                               " pending tokens, more than max_draft + 1 = " + std::to_string(max_draft_ + 1) +
                               " (sequence_capacity::max_draft)");
      }
    }
  }

  /// For each sequence b, the length of the agreement of its embedded-ahead tokens with `tokens` (matched_[b]);
  /// the ahead tokens after it leave the n-gram cache. Returns the agreeing rows in all.
  std::size_t drop_unmatched_ahead(view<const sequence_id> sequences, ragged_view<const token_type> tokens) {
    matched_.assign(sequences.size(), 0);
    std::vector<sequence_id> trimmed;
    std::vector<std::int32_t> keep;
    std::size_t agreeing = 0;
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      auto& ahead = ahead_[static_cast<std::size_t>(sequences[b])];
      const view<const token_type> fed = tokens.sequence(b);
      std::size_t same = 0;
      while (same < ahead.size() && same < fed.size() && ahead[same] == fed[same]) {
        ++same;
      }
      matched_[b] = static_cast<std::int64_t>(same);
      agreeing += same;
      if (same < ahead.size()) {
        trimmed.push_back(sequences[b]);
        keep.push_back(pending_[static_cast<std::size_t>(sequences[b])] + static_cast<std::int32_t>(same));
        ahead.resize(same);
      }
    }
    if (!trimmed.empty()) {
      ngram_cache_.truncate_pending(view<const sequence_id>(trimmed), view<const std::int32_t>(keep));
    }
    return agreeing;
  }

  /// The tokens of each sequence after its first matched_[b], as a batch of the sequences that have any
  /// (new_sequences_, and new_tokens_view() in policy memory).
  void stage_new_tokens(const policy_type& policy, view<const sequence_id> sequences,
                        ragged_view<const token_type> tokens) {
    new_sequences_.clear();
    new_tokens_host_.clear();
    new_offsets_host_.assign(1, 0);
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      const view<const token_type> fed = tokens.sequence(b);
      if (static_cast<std::size_t>(matched_[b]) < fed.size()) {
        new_sequences_.push_back(sequences[b]);
        new_tokens_host_.insert(new_tokens_host_.end(), fed.begin() + matched_[b], fed.end());
        new_offsets_host_.push_back(static_cast<std::int64_t>(new_tokens_host_.size()));
      }
    }
    copy_to(policy, view<const token_type>(new_tokens_host_),
            detail::workspace(policy, new_tokens_, new_tokens_host_.size()));
    copy_to(policy, view<const std::int64_t>(new_offsets_host_),
            detail::workspace(policy, new_offsets_, new_offsets_host_.size()));
  }

  [[nodiscard]] ragged_view<const token_type> new_tokens_view() const {
    return {view<const token_type>(new_tokens_.data(), new_tokens_host_.size()),
            view<const std::int64_t>(new_offsets_.data(), new_offsets_host_.size())};
  }

  /// The step's embedding rows into h. A pending forward takes the leading rows embedded ahead that agree with its
  /// tokens and computes (and appends to the n-gram cache) only the others; returns whether it did so (otherwise
  /// nothing was reused and the n-gram cache is the caller's to update). A plain forward drops any rows ahead.
  bool embed_step(const policy_type& policy, view<const sequence_id> sequences, ragged_view<const token_type> tokens,
                  ragged_view<const token_type> device_tokens, view<float> h, bool pending) {
    std::size_t reused = 0;
    if (pending) {
      reused = drop_unmatched_ahead(sequences, tokens);
    } else {
      std::vector<sequence_id> trimmed;
      for (const sequence_id sequence : sequences) {
        if (!ahead_[static_cast<std::size_t>(sequence)].empty()) {
          trimmed.push_back(sequence);
          ahead_[static_cast<std::size_t>(sequence)].clear();
        }
      }
      if (!trimmed.empty()) {
        ngram_cache_.truncate_pending(view<const sequence_id>(trimmed),
                                      view<const std::int32_t>(std::vector<std::int32_t>(trimmed.size(), 0)));
      }
    }
    const std::size_t count = tokens.num_values();
    const auto hidden = static_cast<std::size_t>(config_.hidden_size());
    if (reused == 0) {
      embedding_.forward(policy, ngram_cache_, sequences, device_tokens, h);
      embedding_counts_.computed += count;
      return false;
    }
    stage_new_tokens(policy, sequences, tokens);
    const view<float> computed = detail::workspace(policy, computed_rows_, (count - reused) * hidden);
    if (!new_sequences_.empty()) {
      embedding_.forward(policy, ngram_cache_, view<const sequence_id>(new_sequences_), new_tokens_view(), computed);
      ngram_cache_.append(view<const sequence_id>(new_sequences_), new_tokens_view());
    }
    std::vector<std::int64_t>& sources = row_indices_host_;
    sources.clear();
    std::int64_t next_computed = 0;
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      for (std::int64_t i = 0; i < tokens.size_of(b); ++i) {
        sources.push_back(i < matched_[b] ? -1 - ahead_row(sequences[b], i) : next_computed++);
      }
    }
    const view<std::int64_t> staged = detail::workspace(policy, row_sources_, sources.size());
    copy_to(policy, view<const std::int64_t>(sources), staged);
    for_each_n(policy, h.size(),
               detail::assemble_rows_op{computed.data(), ahead_rows_.data(), staged.data(), h.data(), hidden});
    embedding_counts_.computed += count - reused;
    embedding_counts_.reused += reused;
    for (const sequence_id sequence : sequences) {
      ahead_[static_cast<std::size_t>(sequence)].clear();  // now pending: fed through the layers
    }
    return true;
  }

  /// The final norm and lm_head over every token or each sequence's last; every token's normed rows kept when
  /// options.keep_hidden.
  void run_head(const policy_type& policy, view<const sequence_id> sequences, ragged_view<const token_type> tokens,
                view<const float> h, view<float> logits, const forward_options& options) {
    const auto hidden = static_cast<std::size_t>(config_.hidden_size());
    const std::size_t count = tokens.num_values();
    hidden_row_count_ = 0;
    if (options.keep_hidden) {
      const view<float> normed = detail::workspace(policy, hidden_rows_, count * hidden);
      head_.normalize(policy, count, h, normed);
      hidden_row_count_ = count;
      h = view<const float>(normed);
    }
    if (options.logits == logits_for::every_token) {
      if (options.keep_hidden) {
        head_.forward_normed(policy, count, h, logits);
      } else {
        head_.forward(policy, count, h, logits);
      }
      return;
    }
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      last_rows_host_[b] = tokens.offsets()[b + 1] - 1;
    }
    copy_to(policy, view<const std::int64_t>(last_rows_host_.data(), sequences.size()),
            last_rows_.as_view().subview(0, sequences.size()));
    const view<float> last = work_.normed.as_view().subview(0, sequences.size() * hidden);
    for_each_n(policy, last.size(), detail::gather_last_rows_op{h.data(), last_rows_.data(), last.data(), hidden});
    if (options.keep_hidden) {
      head_.forward_normed(policy, sequences.size(), last, logits);
    } else {
      head_.forward(policy, sequences.size(), last, logits);
    }
  }

  static std::string layer_prefix(int layer) { return "model.layers." + std::to_string(layer); }

  slot_id slot_of(sequence_id sequence, const char* operation) const {
    if (sequence < 0 || static_cast<std::size_t>(sequence) >= slot_of_.size() ||
        slot_of_[static_cast<std::size_t>(sequence)] < 0) {
      throw invalid_argument(std::string("causal_lm::") + operation + ": sequence " + std::to_string(sequence) +
                             " was not started");
    }
    return slot_of_[static_cast<std::size_t>(sequence)];
  }

  /// The batch's token count, with each sequence's cache slot and new-token count in slots_ and sizes_;
  /// invalid_argument for malformed offsets, a sequence with no tokens or one not started.
  std::size_t check_batch(view<const sequence_id> sequences, ragged_view<const token_type> tokens) {
    const view<const std::int64_t> offsets = tokens.offsets();
    if (offsets.size() != sequences.size() + 1 || offsets[0] != 0 ||
        offsets[offsets.size() - 1] != static_cast<std::int64_t>(tokens.num_values())) {
      throw shape_mismatch("causal_lm::forward: " + std::to_string(sequences.size()) +
                           " sequences need that many + 1 offsets from 0 to the token count " +
                           std::to_string(tokens.num_values()) + ", got " + std::to_string(offsets.size()) +
                           " offsets");
    }
    slots_.clear();
    sizes_.clear();
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      if (offsets[b + 1] <= offsets[b]) {
        throw invalid_argument("causal_lm::forward: sequence " + std::to_string(b) + " of the batch has " +
                               std::to_string(offsets[b + 1] - offsets[b]) + " tokens; each needs at least one");
      }
      slots_.push_back(slot_of(sequences[b], "forward"));
      sizes_.push_back(tokens.size_of(b));
    }
    return tokens.num_values();
  }

  void grow(const policy_type& policy, std::size_t count, std::size_t sequences) {
    const auto hidden = static_cast<std::size_t>(config_.hidden_size());
    if (tokens_.size() < count) {
      tokens_ = typename policy_type::template buffer<token_type>(policy, count);
      hidden_ = typename policy_type::template buffer<float>(policy, count * hidden);
    }
    if (offsets_.size() < sequences + 1) {
      offsets_ = typename policy_type::template buffer<std::int64_t>(policy, sequences + 1);
      last_rows_ = typename policy_type::template buffer<std::int64_t>(policy, sequences);
      last_rows_host_.resize(sequences);
    }
  }

  /// Names a checkpoint may hold that this model leaves unread: the MTP module's when it was not asked for, the
  /// n-gram tables when they were dropped.
  [[nodiscard]] bool ignored_on_load(const std::string& name, bool ngram_dropped) const {
    return (!mtp_ && name.starts_with(std::string(mtp_prefix) + ".")) ||
           (ngram_dropped && name.starts_with(ngram_names::module(ngram_names::released_owner) + "."));
  }

  /// LongCat-Flash-Lite's config as LongCat-Flash's: the same model without the n-gram fields.
  static model_config without_ngram_embedding(model_config config, const std::filesystem::path& folder) {
    if (config.model_type != model_config::longcat_flash_ngram_type) {
      throw invalid_argument("causal_lm::load: load_options::drop_ngram_embedding needs a \"" +
                             std::string(model_config::longcat_flash_ngram_type) + "\" checkpoint, but " +
                             folder.string() + " has model_type \"" + config.model_type + "\"");
    }
    ngram_config plain;
    plain.vocab_size = config.ngram.vocab_size;
    plain.hidden_size = config.ngram.hidden_size;
    plain.eos_token = config.ngram.eos_token;
    config.ngram = plain;
    config.model_type = model_config::longcat_flash_type;
    config.validate();
    return config;
  }

  void reject_unknown_tensors(const policy_type& policy, const checkpoint& source, const std::filesystem::path& folder,
                              bool ngram_dropped) const {
    tensor_collection expected(tensor_collection::mode::names_only);
    collect(policy, expected);
    std::set<std::string> known;
    for (const tensor_to_write& tensor : expected.entries()) {
      known.insert(tensor.name);
    }
    known.insert(expected.tolerated().begin(), expected.tolerated().end());
    for (const std::string& name : source.names()) {
      if (!known.contains(name) && !ignored_on_load(name, ngram_dropped)) {
        throw format_error("causal_lm::load: " + folder.string() + " holds tensor \"" + name +
                           "\", which this model type has no parameter for (a different architecture, or a block "
                           "type that does not match the checkpoint)");
      }
    }
  }

  model_config config_;
  Embedding embedding_;
  std::vector<Block> blocks_;
  head_type head_;
  std::optional<Mtp> mtp_;
  std::int64_t max_positions_;
  int max_draft_;
  ngram_cache<token_type, policy_type> ngram_cache_;
  cache_type cache_;
  std::vector<slot_id> slot_of_;
  std::vector<std::int32_t> pending_;         ///< per sequence: tokens of pending forwards not yet committed
  std::vector<std::vector<token_type>> ahead_;  ///< per sequence: tokens embedded ahead, rows in ahead_rows_
  typename policy_type::template buffer<float> ahead_rows_;  ///< [max_sequences x (max_draft + 1) x H]
  embedding_row_counts embedding_counts_;
  std::vector<std::int64_t> matched_;
  std::vector<sequence_id> new_sequences_;
  std::vector<token_type> new_tokens_host_;
  std::vector<std::int64_t> new_offsets_host_;
  typename policy_type::template buffer<token_type> new_tokens_;
  typename policy_type::template buffer<std::int64_t> new_offsets_;
  typename policy_type::template buffer<float> computed_rows_;
  std::vector<std::int64_t> row_indices_host_;
  typename policy_type::template buffer<std::int64_t> ahead_destinations_;
  typename policy_type::template buffer<std::int64_t> row_sources_;
  typename policy_type::template buffer<float> hidden_rows_;
  std::size_t hidden_row_count_ = 0;
  block_workspace<policy_type> work_;
  typename policy_type::template buffer<token_type> tokens_;
  typename policy_type::template buffer<std::int64_t> offsets_;
  typename policy_type::template buffer<float> hidden_;
  typename policy_type::template buffer<std::int64_t> last_rows_;
  std::vector<std::int64_t> last_rows_host_;
  std::vector<slot_id> slots_;
  std::vector<std::int64_t> sizes_;
};

}  // namespace ngemb
