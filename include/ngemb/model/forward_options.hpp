#pragma once
// How a causal model's forward runs, as one options struct instead of trailing arguments: which rows of logits it
// writes, and whether it times its stages.
#include "ngemb/model/stage_times.hpp"

namespace ngemb {

/// Which rows of logits a forward produces: every token's (scoring, tests) or each sequence's last (generation).
enum class logits_for { every_token, last_token };

struct forward_options {
  logits_for logits = logits_for::every_token;
  /// When set, each stage's time is added to it (a device forward then synchronises between stages).
  stage_times* profile = nullptr;
  /// Speculative: the step's tokens stay pending in the model's caches (attention and n-gram) until the model's
  /// commit_pending keeps a prefix of them and drops the rest (causal_lm).
  bool pending = false;
  /// Keep the final-normed row of every token of the step (causal_lm::hidden_rows): what an MTP drafter reads.
  bool keep_hidden = false;
};

}  // namespace ngemb
