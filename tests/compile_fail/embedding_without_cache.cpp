// Must not compile: an embedding without the n-gram cache hooks cannot drive a causal_lm. The test expects the
// static_assert's message, not a page of template errors.
#include "ngemb/ffn/swiglu.hpp"
#include "ngemb/model/causal_lm.hpp"
#include "ngemb/moe/moe.hpp"

struct plain_embedding {
  using policy_type = ngemb::host_policy;
  [[nodiscard]] std::int64_t output_width() const { return 8; }
};

using block = ngemb::prenorm_block<ngemb::attention<>, ngemb::swiglu<>>;
template class ngemb::causal_lm<plain_embedding, block>;
