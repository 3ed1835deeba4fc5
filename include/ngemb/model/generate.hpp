#pragma once
// Batched generation over any causal model: a ragged prefill of every prompt, then one decode step per new token,
// each sequence sampling its next token from its last-token logits.
//
//   auto result = ngemb::generate(policy, model, {{1, 17, 42}}, {.max_new_tokens = 32});
//   ngemb::generate(policy, model, prompts, options, [](const ngemb::generation_progress& step) {
//     for (const auto& [prompt, token] : step.new_tokens) { /* each token as it is produced */ }
//   });
#include <algorithm>
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
#include "ngemb/model/causal_model.hpp"
#include "ngemb/model/forward_options.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/model/stage_times.hpp"
#include "ngemb/spec/drafter.hpp"
#include "ngemb/spec/verify.hpp"

namespace ngemb {

/// Speculative decoding (spec/): a drafter proposes up to draft_tokens tokens per sequence, one target forward
/// verifies them all (Leviathan et al.'s rule: greedy output equals plain greedy decoding token for token, sampled
/// output is distributed as plain sampling), and the caches keep what was accepted.
struct speculative_options {
  drafter_ref drafter{};  ///< none: plain decoding, one target forward per token
  int draft_tokens = 3;   ///< k, at most the model's max_draft (sequence_capacity::max_draft)
};

struct generation_options {
  int max_new_tokens = 16;
  sampling_options sampling{};             ///< greedy by default
  std::optional<std::int32_t> stop_token = std::nullopt;  ///< a sequence ends after emitting it
  bool profile = false;                    ///< fill generation_result::stages (synchronises between stages)
  speculative_options speculative{};
};

/// What speculative decoding did over one generate() call.
struct speculation_stats {
  std::size_t verify_forwards = 0;  ///< target forwards after the prefill, each verifying every running sequence
  std::size_t chains = 0;           ///< (sequence, verify forward) pairs
  std::size_t drafted_tokens = 0;   ///< drafts verified
  std::size_t accepted_tokens = 0;  ///< drafts accepted
  std::size_t emitted_tokens = 0;   ///< tokens the verify forwards produced (after stop tokens and budgets)
  std::size_t generated_tokens = 0;  ///< every new token, the prefill's included
  std::size_t prompts = 0;
  std::vector<std::size_t> accepted_per_prompt;  ///< drafts accepted, per prompt

  /// Tokens a sequence gains per target forward that verifies it (accepted drafts plus the token after them).
  [[nodiscard]] double mean_accepted_length() const {
    return chains == 0 ? 0.0 : static_cast<double>(emitted_tokens) / static_cast<double>(chains);
  }
  /// Target forwards per generated token, counted per sequence (the prefill is one per prompt): 1 for plain
  /// decoding, lower the more drafts are accepted.
  [[nodiscard]] double target_forwards_per_token() const {
    return generated_tokens == 0 ? 0.0
                                 : static_cast<double>(prompts + chains) / static_cast<double>(generated_tokens);
  }
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
  /// The tokens this step produced, in prompt order: one per sequence that ran, or with speculative decoding the
  /// accepted drafts and the token after them (a caller streams them as they come); valid during the call only.
  view<const generated_token> new_tokens{};
};

struct generation_result {
  std::vector<std::vector<std::int32_t>> tokens;  ///< the new tokens of each prompt
  std::size_t prefill_tokens = 0;
  double prefill_seconds = 0.0;
  std::size_t decode_tokens = 0;  ///< tokens fed through decode steps (the last tokens and the drafts, speculating)
  double decode_seconds = 0.0;
  stage_times stages;  ///< when options.profile
  speculation_stats speculation;  ///< when options.speculative has a drafter
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

/// Starts a drafter's sequences with the model's and ends those still running, whether generate returns or throws.
struct drafter_guard {
  const drafter_ref& drafter;
  std::vector<std::int32_t> running;
  drafter_guard(const drafter_ref& owner, const std::vector<std::int32_t>& ids) : drafter(owner) {
    try {
      for (const std::int32_t id : ids) {
        drafter.start_sequence(id);
        running.push_back(id);
      }
    } catch (...) {
      end_all();
      throw;
    }
  }
  ~drafter_guard() { end_all(); }
  drafter_guard(const drafter_guard&) = delete;
  drafter_guard& operator=(const drafter_guard&) = delete;

  void end(std::int32_t id) {
    drafter.end_sequence(id);
    std::erase(running, id);
  }

