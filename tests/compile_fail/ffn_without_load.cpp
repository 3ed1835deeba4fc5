// Must not compile: a user FFN with forward and save but no load, inside a decoder block: the block could not load
// it from a checkpoint. The test expects the static_assert's message naming load.
#include "ngemb/model/blocks.hpp"

struct ffn_without_load {
  using policy_type = ngemb::host_policy;
  using shape = ngemb::ffn_shape;
  void save(const policy_type& /*policy*/, const std::string& /*prefix*/, ngemb::tensor_collection& /*out*/) const {}
  void forward(const policy_type& /*policy*/, std::size_t /*tokens*/, ngemb::view<const float> /*x*/,
               ngemb::view<float> /*y*/) {}
};

template class ngemb::prenorm_block<ngemb::attention<>, ffn_without_load>;
