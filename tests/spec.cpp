// Speculative decoding (include/ngemb/spec/): the drafter concept and its type-erased handle, the acceptance rule,
// the drafters, and generate() with speculation against plain decoding.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "ngemb/spec/drafter.hpp"
#include "ngemb/spec/prompt_lookup.hpp"

namespace {

/// Proposes `token` up to max_tokens times and records what it was told.
struct repeating_drafter {
  std::int32_t token = 1;
  std::vector<std::int32_t> started;
  std::vector<std::int32_t> ended;
  std::size_t observed = 0;
  [[nodiscard]] std::int64_t vocab_size() const { return 4; }
  [[nodiscard]] bool hidden_rows_needed() const { return false; }
  void start_sequence(std::int32_t sequence) { started.push_back(sequence); }
  void end_sequence(std::int32_t sequence) { ended.push_back(sequence); }
  void observe(const ngemb::verified_step& step) { observed += step.sequences.size(); }
  void propose(ngemb::view<const ngemb::draft_request> requests, const ngemb::sampling_options&,
               ngemb::draft_batch& out) {
    out.clear();
    for (const auto& request : requests) {
      out.tokens.insert(out.tokens.end(), static_cast<std::size_t>(request.max_tokens), token);
      out.offsets.push_back(static_cast<std::int64_t>(out.tokens.size()));
    }
  }
};

static_assert(ngemb::drafter<repeating_drafter>);
static_assert(!ngemb::drafter<int>);

}  // namespace

TEST_CASE("drafter_ref forwards every call to the drafter it refers to") {
  repeating_drafter inner;
  inner.token = 3;
  const ngemb::drafter_ref handle(inner);
  CHECK(static_cast<bool>(handle));
  CHECK(handle.vocab_size() == 4);
  CHECK_FALSE(handle.hidden_rows_needed());
  handle.start_sequence(5);
  const ngemb::draft_request requests[] = {{.sequence = 5, .stream = 0, .position = 0, .max_tokens = 2},
                                           {.sequence = 6, .stream = 1, .position = 3, .max_tokens = 1}};
  ngemb::draft_batch out;
  handle.propose(ngemb::view<const ngemb::draft_request>(requests, 2), {}, out);
  CHECK(out.sequences() == 2);
  CHECK(out.drafts_of(0).size() == 2);
  CHECK(out.drafts_of(1)[0] == 3);
  handle.end_sequence(5);
  CHECK(inner.started == std::vector<std::int32_t>{5});
  CHECK(inner.ended == std::vector<std::int32_t>{5});
  CHECK_THROWS_AS(static_cast<void>(ngemb::drafter_ref{}.vocab_size()), ngemb::invalid_argument);
}

// ---- prompt lookup (spec/prompt_lookup.hpp) ----

namespace {

using lookup_tokens = std::vector<std::int32_t>;

/// One observe() call's data, owned, for sequences added one by one.
struct lookup_step {
  std::vector<std::int32_t> sequences;
  lookup_tokens fed;
  std::vector<std::int64_t> offsets{0};
  std::vector<std::int32_t> kept;
  std::vector<std::int32_t> next;

  lookup_step& add(std::int32_t sequence, const lookup_tokens& tokens, std::int32_t kept_count, std::int32_t chosen) {
    sequences.push_back(sequence);
    fed.insert(fed.end(), tokens.begin(), tokens.end());
    offsets.push_back(static_cast<std::int64_t>(fed.size()));
    kept.push_back(kept_count);
    next.push_back(chosen);
    return *this;
  }
  [[nodiscard]] ngemb::verified_step view() const {
    return {.sequences = sequences,
            .fed = ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(fed), offsets),
            .kept = kept,
            .next = next};
  }
};

/// Starts `sequence` and gives it the history `text` (non-empty): a prefill of all but the last token, which is
/// the `next` chosen after it.
void lookup_start_with(ngemb::prompt_lookup_drafter& drafter, std::int32_t sequence, const lookup_tokens& text) {
  drafter.start_sequence(sequence);
  const lookup_tokens prompt(text.begin(), text.end() - 1);
  drafter.observe(lookup_step{}.add(sequence, prompt, static_cast<std::int32_t>(prompt.size()), text.back()).view());
}

lookup_tokens lookup_propose(ngemb::prompt_lookup_drafter& drafter, std::int32_t sequence, int max_tokens) {
  const ngemb::draft_request request{.sequence = sequence, .stream = 0, .position = 0, .max_tokens = max_tokens};
  ngemb::draft_batch out;
  drafter.propose(ngemb::view<const ngemb::draft_request>(&request, 1), {}, out);
  REQUIRE(out.sequences() == 1);
  const auto drafts = out.drafts_of(0);
  return {drafts.begin(), drafts.end()};
}