 private:
  void end_all() {
    for (const std::int32_t id : running) {
      drafter.end_sequence(id);
    }
    running.clear();
  }
};

inline std::size_t count_tokens(const std::vector<std::vector<std::int32_t>>& tokens) {
  std::size_t total = 0;
  for (const auto& sequence : tokens) {
    total += sequence.size();
  }
  return total;
}

/// generate() with a drafter (options.speculative): the prefill samples each prompt's first token as plain
/// generate does; then every step drafts up to k tokens per running sequence, verifies them all in one pending
/// forward, and commits the caches to what was kept. A stop token inside the accepted drafts ends the sequence there:
/// the caches keep the tokens before it, as plain decoding would have fed them.
template <speculative_model Model>
generation_result generate_speculative(const typename Model::policy_type& policy, Model& model,
                                       const std::vector<std::vector<typename Model::token_type>>& prompts,
                                       const generation_options& options,
                                       const std::function<void(const generation_progress&)>& progress) {
  using token_type = typename Model::token_type;
  using sequence_id = typename Model::sequence_id;
  const drafter_ref& drafter = options.speculative.drafter;
  const int k = options.speculative.draft_tokens;
  if (k < 1 || k > model.max_draft()) {
    throw invalid_argument("generate: speculative draft_tokens = " + std::to_string(k) + " must be in [1, " +
                           std::to_string(model.max_draft()) +
                           "], the model's max_draft (sequence_capacity::max_draft)");
  }
  if (drafter.vocab_size() != model.vocab_size()) {
    throw shape_mismatch("generate: the drafter proposes over " + std::to_string(drafter.vocab_size()) +
                         " tokens but the model's vocabulary has " + std::to_string(model.vocab_size()));
  }
  generation_result result;
  result.tokens.resize(prompts.size());
  result.speculation.prompts = prompts.size();
  result.speculation.accepted_per_prompt.assign(prompts.size(), 0);
  if (prompts.empty()) {
    return result;
  }
  const auto vocab = static_cast<std::size_t>(model.vocab_size());
  const bool keep_hidden = drafter.hidden_rows_needed();
  stage_times* const profile_stages = options.profile ? &result.stages : nullptr;
  sequence_guard<Model> guard(model, prompts.size());
  drafter_guard drafting(drafter, std::vector<std::int32_t>(guard.ids.begin(), guard.ids.end()));
  const auto start = std::chrono::steady_clock::now();
  std::vector<generated_token> new_tokens;
  std::vector<std::size_t> active;
  // After the prefill and each verify step: hand the drafter what was kept, retire the finished, report progress.
  std::vector<sequence_id> step_ids;
  std::vector<std::int32_t> kept;
  std::vector<std::int32_t> next;
  const auto finish_step = [&](int index, ragged_view<const token_type> fed, const std::vector<std::size_t>& ran) {
    drafter.observe({view<const std::int32_t>(step_ids), fed, view<const std::int32_t>(kept),
                     view<const std::int32_t>(next)});
    active.clear();
    for (const std::size_t p : ran) {
      const bool stopped = options.stop_token && result.tokens[p].back() == *options.stop_token;
      if (stopped || static_cast<int>(result.tokens[p].size()) >= options.max_new_tokens) {
        drafting.end(guard.ids[p]);
      } else {
        active.push_back(p);
      }
    }
    if (progress) {
      progress({index, options.max_new_tokens - 1, active.size(), count_tokens(result.tokens),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                view<const generated_token>(new_tokens)});
    }
  };

  // The prefill, sampled as plain generate samples it (draw 0 of token_stream{seed, p, 0}).
  std::vector<token_type> flat;
  std::vector<std::int64_t> offsets{0};
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    flat.insert(flat.end(), prompts[p].begin(), prompts[p].end());
    offsets.push_back(static_cast<std::int64_t>(flat.size()));
    step_ids.push_back(guard.ids[p]);
    kept.push_back(static_cast<std::int32_t>(prompts[p].size()));
  }
  result.prefill_tokens = flat.size();
  {
    typename Model::policy_type::template buffer<float> logits(policy, prompts.size() * vocab);
    std::vector<float> host_logits(prompts.size() * vocab);
    model.forward(policy, view<const sequence_id>(step_ids),
                  ragged_view<const token_type>(view<const token_type>(flat), view<const std::int64_t>(offsets)),
                  logits.as_view(),
                  {.logits = logits_for::last_token, .profile = profile_stages, .keep_hidden = keep_hidden});
    copy_to_host(policy, view<const float>(logits.data(), logits.size()), view<float>(host_logits));
    std::vector<std::size_t> ran;
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      const token_type first = sample_token(view<const float>(host_logits.data() + p * vocab, vocab),
                                            options.sampling, token_stream{options.sampling.seed, p, 0});
      result.tokens[p].push_back(first);
      new_tokens.push_back({p, first});
      next.push_back(first);
      ran.push_back(p);
    }
    finish_step(0, ragged_view<const token_type>(view<const token_type>(flat), view<const std::int64_t>(offsets)), ran);
  }
  const auto prefill_end = std::chrono::steady_clock::now();
  result.prefill_seconds = std::chrono::duration<double>(prefill_end - start).count();

