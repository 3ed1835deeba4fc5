// Must not compile: a decoder block that runs and saves but cannot be loaded, as a causal_lm's block. The test
// expects the static_assert's message naming load.
#include "ngemb/presets/longcat.hpp"

struct block_without_load {
  using policy_type = ngemb::host_policy;
  using attention_type = ngemb::attention<>;
  static constexpr int attention_sublayers = 1;
  void save(const policy_type& /*policy*/, const std::string& /*prefix*/, ngemb::tensor_collection& /*out*/) const {}
  void forward(const policy_type& /*policy*/, attention_type::cache_type& /*cache*/, int /*layer*/,
               ngemb::view<float> /*h*/, ngemb::block_workspace<policy_type>& /*work*/,
               ngemb::stage_clock<policy_type>& /*clock*/) {}
};

template class ngemb::causal_lm<ngemb::presets::longcat_shortcut<>::embedding, block_without_load>;
