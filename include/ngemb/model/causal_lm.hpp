#pragma once
// The whole model as a type: causal_lm<Embedding, Block> = n-gram embedding, num_layers blocks, final norm and
// lm_head, with the per-sequence state (n-gram cache windows and KV cache) for ragged prefill and decode.
//
//   using lm = ngemb::causal_lm<embedding, ngemb::shortcut_block<ngemb::attention<>, ngemb::swiglu<>,
//                                                               ngemb::moe<ngemb::softmax_router<>, ngemb::bf16>>>;
//   auto model = lm::load(ngemb::host_policy{}, "checkpoint/");        // config.json + safetensors
//   auto result = model.generate(ngemb::host_policy{}, {{1, 17, 42}}, {.max_new_tokens = 32});
//
// Checkpoint: config.json (model_config.hpp) and the tensors `model.embed_tokens.weight`,
// `model.ngram_embeddings.*` (SPEC §4), `model.layers.{l}.*` (blocks.hpp), `model.norm.weight`, `lm_head.weight`.
// Loading is strict: a missing, misshapen or unknown tensor is an error naming it.
#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
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
#include "ngemb/io/safetensors.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/blocks.hpp"
#include "ngemb/model/kv_cache.hpp"
#include "ngemb/model/lm_head.hpp"
#include "ngemb/model/model_config.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/model/stage_times.hpp"

namespace ngemb {

/// A decoder block over the KV cache.
template <class B>
concept decoder_block = requires { typename B::policy_type; { B::attention_sublayers } -> std::convertible_to<int>; } &&
    requires(B& block, const B& constant, const typename B::policy_type& policy,
             kv_cache<typename B::policy_type>& cache, view<float> h, block_workspace<typename B::policy_type>& work,
             stage_clock<typename B::policy_type>& clock, tensor_collection& collection,
             const safetensors_checkpoint& checkpoint, const model_config& config) {
      block.forward(policy, cache, 0, h, work, clock);
      constant.save(policy, 0, collection);
      { B::load(policy, checkpoint, 0, config) } -> std::same_as<B>;
    };

/// How many sequences a model serves at once and how long they may grow.
struct sequence_capacity {
  std::size_t max_sequences = 8;
  std::int64_t max_positions = 0;  ///< 0: the config's max_position_embeddings
};

/// Which rows of logits a forward produces: every token's (scoring, tests) or each sequence's last (generation).
enum class logits_for { every_token, last_token };

struct generation_options {
  int max_new_tokens = 16;
  sampling_options sampling;                ///< greedy by default
  std::optional<std::int32_t> stop_token;   ///< a sequence ends after emitting it
  bool profile = false;                     ///< fill generation_result::stages (synchronises between stages)
};

struct generation_progress {
  int step = 0;  ///< 0: the prefill; then one per decode step
  int max_steps = 0;
  std::size_t active_sequences = 0;
  std::size_t generated_tokens = 0;
  double elapsed_seconds = 0.0;
};

struct generation_result {
  std::vector<std::vector<std::int32_t>> tokens;  ///< the new tokens of each prompt
  std::size_t prefill_tokens = 0;
  double prefill_seconds = 0.0;
  std::size_t decode_tokens = 0;  ///< tokens fed through decode steps
  double decode_seconds = 0.0;
  stage_times stages;  ///< when options.profile
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

template <class Embedding, class Block>
constexpr bool check_model_parts() {
  static_assert(check_cached_embedding<Embedding>());
  static_assert(decoder_block<Block>,
                "causal_lm: Block must be a decoder block: policy_type, attention_sublayers, forward(policy, "
                "kv_cache&, layer, h, block_workspace&, stage_clock&), save(policy, layer, tensor_collection&) and "
                "load(policy, checkpoint, layer, model_config) (ngemb::prenorm_block, ngemb::shortcut_block)");
  static_assert(std::is_same_v<typename Embedding::policy_type, typename Block::policy_type>,
                "causal_lm: the embedding and the blocks must run under the same policy");
  return true;
}

}  // namespace detail

template <class Embedding, class Block>
class causal_lm {
  static_assert(detail::check_model_parts<Embedding, Block>());

 public:
  using policy_type = typename Block::policy_type;
  using token_type = std::int32_t;
  using sequence_id = std::int32_t;