  chain_verifier<Model> verifier;
  std::vector<draft_request> requests;
  draft_batch proposed;
  draft_batch chains;
  std::vector<token_type> last_tokens;
  std::vector<std::uint64_t> streams;
  std::vector<std::uint32_t> positions;
  for (int index = 1; !active.empty(); ++index) {
    requests.clear();
    step_ids.clear();
    last_tokens.clear();
    streams.clear();
    positions.clear();
    for (const std::size_t p : active) {
      const auto generated = static_cast<int>(result.tokens[p].size());
      // A step emits at most its drafts + 1 tokens: never past max_new_tokens, so never past max_positions.
      const int drafts = std::min(k, options.max_new_tokens - generated - 1);
      if (drafts > 0) {
        requests.push_back({guard.ids[p], p, static_cast<std::uint32_t>(generated), drafts});
      }
      step_ids.push_back(guard.ids[p]);
      last_tokens.push_back(result.tokens[p].back());
      streams.push_back(p);
      positions.push_back(static_cast<std::uint32_t>(generated));
    }
    proposed.clear();
    if (!requests.empty()) {
      drafter.propose(view<const draft_request>(requests), options.sampling, proposed);
    }
    // One chain per running sequence (empty where nothing was requested), checked against the requests.
    if (proposed.sequences() != requests.size()) {
      throw shape_mismatch("generate: the drafter answered " + std::to_string(proposed.sequences()) +
                           " requests with drafts, expected " + std::to_string(requests.size()));
    }
    const bool has_rows = !proposed.probabilities.empty();
    chains.clear();
    std::size_t request = 0;
    for (std::size_t b = 0; b < active.size(); ++b) {
      if (request < requests.size() && requests[request].sequence == step_ids[b]) {
        const view<const std::int32_t> drafts = proposed.drafts_of(request);
        if (static_cast<int>(drafts.size()) > requests[request].max_tokens) {
          throw invalid_argument("generate: the drafter proposed " + std::to_string(drafts.size()) +
                                 " tokens for sequence " + std::to_string(step_ids[b]) + ", more than the " +
                                 std::to_string(requests[request].max_tokens) + " requested");
        }
        if (has_rows) {
          const auto first = static_cast<std::size_t>(proposed.offsets[request]) * vocab;
          chains.probabilities.insert(chains.probabilities.end(), proposed.probabilities.begin() + first,
                                      proposed.probabilities.begin() + first + drafts.size() * vocab);
        }
        chains.tokens.insert(chains.tokens.end(), drafts.begin(), drafts.end());
        ++request;
      }
      chains.offsets.push_back(static_cast<std::int64_t>(chains.tokens.size()));
    }
    verifier.verify(policy, model, view<const sequence_id>(step_ids), view<const token_type>(last_tokens), chains,
                    view<const std::uint64_t>(streams), view<const std::uint32_t>(positions), options.sampling,
                    keep_hidden, profile_stages);
    kept.clear();
    next.clear();
    new_tokens.clear();
    for (std::size_t b = 0; b < active.size(); ++b) {
      const std::size_t p = active[b];
      const chain_verdict verdict = verifier.verdicts()[b];
      const view<const std::int32_t> drafts = chains.drafts_of(b);
      std::vector<token_type> emitted(drafts.begin(), drafts.begin() + verdict.accepted);
      emitted.push_back(verdict.next);
      int accepted = verdict.accepted;
      if (options.stop_token) {
        const auto stop = std::find(emitted.begin(), emitted.end(), *options.stop_token);
        if (stop != emitted.end()) {  // an accepted draft is the stop token: the sequence ends with it
          emitted.erase(stop + 1, emitted.end());
          accepted = std::min(accepted, static_cast<int>(emitted.size()) - 1);
        }
      }
      kept.push_back(1 + accepted);
      next.push_back(emitted.back());
      for (const token_type token : emitted) {
        result.tokens[p].push_back(token);
        new_tokens.push_back({p, token});
      }
      result.speculation.drafted_tokens += drafts.size();
      result.speculation.accepted_tokens += static_cast<std::size_t>(accepted);
      result.speculation.accepted_per_prompt[p] += static_cast<std::size_t>(accepted);
      result.speculation.emitted_tokens += emitted.size();
    }
    model.commit_pending(view<const sequence_id>(step_ids), view<const std::int32_t>(kept));
    result.decode_tokens += verifier.fed().num_values();
    result.speculation.verify_forwards += 1;
    result.speculation.chains += active.size();
    const std::vector<std::size_t> ran = active;
    finish_step(index, verifier.fed(), ran);
  }
  result.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - prefill_end).count();
  result.speculation.generated_tokens = count_tokens(result.tokens);
  return result;
}

}  // namespace detail

/// Runs each prompt to max_new_tokens (or its stop token) in one batch: a ragged prefill, then one decode step
/// per new token, or with options.speculative's drafter one verify step per draft (speculative_model only). The
/// sequences are started and ended here. `progress` is called after the prefill and each step, with the tokens that
/// step produced (generation_progress::new_tokens).
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
  if (options.speculative.drafter) {
    if constexpr (speculative_model<Model>) {
      return detail::generate_speculative(policy, model, prompts, options, progress);
    } else {
      throw invalid_argument("generate: options.speculative has a drafter, but this model type cannot verify drafts "
                             "(speculative_model: forward_options::pending, commit_pending, max_draft)");
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
      progress({index, options.max_new_tokens - 1, active.size(), detail::count_tokens(result.tokens),
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
