// Must not compile: a decoder block whose FFN type has no forward(policy, tokens, x, y) (nor anything else but its
// policy). The test expects the static_assert's message.
#include "ngemb/model/blocks.hpp"

struct not_an_ffn {
  using policy_type = ngemb::host_policy;
};

template class ngemb::prenorm_block<ngemb::attention<>, not_an_ffn>;
