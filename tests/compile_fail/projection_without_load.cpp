// Must not compile: an n-gram embedding over a user projection that projects and saves but cannot load itself
// from a checkpoint. The test expects the projection check's message naming load.
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/store/table_store.hpp"

struct projection_without_load {
  using policy_type = ngemb::host_policy;
  using accumulator = float;
  using shape = ngemb::projection_shape;
  [[nodiscard]] int num_tables() const { return 1; }
  [[nodiscard]] std::int64_t row_width() const { return 2; }
  [[nodiscard]] std::int64_t input_width() const { return 2; }
  [[nodiscard]] std::int64_t output_width() const { return 2; }
  void project(const policy_type& /*policy*/, std::size_t /*tokens*/, ngemb::view<const float> /*in*/,
               ngemb::view<float> /*out*/) const {}
  void save(const policy_type& /*policy*/, const std::string& /*prefix*/, ngemb::tensor_collection& /*out*/) const {}
};

template class ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float>, projection_without_load>;
