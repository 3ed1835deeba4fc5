// Must not compile: a MoE layer over a "router" without top-k routing (no options(), no route()). The test expects
// the static_assert's message.
#include "ngemb/moe/moe.hpp"

struct scores_only {
  using policy_type = ngemb::host_policy;
  void score(const float* /*x*/, float* /*scores*/) const {}
};

template class ngemb::moe<scores_only>;
