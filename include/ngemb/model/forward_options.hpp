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
};

}  // namespace ngemb
