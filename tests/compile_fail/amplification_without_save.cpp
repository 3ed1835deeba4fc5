// Must not compile: an n-gram embedding with a user amplification that loads but cannot save itself. The test
// expects the amplification check's message naming save.
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/store/table_store.hpp"

struct amplification_without_save {
  static constexpr bool needs_statistics = false;
  using shape = ngemb::amplification_shape;
  [[nodiscard]] ngemb::no_amplification::ref_type ref(std::int64_t /*width*/) const { return {}; }
  static amplification_without_save load(const ngemb::host_policy& /*policy*/, const ngemb::checkpoint& /*source*/,
                                         const std::string& /*prefix*/, const shape& /*dims*/) {
    return {};
  }
};

template class ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float>, ngemb::fused_projection<>,
                                      amplification_without_save>;
