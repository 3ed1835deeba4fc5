// Must not compile: a model over a user embedding that runs over the n-gram cache and saves but cannot load
// itself from a checkpoint. The test expects the cached_embedding check's message naming load.
#include "ngemb/model/causal_lm.hpp"
#include "ngemb/ffn/swiglu.hpp"

struct embedding_without_load {
  using policy_type = ngemb::host_policy;
  void forward(const policy_type& /*policy*/, ngemb::ngram_cache<>& /*cache*/,
               ngemb::view<const std::int32_t> /*slots*/, ngemb::ragged_view<const std::int32_t> /*tokens*/,
               ngemb::view<float> /*out*/) {}
  void save(const policy_type& /*policy*/, const std::string& /*prefix*/, ngemb::tensor_collection& /*out*/) const {}
  [[nodiscard]] std::int64_t output_width() const { return 8; }
};

using block = ngemb::prenorm_block<ngemb::attention<>, ngemb::swiglu<>>;
template class ngemb::causal_lm<embedding_without_load, block>;