/// The drafts of `text` with a fresh drafter.
lookup_tokens lookup_drafts(const lookup_tokens& text, int max_tokens,
                            ngemb::prompt_lookup_drafter::options opts = {}) {
  ngemb::prompt_lookup_drafter drafter(16, opts);
  lookup_start_with(drafter, 0, text);
  return lookup_propose(drafter, 0, max_tokens);
}

/// The rule, written directly: the longest n with an earlier occurrence (ending before the last token), its earliest
/// occurrence, and what follows it.
lookup_tokens lookup_reference(const lookup_tokens& text, int min_n, int max_n, int max_tokens) {
  const auto size = static_cast<std::ptrdiff_t>(text.size());
  for (std::ptrdiff_t n = max_n; n >= min_n; --n) {
    for (std::ptrdiff_t j = 0; j + n <= size - 1; ++j) {
      if (std::equal(text.begin() + j, text.begin() + j + n, text.end() - n)) {
        const auto end = std::min(size, j + n + max_tokens);
        return {text.begin() + j + n, text.begin() + end};
      }
    }
  }
  return {};
}

static_assert(ngemb::drafter<ngemb::prompt_lookup_drafter>);

}  // namespace

TEST_CASE("prompt_lookup_drafter proposes what followed the longest recurring suffix") {
  // [1 2] recurs (n = 3 [4 1 2] does not): what followed it, to the end of the history or max_tokens.
  CHECK(lookup_drafts({1, 2, 3, 4, 1, 2}, 4) == lookup_tokens{3, 4, 1, 2});
  CHECK(lookup_drafts({1, 2, 3, 4, 1, 2}, 2) == lookup_tokens{3, 4});
  CHECK(lookup_drafts({1, 2, 3, 4, 1, 2}, 9) == lookup_tokens{3, 4, 1, 2});

  // [1] and [2 1] first occur at the start (followed by 5), [3 2 1] later (followed by 6): the longest n wins,
  // up to max_n.
  const lookup_tokens text{2, 1, 5, 3, 2, 1, 6, 3, 2, 1};
  CHECK(lookup_drafts(text, 4) == lookup_tokens{6, 3, 2, 1});
  CHECK(lookup_drafts(text, 4, {.min_n = 1, .max_n = 2}) == lookup_tokens{5, 3, 2, 1});

  // Two earlier occurrences of [1 2]: vLLM's choice, the earliest.
  CHECK(lookup_drafts({1, 2, 7, 1, 2, 8, 1, 2}, 1) == lookup_tokens{7});
  CHECK(lookup_drafts({1, 2, 7, 1, 2, 8, 1, 2}, 3) == lookup_tokens{7, 1, 2});

  // An occurrence may overlap the suffix but must leave a token after it: [4 4 4] at 0 is followed by the last 4.
  CHECK(lookup_drafts({4, 4, 4, 4}, 3) == lookup_tokens{4});
  CHECK(lookup_drafts({4, 4}, 3) == lookup_tokens{4});

  // No recurring suffix, or only one shorter than min_n: no drafts.
  CHECK(lookup_drafts({1, 2, 3, 4}, 3).empty());
  CHECK(lookup_drafts({1, 2, 3, 1}, 3) == lookup_tokens{2, 3, 1});
  CHECK(lookup_drafts({1, 2, 3, 1}, 3, {.min_n = 2, .max_n = 4}).empty());
  CHECK(lookup_drafts({1, 2, 3, 1, 2}, 3, {.min_n = 2, .max_n = 2}) == lookup_tokens{3, 1, 2});

  // A started sequence not yet observed has no history: no drafts.
  ngemb::prompt_lookup_drafter drafter(8);
  drafter.start_sequence(3);
  CHECK(lookup_propose(drafter, 3, 2).empty());
}

