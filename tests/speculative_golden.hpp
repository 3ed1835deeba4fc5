#pragma once
// Speculative greedy decoding against plain greedy decoding on the shipped tiny-longcat, for any drafter: the same
// tokens for every k in [1, 8], over a ragged batch of real text prompts with the EOS stop token. Run on the host by
// tests/spec.cpp and on a device by tests/cuda/spec.cu.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "ngemb/model/causal_lm.hpp"
#include "ngemb/model/generate.hpp"
#include "ngemb/spec/drafter.hpp"
#include "tiny_longcat_golden.hpp"

namespace ngemb_test {

/// The unoptimised sanitizer build runs each speculative check on a smaller scale (every code path still runs):
/// unoptimised, tiny-longcat is ~60x slower, and the full scale would take over ten minutes there.
#if defined(NGEMB_TEST_SANITIZED) && NGEMB_TEST_SANITIZED
inline constexpr bool speculation_quick = true;
#else
inline constexpr bool speculation_quick = false;
#endif
/// Prompts and new tokens per greedy-equivalence check.
inline constexpr std::size_t speculation_prompt_count = speculation_quick ? 2 : 5;
inline constexpr int speculation_new_tokens = speculation_quick ? 12 : 48;

/// Five sequences, drafts up to 8 tokens.
inline const ngemb::sequence_capacity speculation_capacity{.max_sequences = 5, .max_positions = 256, .max_draft = 8};

/// Prompts cut from tiny-longcat's validation text (Python source, which repeats itself enough for every drafter to
/// be right sometimes), of different lengths so the batch is ragged; each starts with BOS.
inline std::vector<std::vector<std::int32_t>> speculation_prompts(std::size_t count) {
  std::ifstream file(tiny_longcat_goldens / "validation.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  REQUIRE(text.size() > 100000);
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t first = 7919 * (i + 1) % (text.size() - 200);
    const std::size_t length = 24 + 37 * i % 90;
    std::vector<std::int32_t> prompt{256};
    for (std::size_t c = first; c < first + length; ++c) {
      prompt.push_back(static_cast<unsigned char>(text[c]));
    }
    prompts.push_back(prompt);
  }
  return prompts;
}

/// Speculative greedy decoding with `drafter` gives plain greedy decoding's tokens for every k in [1, 8] (48 new
/// tokens, EOS stops), and accepts drafts: a mean accepted length of at least `minimum_accepted_length` (k 1 and 5
/// on 12 tokens of 2 prompts when speculation_quick, where drafts and acceptance are not asserted).
template <class Model>
void check_speculative_greedy(const typename Model::policy_type& policy, Model& model, ngemb::drafter_ref drafter,
                              double minimum_accepted_length) {
  constexpr int max_new_tokens = speculation_new_tokens;
  const auto prompts = speculation_prompts(speculation_prompt_count);
  const auto plain =
      ngemb::generate(policy, model, prompts, {.max_new_tokens = max_new_tokens, .stop_token = 257}).tokens;
  for (int k = 1; k <= 8; k += speculation_quick ? 4 : 1) {
    const auto result = ngemb::generate(policy, model, prompts,
                                        {.max_new_tokens = max_new_tokens,
                                         .stop_token = 257,
                                         .speculative = {.drafter = drafter, .draft_tokens = k}});
    INFO("k = " << k << ", mean accepted length " << result.speculation.mean_accepted_length()
                << ", target forwards per token " << result.speculation.target_forwards_per_token());
    CHECK(result.tokens == plain);
    if (!speculation_quick) {  // 12 tokens of 2 prompts may give a drafter nothing to propose
      CHECK(result.speculation.drafted_tokens > 0);
      CHECK(result.speculation.mean_accepted_length() >= minimum_accepted_length);
    }
    CHECK(result.speculation.generated_tokens == ngemb::detail::count_tokens(plain));
  }
}

}  // namespace ngemb_test
