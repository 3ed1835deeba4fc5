// Must not compile: an attention type that loads, saves and runs over a kv_cache but does not name or make the
// cache it owns, so a model cannot ask it for its cache. The test expects the static_assert's message.
#include "ngemb/ffn/swiglu.hpp"
#include "ngemb/model/blocks.hpp"

struct attention_without_cache {
  using policy_type = ngemb::host_policy;
  using shape = ngemb::attention_shape;
  static attention_without_cache load(const policy_type& /*policy*/, const ngemb::checkpoint& /*source*/,
                                      const std::string& /*prefix*/, const shape& /*dims*/) {
    return {};
  }
  void save(const policy_type& /*policy*/, const std::string& /*prefix*/, ngemb::tensor_collection& /*out*/) const {}
  void forward(const policy_type& /*policy*/, ngemb::kv_cache<>& /*cache*/, int /*layer*/,
               ngemb::view<const float> /*x*/, ngemb::view<float> /*out*/) {}
};

template class ngemb::prenorm_block<attention_without_cache, ngemb::swiglu<>>;
