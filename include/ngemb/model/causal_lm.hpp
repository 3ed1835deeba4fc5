#pragma once
// The whole model as a type: causal_lm<Embedding, Block, Mtp = no_mtp> = n-gram embedding, num_layers blocks, final
// norm and lm_head, with the per-sequence state (n-gram cache windows and the attention's cache) for ragged prefill and
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
// strictly, and saved with the model).
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
};

/// What causal_lm::load reads besides the model itself.
struct load_options {
  /// Also load the MTP module (`model.mtp.*`, model/mtp.hpp); needs a model type with an Mtp part. When false its
  /// tensors are ignored.
  bool mtp = false;
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

template <class Embedding, class Block, class Mtp = no_mtp>
class causal_lm {
  static_assert(detail::check_model_parts<Embedding, Block, Mtp>());

 public:
  using policy_type = typename Block::policy_type;
  using token_type = std::int32_t;
  using sequence_id = std::int32_t;
  /// The per-sequence state of every attention sublayer, as the blocks' attention type lays it out.
  using cache_type = typename Block::attention_type::cache_type;
  /// The MTP part this model type can hold (no_mtp: none).
  using mtp_type = Mtp;
  static constexpr bool can_hold_mtp = !std::is_same_v<Mtp, no_mtp>;
  /// Where the MTP module's tensors live in a checkpoint.
  static constexpr const char* mtp_prefix = "model.mtp";

  causal_lm(const policy_type& policy, const model_config& config, Embedding embedding, std::vector<Block> blocks,
            lm_head<policy_type> head, sequence_capacity capacity = {}, std::optional<Mtp> mtp = std::nullopt)
      : config_(config),
        embedding_(std::move(embedding)),
        blocks_(std::move(blocks)),
        head_(std::move(head)),
        mtp_(std::move(mtp)),
        max_positions_(capacity.max_positions > 0 ? capacity.max_positions : config.max_position_embeddings),
        ngram_cache_(policy, detail::ngram_cache_config(config), capacity.max_sequences, 0),
        cache_(Block::attention_type::make_cache(
            policy, detail::shape_from_config<typename Block::attention_type>(config),
            static_cast<int>(config.num_layers) * Block::attention_sublayers, capacity.max_sequences, max_positions_)),
        slot_of_(capacity.max_sequences, -1) {
    config_.validate();
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
    const model_config config = read_model_config(folder);
    const auto checkpoint = std::make_shared<const safetensors_checkpoint>(folder);
    Embedding embedding = Embedding::load(policy, checkpoint, ngram_names::released_owner, config.ngram);
    std::vector<Block> blocks;
    blocks.reserve(static_cast<std::size_t>(config.num_layers));
    for (int layer = 0; layer < config.num_layers; ++layer) {
      blocks.push_back(Block::load(policy, *checkpoint, layer_prefix(layer), config));
    }
    auto head = lm_head<policy_type>::load(policy, *checkpoint, "",
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
    model.reject_unknown_tensors(policy, *checkpoint, folder);
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
    return sequence;
  }

  void end_sequence(sequence_id sequence) {
    const auto slot = slot_of(sequence, "end_sequence");
    cache_.free(slot);
    ngram_cache_.free(sequence);
    slot_of_[static_cast<std::size_t>(sequence)] = -1;
  }

  /// Tokens the sequence holds so far.
  [[nodiscard]] std::int64_t length(sequence_id sequence) const {
    return cache_.length(slot_of(sequence, "length"));
  }

  /// Appends `tokens` (host memory; sequence b of the ragged batch to sequences[b]) and writes logits (policy
  /// memory, [tokens x V] for logits_for::every_token, [sequences x V] for last_token), timing the stages into
  /// options.profile when set. Bad input (unknown or repeated sequences, token ids outside the vocabulary, a sequence
  /// past max_positions, wrong logits size) throws before any state changes.
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
    stage_clock<policy_type> clock(policy, options.profile);
    grow(policy, count, sequences.size());
    copy_to(policy, tokens.values(), tokens_.as_view().subview(0, count));
    copy_to(policy, tokens.offsets(), offsets_.as_view().subview(0, tokens.offsets().size()));
    const ragged_view<const token_type> device_tokens(
        view<const token_type>(tokens_.data(), count),
        view<const std::int64_t>(offsets_.data(), tokens.offsets().size()));
    const view<float> h = hidden_.as_view().subview(0, count * hidden);
    embedding_.forward(policy, ngram_cache_, sequences, device_tokens, h);
    clock.mark(policy, model_stage::embedding);

    cache_.begin(policy, view<const slot_id>(slots_), view<const std::int64_t>(sizes_));
    work_.reserve(policy, count * hidden);
    for (std::size_t layer = 0; layer < blocks_.size(); ++layer) {
      blocks_[layer].forward(policy, cache_, static_cast<int>(layer), h, work_, clock);
    }
    if (options.logits == logits_for::every_token) {
      head_.forward(policy, count, h, logits);
    } else {
      for (std::size_t b = 0; b < sequences.size(); ++b) {
        last_rows_host_[b] = tokens.offsets()[b + 1] - 1;
      }
      copy_to(policy, view<const std::int64_t>(last_rows_host_.data(), sequences.size()),
              last_rows_.as_view().subview(0, sequences.size()));
      const view<float> last = work_.normed.as_view().subview(0, sequences.size() * hidden);
      for_each_n(policy, last.size(), detail::gather_last_rows_op{h.data(), last_rows_.data(), last.data(), hidden});
      head_.forward(policy, sequences.size(), last, logits);
    }
    clock.mark(policy, model_stage::norm_and_head);
    cache_.commit();
    ngram_cache_.advance(sequences, device_tokens);
    synchronize(policy);  // the host token and offset arrays may go away when this returns
  }

  [[nodiscard]] const model_config& config() const { return config_; }
  [[nodiscard]] const Embedding& embedding() const { return embedding_; }
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

  /// Names a checkpoint may hold that this model leaves unread: the MTP module's when it was not asked for.
  [[nodiscard]] bool ignored_on_load(const std::string& name) const {
    return !mtp_ && name.starts_with(std::string(mtp_prefix) + ".");
  }

  void reject_unknown_tensors(const policy_type& policy, const checkpoint& source,
                              const std::filesystem::path& folder) const {
    tensor_collection expected(tensor_collection::mode::names_only);
    collect(policy, expected);
    std::set<std::string> known;
    for (const tensor_to_write& tensor : expected.entries()) {
      known.insert(tensor.name);
    }
    known.insert(expected.tolerated().begin(), expected.tolerated().end());
    for (const std::string& name : source.names()) {
      if (!known.contains(name) && !ignored_on_load(name)) {
        throw format_error("causal_lm::load: " + folder.string() + " holds tensor \"" + name +
                           "\", which this model type has no parameter for (a different architecture, or a block "
                           "type that does not match the checkpoint)");
      }
    }
  }

  model_config config_;
  Embedding embedding_;
  std::vector<Block> blocks_;
  lm_head<policy_type> head_;
  std::optional<Mtp> mtp_;
  std::int64_t max_positions_;
  ngram_cache<token_type, policy_type> ngram_cache_;
  cache_type cache_;
  std::vector<slot_id> slot_of_;
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
