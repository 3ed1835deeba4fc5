#pragma once
// The `drafter` concept of speculative decoding: something that proposes up to k tokens per sequence of a batch and
// learns, after each target forward, what the target kept, so its own state (a cache, a history) commits or rolls
// back with the target's. Drafters hold what they read (their weights, a reference to the target, a policy), so the
// interface itself is host data only:
//
//   drafter.start_sequence(id);                 // the target started sequence `id`
//   drafter.observe(step);                      // after the prefill and each verify forward (verified_step)
//   drafter.propose(requests, sampling, out);   // before a verify forward: drafts per request into `out`
//   drafter.end_sequence(id);
//
// A step's tokens are chains (each draft token follows the previous one). A tree of drafts would add a parent index
// per token to draft_batch and a tree mask to the verify forward; the requests, observe() and the acceptance
// (spec/acceptance.hpp, per root-to-leaf chain) keep their shape.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/philox.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/sampling.hpp"

namespace ngemb {

/// Which Philox draw of token_stream{seed, stream, position} each random choice of a speculative step uses, so that
/// every choice is independent of the others and of the batch: a drafter sampling its token for `position` uses
/// `proposal`, the acceptance test of that token `acceptance`, and the token drawn from the target at a rejection or
/// after a fully accepted chain `correction`. (Draw 0 is plain sampling's.)
struct speculative_draws {
  static constexpr std::uint32_t acceptance = 1;
  static constexpr std::uint32_t correction = 2;
  static constexpr std::uint32_t proposal = 3;
};

/// One sequence's request for drafts.
struct draft_request {
  std::int32_t sequence = 0;   ///< the target's sequence id
  std::uint64_t stream = 0;    ///< the sequence's Philox stream (generate: the prompt index)
  std::uint32_t position = 0;  ///< index, among the sequence's generated tokens, of the first token to propose
  int max_tokens = 0;          ///< propose at most this many (>= 1); fewer, even none, is allowed
};

/// The drafts of one propose(): sequence b's tokens are tokens[offsets[b], offsets[b+1]) (a chain), in request order.
/// When sampling, `probabilities` holds one row of vocab_size per token: the distribution q the token was drawn from,
/// after the same temperature / top-k / top-p as the target's p (token_probabilities in model/sampling.hpp). A
/// drafter whose proposal is deterministic (prompt lookup) leaves it empty: q is then one-hot at the token.
struct draft_batch {
  std::vector<std::int32_t> tokens;
  std::vector<std::int64_t> offsets{0};
  std::vector<float> probabilities;