  causal_lm(const policy_type& policy, const model_config& config, Embedding embedding, std::vector<Block> blocks,
            lm_head<policy_type> head, sequence_capacity capacity = {})
      : config_(config),
        embedding_(std::move(embedding)),
        blocks_(std::move(blocks)),
        head_(std::move(head)),
        max_positions_(capacity.max_positions > 0 ? capacity.max_positions : config.max_position_embeddings),
        ngram_cache_(policy, config.ngram, capacity.max_sequences, 0),
        kv_cache_(policy, static_cast<int>(config.num_layers) * Block::attention_sublayers, config.num_key_value_heads,
                  config.head_dim, capacity.max_sequences, max_positions_),
        kv_slot_of_(capacity.max_sequences, -1) {
    config_.validate();
    if (blocks_.size() != static_cast<std::size_t>(config_.num_layers)) {
      throw shape_mismatch("causal_lm: num_layers = " + std::to_string(config_.num_layers) + " but " +
                           std::to_string(blocks_.size()) + " blocks were given");
    }
    if (embedding_.output_width() != config_.hidden_size() || head_.vocab() != config_.vocab_size()) {
      throw shape_mismatch("causal_lm: the embedding writes " + std::to_string(embedding_.output_width()) +
                           " values per token and the lm_head scores " + std::to_string(head_.vocab()) +
                           " tokens; the config says hidden_size = " + std::to_string(config_.hidden_size()) +
                           ", vocab_size = " + std::to_string(config_.vocab_size()));
    }
  }

