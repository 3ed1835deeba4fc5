#pragma once
// Batched generation over any causal model: a ragged prefill of every prompt, then one decode step per new token,
// each sequence sampling its next token from its last-token logits.
//
//   auto result = ngemb::generate(policy, model, {{1, 17, 42}}, {.max_new_tokens = 32});
//   ngemb::generate(policy, model, prompts, options, [](const ngemb::generation_progress& step) {
//     for (const auto& [prompt, token] : step.new_tokens) { /* each token as it is produced */ }
//   });
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/forward_options.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/model/stage_times.hpp"

namespace ngemb {

/// What generate() needs of a model: sequences it starts and ends, a forward over a ragged batch of them that can
/// write only each sequence's last-token logits, its vocabulary size and how long a sequence may grow.
template <class M>
concept causal_model = requires {
  typename M::policy_type;
  typename M::token_type;
  typename M::sequence_id;
} && requires(M& model, const M& constant, const typename M::policy_type& policy, typename M::sequence_id sequence,
              view<const typename M::sequence_id> sequences, ragged_view<const typename M::token_type> tokens,
              view<float> logits, const forward_options& options) {
  { model.start_sequence() } -> std::same_as<typename M::sequence_id>;
  model.end_sequence(sequence);
  model.forward(policy, sequences, tokens, logits, options);
  { constant.vocab_size() } -> std::convertible_to<std::int64_t>;
  { constant.max_positions() } -> std::convertible_to<std::int64_t>;
};

struct generation_options {
  int max_new_tokens = 16;
  sampling_options sampling{};             ///< greedy by default
  std::optional<std::int32_t> stop_token = std::nullopt;  ///< a sequence ends after emitting it
  bool profile = false;                    ///< fill generation_result::stages (synchronises between stages)
};

/// A token one sequence produced: the index of its prompt and the token.
struct generated_token {
  std::size_t prompt = 0;
  std::int32_t token = 0;
};

struct generation_progress {
  int step = 0;  ///< 0: the prefill; then one per decode step
  int max_steps = 0;
  std::size_t active_sequences = 0;
  std::size_t generated_tokens = 0;
  double elapsed_seconds = 0.0;
  /// The tokens this step produced, one per sequence that ran, in prompt order (a caller streams them as they
  /// come); valid during the call only.
  view<const generated_token> new_tokens{};
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

/// Ends the sequences generate() started, whether it returns or throws.
template <class Model>
struct sequence_guard {
  Model& model;
  std::vector<typename Model::sequence_id> ids;
  sequence_guard(Model& owner, std::size_t count) : model(owner) {
    try {
      for (std::size_t i = 0; i < count; ++i) {
        ids.push_back(model.start_sequence());
      }
    } catch (...) {  // no destructor runs for a constructor that throws: end what was started here
      end_all();
      throw;
    }
  }
  ~sequence_guard() { end_all(); }
  sequence_guard(const sequence_guard&) = delete;
  sequence_guard& operator=(const sequence_guard&) = delete;

 private:
  void end_all() {
    for (const auto id : ids) {
      model.end_sequence(id);
    }
  }
};

}  // namespace detail

/// Runs each prompt to max_new_tokens (or its stop token) in one batch: a ragged prefill, then one decode step
/// per new token. The sequences are started and ended here. `progress` is called after the prefill and each step,
/// with the tokens that step produced (generation_progress::new_tokens).
template <causal_model Model>
generation_result generate(const typename Model::policy_type& policy, Model& model,
                           const std::vector<std::vector<typename Model::token_type>>& prompts,
                           const generation_options& options,
                           const std::function<void(const generation_progress&)>& progress = {}) {
  using token_type = typename Model::token_type;
  using sequence_id = typename Model::sequence_id;
  options.sampling.validate();
  if (options.max_new_tokens < 1) {
    throw invalid_argument("generate: max_new_tokens must be >= 1, got " + std::to_string(options.max_new_tokens));
  }
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    if (prompts[p].empty()) {
      throw invalid_argument("generate: prompt " + std::to_string(p) + " is empty; every sequence needs a token");
    }
    if (static_cast<std::int64_t>(prompts[p].size()) + options.max_new_tokens - 1 > model.max_positions()) {
      throw invalid_argument("generate: prompt " + std::to_string(p) + " (" + std::to_string(prompts[p].size()) +
                             " tokens) + " + std::to_string(options.max_new_tokens) +
                             " new tokens exceeds max_positions = " + std::to_string(model.max_positions()));
    }
  }
  generation_result result;
  result.tokens.resize(prompts.size());
  if (prompts.empty()) {
    return result;
  }
  const auto vocab = static_cast<std::size_t>(model.vocab_size());
  detail::sequence_guard<Model> guard(model, prompts.size());
  typename Model::policy_type::template buffer<float> logits(policy, prompts.size() * vocab);
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
  const forward_options forward{.logits = logits_for::last_token,
                                .profile = options.profile ? &result.stages : nullptr};
  // One step: run the active sequences' tokens, sample each one's next token, retire the finished.
  std::vector<generated_token> new_tokens;
  const auto step = [&](int index) {
    std::vector<sequence_id> sequences;
    for (const std::size_t p : active) {
      sequences.push_back(guard.ids[p]);
    }
    const view<float> step_logits = logits.as_view().subview(0, active.size() * vocab);
    model.forward(policy, view<const sequence_id>(sequences),
                  ragged_view<const token_type>(view<const token_type>(flat), view<const std::int64_t>(offsets)),
                  step_logits, forward);
    copy_to_host(policy, view<const float>(step_logits.data(), step_logits.size()),
                 view<float>(host_logits.data(), step_logits.size()));
    std::vector<std::size_t> still_active;
    new_tokens.clear();
    for (std::size_t b = 0; b < active.size(); ++b) {
      const std::size_t p = active[b];
      // Sequence p's token i has its own Philox block (seed, p, i): independent of every other sequence and
      // step, and of which prompts share the batch.
      const token_stream stream{options.sampling.seed, p, static_cast<std::uint32_t>(result.tokens[p].size())};
      const token_type next =
          sample_token(view<const float>(host_logits.data() + b * vocab, vocab), options.sampling, stream);
      result.tokens[p].push_back(next);
      new_tokens.push_back({p, next});
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
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                view<const generated_token>(new_tokens)});
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

}  // namespace ngemb
