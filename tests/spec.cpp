// Speculative decoding (include/ngemb/spec/): the drafter concept and its type-erased handle, the acceptance rule,
// the drafters, and generate() with speculation against plain decoding.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "ngemb/spec/drafter.hpp"

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