  /// config.json and the tensors from a checkpoint folder; strict (see the header comment).
  static causal_lm load(const policy_type& policy, const std::filesystem::path& folder, sequence_capacity capacity = {}) {
    const model_config config = read_model_config(folder);
    const auto checkpoint = std::make_shared<const safetensors_checkpoint>(folder);
    Embedding embedding = Embedding::load(policy, checkpoint, ngram_names::released_owner, config.ngram);
    std::vector<Block> blocks;
    blocks.reserve(static_cast<std::size_t>(config.num_layers));
    for (int layer = 0; layer < config.num_layers; ++layer) {
      blocks.push_back(Block::load(policy, *checkpoint, layer, config));
    }
    auto head = lm_head<policy_type>::load(policy, *checkpoint, config.hidden_size(), config.vocab_size(),
                                           static_cast<float>(config.rms_norm_eps));
    causal_lm model(policy, config, std::move(embedding), std::move(blocks), std::move(head), capacity);
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

  /// Every parameter under its checkpoint name.
  void collect(const policy_type& policy, tensor_collection& out) const {
    embedding_.save(policy, ngram_names::released_owner, out);
    for (std::size_t layer = 0; layer < blocks_.size(); ++layer) {
      blocks_[layer].save(policy, static_cast<int>(layer), out);
    }
    head_.save(policy, out);
  }

  /// A new, empty sequence. Throws invalid_argument when max_sequences are in use.
  sequence_id start_sequence() {
    const sequence_id sequence = ngram_cache_.allocate();
    try {
      kv_slot_of_[static_cast<std::size_t>(sequence)] = kv_cache_.allocate();
    } catch (...) {
      ngram_cache_.free(sequence);
      throw;
    }
    return sequence;
  }

  void end_sequence(sequence_id sequence) {
    const auto kv_slot = kv_slot_of(sequence, "end_sequence");
    kv_cache_.free(kv_slot);
    ngram_cache_.free(sequence);
    kv_slot_of_[static_cast<std::size_t>(sequence)] = -1;
  }

  /// Tokens the sequence holds so far.
  [[nodiscard]] std::int64_t length(sequence_id sequence) const {
    return kv_cache_.length(kv_slot_of(sequence, "length"));
  }

  /// Appends `tokens` (host memory; sequence b of the ragged batch to sequences[b]) and writes logits (policy
  /// memory, [tokens x V] for every_token, [sequences x V] for last_token). Bad input (unknown or repeated
  /// sequences, token ids outside the vocabulary, a sequence past max_positions, wrong logits size) throws before
  /// any state changes.
  void forward(const policy_type& policy, view<const sequence_id> sequences, ragged_view<const token_type> tokens,
               view<float> logits, logits_for which = logits_for::every_token, stage_times* times = nullptr) {
    const std::size_t count = check_batch(sequences, tokens);
    const auto vocab = static_cast<std::size_t>(config_.vocab_size());
    const auto hidden = static_cast<std::size_t>(config_.hidden_size());
    const std::size_t rows = which == logits_for::every_token ? count : sequences.size();
    if (logits.size() != rows * vocab) {
      throw shape_mismatch("causal_lm::forward: logits must hold " + std::to_string(rows) + " x " +
                           std::to_string(vocab) + " values, got " + std::to_string(logits.size()));
    }
    stage_clock<policy_type> clock(policy, times);
    grow(policy, count, sequences.size());
    copy_to(policy, tokens.values(), tokens_.as_view().subview(0, count));
    copy_to(policy, tokens.offsets(), offsets_.as_view().subview(0, tokens.offsets().size()));
    const ragged_view<const token_type> device_tokens(
        view<const token_type>(tokens_.data(), count),
        view<const std::int64_t>(offsets_.data(), tokens.offsets().size()));
    const view<float> h = hidden_.as_view().subview(0, count * hidden);
    embedding_.forward(policy, ngram_cache_, sequences, device_tokens, h);
    clock.mark(policy, model_stage::embedding);

    kv_cache_.begin(policy, view<const std::int32_t>(kv_slots_), view<const std::int64_t>(sizes_));
    work_.reserve(policy, count * hidden);
    for (std::size_t layer = 0; layer < blocks_.size(); ++layer) {
      blocks_[layer].forward(policy, kv_cache_, static_cast<int>(layer), h, work_, clock);
    }
    if (which == logits_for::every_token) {
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
    kv_cache_.commit();
    ngram_cache_.advance(sequences, device_tokens);
    synchronize(policy);  // the host token and offset arrays may go away when this returns
  }

  /// Runs each prompt to max_new_tokens (or its stop token) in one batch: a ragged prefill, then one decode step
  /// per new token. The sequences are started and ended here. `progress` is called after the prefill and each step.
  generation_result generate(const policy_type& policy, const std::vector<std::vector<token_type>>& prompts,
                             const generation_options& options,
                             const std::function<void(const generation_progress&)>& progress = {}) {
    options.sampling.validate();
    if (options.max_new_tokens < 1) {
      throw invalid_argument("generate: max_new_tokens must be >= 1, got " + std::to_string(options.max_new_tokens));
    }
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      if (prompts[p].empty()) {
        throw invalid_argument("generate: prompt " + std::to_string(p) + " is empty; every sequence needs a token");
      }
      if (static_cast<std::int64_t>(prompts[p].size()) + options.max_new_tokens - 1 > max_positions_) {
        throw invalid_argument("generate: prompt " + std::to_string(p) + " (" + std::to_string(prompts[p].size()) +
                               " tokens) + " + std::to_string(options.max_new_tokens) +
                               " new tokens exceeds max_positions = " + std::to_string(max_positions_));
      }
    }
    generation_result result;
    result.tokens.resize(prompts.size());
    if (prompts.empty()) {
      return result;
    }
    const auto vocab = static_cast<std::size_t>(config_.vocab_size());
    sequence_guard guard(*this, prompts.size());
    typename policy_type::template buffer<float> logits(policy, prompts.size() * vocab);
    std::vector<float> host_logits(prompts.size() * vocab);
    std::vector<std::size_t> active(prompts.size());
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      active[p] = p;
    }
    std::vector<token_type> flat;
    std::vector<std::int64_t> offsets{0};
    for (const auto& prompt : prompts) {
      flat.insert(flat.end(), prompt.begin(), prompt.end());
      offsets.push_back(static_cast<std::int64_t>(flat.size()));
    }
    result.prefill_tokens = flat.size();
    const auto start = std::chrono::steady_clock::now();
    stage_times* times = options.profile ? &result.stages : nullptr;
    // One step: run the active sequences' tokens, sample each one's next token, retire the finished.
    const auto step = [&](int index) {
      std::vector<sequence_id> sequences;
      for (const std::size_t p : active) {
        sequences.push_back(guard.ids[p]);
      }
      const view<float> step_logits = logits.as_view().subview(0, active.size() * vocab);
      forward(policy, view<const sequence_id>(sequences),
              ragged_view<const token_type>(view<const token_type>(flat), view<const std::int64_t>(offsets)),
              step_logits, logits_for::last_token, times);
      copy_to_host(policy, view<const float>(step_logits.data(), step_logits.size()),
                   view<float>(host_logits.data(), step_logits.size()));
      std::vector<std::size_t> still_active;
      for (std::size_t b = 0; b < active.size(); ++b) {
        const std::size_t p = active[b];
        // Sequence p's token i has its own Philox block (seed, p, i): independent of every other sequence and
        // step, and of which prompts share the batch.
        const token_stream stream{options.sampling.seed, p, static_cast<std::uint32_t>(result.tokens[p].size())};
        const token_type next =
            sample_token(view<const float>(host_logits.data() + b * vocab, vocab), options.sampling, stream);
        result.tokens[p].push_back(next);
        const bool stopped = options.stop_token && next == *options.stop_token;
        if (!stopped && static_cast<int>(result.tokens[p].size()) < options.max_new_tokens) {
          still_active.push_back(p);
        }
      }
      active = std::move(still_active);
      flat.clear();
      offsets.assign(1, 0);
      for (const std::size_t p : active) {
        flat.push_back(result.tokens[p].back());
        offsets.push_back(static_cast<std::int64_t>(flat.size()));
      }
      if (progress) {
        std::size_t generated = 0;
        for (const auto& tokens : result.tokens) {
          generated += tokens.size();
        }
        progress({index, options.max_new_tokens - 1, active.size(), generated,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
      }
    };
    step(0);
    const auto prefill_end = std::chrono::steady_clock::now();
    result.prefill_seconds = std::chrono::duration<double>(prefill_end - start).count();
    for (int index = 1; !active.empty(); ++index) {
      result.decode_tokens += active.size();
      step(index);
    }
    result.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - prefill_end).count();
    return result;
  }

  [[nodiscard]] const model_config& config() const { return config_; }
  [[nodiscard]] const Embedding& embedding() const { return embedding_; }
  [[nodiscard]] const std::vector<Block>& blocks() const { return blocks_; }
  [[nodiscard]] std::int64_t max_positions() const { return max_positions_; }

 private:
  /// Ends the sequences generate() started, whether it returns or throws.
  struct sequence_guard {
    causal_lm& model;
    std::vector<sequence_id> ids;
    sequence_guard(causal_lm& owner, std::size_t count) : model(owner) {
      for (std::size_t i = 0; i < count; ++i) {
        ids.push_back(model.start_sequence());
      }
    }
    ~sequence_guard() {
      for (const sequence_id id : ids) {
        model.end_sequence(id);
      }
    }
    sequence_guard(const sequence_guard&) = delete;
    sequence_guard& operator=(const sequence_guard&) = delete;
  };

  std::int32_t kv_slot_of(sequence_id sequence, const char* operation) const {
    if (sequence < 0 || static_cast<std::size_t>(sequence) >= kv_slot_of_.size() ||
        kv_slot_of_[static_cast<std::size_t>(sequence)] < 0) {
      throw invalid_argument(std::string("causal_lm::") + operation + ": sequence " + std::to_string(sequence) +
                             " was not started");
    }
    return kv_slot_of_[static_cast<std::size_t>(sequence)];
  }

  /// The batch's token count, with each sequence's KV slot and new-token count in kv_slots_ and sizes_;
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
    kv_slots_.clear();
    sizes_.clear();
    for (std::size_t b = 0; b < sequences.size(); ++b) {
      if (offsets[b + 1] <= offsets[b]) {
        throw invalid_argument("causal_lm::forward: sequence " + std::to_string(b) + " of the batch has " +
                               std::to_string(offsets[b + 1] - offsets[b]) + " tokens; each needs at least one");
      }
      kv_slots_.push_back(kv_slot_of(sequences[b], "forward"));
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

  void reject_unknown_tensors(const policy_type& policy, const safetensors_checkpoint& checkpoint,
                              const std::filesystem::path& folder) const {
    tensor_collection expected(tensor_collection::mode::names_only);
    collect(policy, expected);
    std::set<std::string> known;
    for (const tensor_to_write& tensor : expected.entries()) {
      known.insert(tensor.name);
    }
    for (const std::string& name : checkpoint.names()) {
      if (!known.contains(name)) {
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
  std::int64_t max_positions_;
  ngram_cache<token_type, policy_type> ngram_cache_;
  kv_cache<policy_type> kv_cache_;
  std::vector<std::int32_t> kv_slot_of_;
  block_workspace<policy_type> work_;
  typename policy_type::template buffer<token_type> tokens_;
  typename policy_type::template buffer<std::int64_t> offsets_;
  typename policy_type::template buffer<float> hidden_;
  typename policy_type::template buffer<std::int64_t> last_rows_;
  std::vector<std::int64_t> last_rows_host_;
  std::vector<std::int32_t> kv_slots_;
  std::vector<std::int64_t> sizes_;
};

}  // namespace ngemb