  void clear() {
    tokens.clear();
    offsets.assign(1, 0);
    probabilities.clear();
  }
  [[nodiscard]] std::size_t sequences() const { return offsets.size() - 1; }
  [[nodiscard]] view<const std::int32_t> drafts_of(std::size_t b) const {
    return view<const std::int32_t>(tokens.data() + offsets[b], static_cast<std::size_t>(offsets[b + 1] - offsets[b]));
  }
};

/// What one target forward did, all in host memory, sequence b of the step being `sequences[b]`:
/// - `fed`: the tokens fed (a prompt at the prefill; the last token and the drafts at a verify step);
/// - `kept[b]`: how many of them the target kept (all at the prefill; 1 + accepted drafts after verification);
/// - `next[b]`: the token chosen after the kept ones (sampled, a correction or the bonus token), not yet fed.
/// During observe() the target's hidden_rows() still hold the final-normed rows of every fed token, in `fed` order,
/// when the drafter asked for them (hidden_rows_needed()).
struct verified_step {
  view<const std::int32_t> sequences;
  ragged_view<const std::int32_t> fed;
  view<const std::int32_t> kept;
  view<const std::int32_t> next;
};

namespace detail {

template <class D>
concept drafter_sequences = requires(D& drafter, std::int32_t sequence) {
  drafter.start_sequence(sequence);
  drafter.end_sequence(sequence);
};
template <class D>
concept drafter_observes = requires(D& drafter, const verified_step& step) { drafter.observe(step); };
template <class D>
concept drafter_proposes = requires(D& drafter, view<const draft_request> requests, const sampling_options& sampling,
                                    draft_batch& out) { drafter.propose(requests, sampling, out); };
template <class D>
concept drafter_describes = requires(const D& drafter) {
  { drafter.vocab_size() } -> std::convertible_to<std::int64_t>;
  { drafter.hidden_rows_needed() } -> std::convertible_to<bool>;
};

}  // namespace detail

template <class D>
concept drafter = detail::drafter_sequences<D> && detail::drafter_observes<D> && detail::drafter_proposes<D> &&
                  detail::drafter_describes<D>;

namespace detail {

template <class D>
constexpr bool check_drafter() {
  static_assert(drafter_sequences<D>, "drafter: must have start_sequence(std::int32_t) and end_sequence(std::int32_t)");
  static_assert(drafter_observes<D>, "drafter: must have observe(const verified_step&)");
  static_assert(drafter_proposes<D>,
                "drafter: must have propose(view<const draft_request>, const sampling_options&, draft_batch&)");
  static_assert(drafter_describes<D>, "drafter: must have vocab_size() and hidden_rows_needed() const");
  return true;
}

}  // namespace detail

/// A non-owning handle on any drafter, for generation_options (which is not a template): one indirect call per
/// step, never per token. The drafter must outlive the generate() call that uses it.
class drafter_ref {
 public:
  drafter_ref() = default;
  template <class D>
    requires(!std::same_as<D, drafter_ref>)
  drafter_ref(D& drafter)  // NOLINT(google-explicit-constructor): passed as `.drafter = my_drafter`
      : object_(&drafter), calls_(&calls_for<D>) {
    static_assert(detail::check_drafter<D>());
  }

  [[nodiscard]] explicit operator bool() const { return object_ != nullptr; }
  [[nodiscard]] std::int64_t vocab_size() const { return calls().vocab_size(object_); }
  [[nodiscard]] bool hidden_rows_needed() const { return calls().hidden_rows_needed(object_); }
  void start_sequence(std::int32_t sequence) const { calls().start_sequence(object_, sequence); }
  void end_sequence(std::int32_t sequence) const { calls().end_sequence(object_, sequence); }
  void observe(const verified_step& step) const { calls().observe(object_, step); }
  void propose(view<const draft_request> requests, const sampling_options& sampling, draft_batch& out) const {
    calls().propose(object_, requests, sampling, out);
  }

 private:
  struct call_table {
    std::int64_t (*vocab_size)(const void*);
    bool (*hidden_rows_needed)(const void*);
    void (*start_sequence)(void*, std::int32_t);
    void (*end_sequence)(void*, std::int32_t);
    void (*observe)(void*, const verified_step&);
    void (*propose)(void*, view<const draft_request>, const sampling_options&, draft_batch&);
  };
  template <class D>
  static constexpr call_table calls_for{
      [](const void* d) { return static_cast<std::int64_t>(static_cast<const D*>(d)->vocab_size()); },
      [](const void* d) { return static_cast<bool>(static_cast<const D*>(d)->hidden_rows_needed()); },
      [](void* d, std::int32_t s) { static_cast<D*>(d)->start_sequence(s); },
      [](void* d, std::int32_t s) { static_cast<D*>(d)->end_sequence(s); },
      [](void* d, const verified_step& step) { static_cast<D*>(d)->observe(step); },
      [](void* d, view<const draft_request> r, const sampling_options& o, draft_batch& out) {
        static_cast<D*>(d)->propose(r, o, out);
      }};

  [[nodiscard]] const call_table& calls() const {
    if (calls_ == nullptr) {
      throw invalid_argument("drafter_ref: no drafter was given");
    }
    return *calls_;
  }

  void* object_ = nullptr;
  const call_table* calls_ = nullptr;
};

}  // namespace ngemb