TEST_CASE("prompt_lookup_drafter keeps the history across a prefill and verify steps") {
  ngemb::prompt_lookup_drafter drafter(16);
  drafter.start_sequence(7);
  drafter.observe(lookup_step{}.add(7, {1, 2, 3, 1, 2}, 5, 3).view());
  CHECK(lookup_tokens(drafter.history(7).begin(), drafter.history(7).end()) == lookup_tokens{1, 2, 3, 1, 2, 3});
  CHECK(lookup_propose(drafter, 7, 3) == lookup_tokens{1, 2, 3});

  // Verify [3 | 1 2 3]: one draft accepted, then 9 chosen.
  drafter.observe(lookup_step{}.add(7, {3, 1, 2, 3}, 2, 9).view());
  CHECK(lookup_tokens(drafter.history(7).begin(), drafter.history(7).end()) == lookup_tokens{1, 2, 3, 1, 2, 3, 1, 9});
  CHECK(lookup_propose(drafter, 7, 3).empty());

  // No drafts were proposed: only the last token is fed.
  drafter.observe(lookup_step{}.add(7, {9}, 1, 2).view());
  // All drafts accepted, then the bonus token.
  drafter.observe(lookup_step{}.add(7, {2, 3, 1}, 3, 9).view());
  CHECK(lookup_tokens(drafter.history(7).begin(), drafter.history(7).end()) ==
        lookup_tokens{1, 2, 3, 1, 2, 3, 1, 9, 2, 3, 1, 9});
  CHECK(lookup_propose(drafter, 7, 2) == lookup_tokens{2, 3});  // [3 1 9] at 5

  // The sequence can be started again after it ends, with an empty history.
  drafter.end_sequence(7);
  drafter.start_sequence(7);
  CHECK(drafter.history(7).empty());
}

TEST_CASE("prompt_lookup_drafter drafts several sequences of a batch, each up to its max_tokens") {
  ngemb::prompt_lookup_drafter drafter(16);
  for (const std::int32_t sequence : {10, 20, 30}) {
    drafter.start_sequence(sequence);
  }
  drafter.observe(lookup_step{}
                      .add(20, {5, 6, 7, 8, 5}, 5, 6)
                      .add(10, {1, 2, 3, 1, 2, 3, 1}, 7, 2)
                      .add(30, {1, 2, 3}, 3, 4)
                      .view());
  const ngemb::draft_request requests[] = {{.sequence = 10, .stream = 0, .position = 0, .max_tokens = 2},
                                           {.sequence = 30, .stream = 1, .position = 0, .max_tokens = 4},
                                           {.sequence = 20, .stream = 2, .position = 0, .max_tokens = 5}};
  ngemb::draft_batch out;
  out.probabilities.assign(3, 0.5f);  // left from an earlier user: propose() starts afresh
  ngemb::sampling_options sampling;
  sampling.temperature = 1.0f;  // q stays one-hot when sampling
  drafter.propose(ngemb::view<const ngemb::draft_request>(requests, 3), sampling, out);
  REQUIRE(out.sequences() == 3);
  CHECK(lookup_tokens(out.drafts_of(0).begin(), out.drafts_of(0).end()) == lookup_tokens{3, 1});
  CHECK(out.drafts_of(1).empty());
  CHECK(lookup_tokens(out.drafts_of(2).begin(), out.drafts_of(2).end()) == lookup_tokens{7, 8, 5, 6});
  CHECK(out.probabilities.empty());

  // Through the type-erased handle, with one sequence verified and the others not in the step.
  const ngemb::drafter_ref handle(drafter);
  CHECK(handle.vocab_size() == 16);
  CHECK_FALSE(handle.hidden_rows_needed());
  handle.observe(lookup_step{}.add(10, {2, 3, 1}, 2, 9).view());
  CHECK(lookup_tokens(drafter.history(10).begin(), drafter.history(10).end()) ==
        lookup_tokens{1, 2, 3, 1, 2, 3, 1, 2, 3, 9});
  CHECK(drafter.history(20).size() == 6);
}

TEST_CASE("prompt_lookup_drafter matches a brute-force reference on random histories") {
  std::mt19937 random(20240611);
  const auto uniform = [&](int low, int high) { return std::uniform_int_distribution<int>(low, high)(random); };
  int with_drafts = 0;
  int without = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int vocab = uniform(2, 6);
    const int min_n = uniform(1, 3);
    const int max_n = uniform(min_n, min_n + 4);
    ngemb::prompt_lookup_drafter drafter(vocab, {.min_n = min_n, .max_n = max_n});
    const auto length = static_cast<std::size_t>(uniform(1, 200));
    const auto token = [&] { return static_cast<std::int32_t>(uniform(0, vocab - 1)); };

    // A prefill of a random prompt, then verify steps that keep a random part of random drafts, as generate does.
    lookup_tokens text(static_cast<std::size_t>(uniform(1, static_cast<int>(length))));
    std::ranges::generate(text, token);
    drafter.start_sequence(trial);
    std::int32_t next = token();
    drafter.observe(lookup_step{}.add(trial, text, static_cast<std::int32_t>(text.size()), next).view());
    text.push_back(next);
    while (true) {
      const int max_tokens = uniform(1, 8);
      const lookup_tokens drafts = lookup_propose(drafter, trial, max_tokens);
      REQUIRE(drafts == lookup_reference(text, min_n, max_n, max_tokens));
      (drafts.empty() ? without : with_drafts) += 1;
      if (text.size() >= length) {
        break;
      }
      lookup_tokens fed{text.back()};
      for (int i = uniform(0, 4); i > 0; --i) {
        fed.push_back(token());
      }
      const int kept = uniform(1, static_cast<int>(fed.size()));
      next = token();
      drafter.observe(lookup_step{}.add(trial, fed, kept, next).view());
      text.insert(text.end(), fed.begin() + 1, fed.begin() + kept);
      text.push_back(next);
      REQUIRE(lookup_tokens(drafter.history(trial).begin(), drafter.history(trial).end()) == text);
    }
    drafter.end_sequence(trial);
  }
  CHECK(with_drafts > 1000);
  CHECK(without > 100);
}

TEST_CASE("prompt_lookup_drafter rejects bad input") {
  using options = ngemb::prompt_lookup_drafter::options;
  CHECK_THROWS_WITH_AS(ngemb::prompt_lookup_drafter(8, options{.min_n = 0, .max_n = 4}),
                       "prompt_lookup_drafter: options need 1 <= min_n <= max_n, got min_n 0, max_n 4",
                       ngemb::invalid_argument);
  CHECK_THROWS_AS(ngemb::prompt_lookup_drafter(8, options{.min_n = 3, .max_n = 2}), ngemb::invalid_argument);
  CHECK_THROWS_AS(ngemb::prompt_lookup_drafter(0), ngemb::invalid_argument);

  ngemb::prompt_lookup_drafter drafter(8);
  drafter.start_sequence(1);
  drafter.start_sequence(2);
  CHECK_THROWS_WITH_AS(drafter.start_sequence(1), "prompt_lookup_drafter: sequence 1 was already started",
                       ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(lookup_propose(drafter, 5, 1),
                       "prompt_lookup_drafter::propose: unknown sequence 5 (not started, or ended)",
                       ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(drafter.observe(lookup_step{}.add(5, {1}, 1, 2).view()),
                       "prompt_lookup_drafter::observe: unknown sequence 5 (not started, or ended)",
                       ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(drafter.end_sequence(5),
                       "prompt_lookup_drafter: end_sequence of unknown sequence 5", ngemb::invalid_argument);
  CHECK_THROWS_AS(static_cast<void>(drafter.history(5)), ngemb::invalid_argument);
  CHECK_THROWS_AS(lookup_propose(drafter, 1, 0), ngemb::invalid_argument);

  // A bad token anywhere in the step: typed, located, and no sequence of the step changes.
  try {
    drafter.observe(lookup_step{}.add(1, {1, 2}, 2, 3).add(2, {4, 8, 5}, 3, 6).view());
    FAIL("a token outside the vocabulary was accepted");
  } catch (const ngemb::token_out_of_range& bad) {
    CHECK(bad.sequence() == 1);
    CHECK(bad.position() == 1);
    CHECK(bad.value() == 8);
  }
  CHECK_THROWS_AS(drafter.observe(lookup_step{}.add(1, {1, 2}, 2, -1).view()), ngemb::token_out_of_range);
  CHECK(drafter.history(1).empty());
  CHECK(drafter.history(2).empty());

  drafter.observe(lookup_step{}.add(1, {1, 2}, 2, 3).view());
  CHECK_THROWS_WITH_AS(drafter.observe(lookup_step{}.add(1, {4, 5}, 2, 6).view()),
                       "prompt_lookup_drafter::observe: sequence 1: fed[0] must be the previous step's next token 3, "
                       "got 4",
                       ngemb::invalid_argument);
  CHECK_THROWS_AS(drafter.observe(lookup_step{}.add(1, {3, 5}, 0, 6).view()), ngemb::invalid_argument);
  CHECK_THROWS_AS(drafter.observe(lookup_step{}.add(1, {3, 5}, 3, 6).view()), ngemb::invalid_argument);
  CHECK_THROWS_AS(drafter.observe(lookup_step{}.add(1, {}, 0, 6).view()), ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(drafter.observe(lookup_step{}.add(1, {3}, 1, 6).add(1, {3}, 1, 6).view()),
                       "prompt_lookup_drafter::observe: sequence 1 appears more than once in the step",
                       ngemb::invalid_argument);
  lookup_step short_step;
  short_step.add(1, {3}, 1, 6).kept.clear();
  CHECK_THROWS_AS(drafter.observe(short_step.view()), ngemb::shape_mismatch);
  CHECK(drafter.history(1).size() == 3);
}
