// Must not compile: an n-gram embedding over a user store that serves rows and saves them but cannot load itself
// from a checkpoint. The test expects the store check's message naming load.
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/hash/longcat_hash.hpp"

struct store_without_load {
  using element_type = float;
  using policy_type = ngemb::host_policy;
  [[nodiscard]] int num_tables() const { return 1; }
  [[nodiscard]] std::int64_t rows(int /*table*/) const { return 3; }
  [[nodiscard]] std::int64_t row_width() const { return 2; }
  [[nodiscard]] bool has_base() const { return true; }
  [[nodiscard]] std::int64_t vocab_size() const { return 2; }
  [[nodiscard]] std::int64_t hidden_size() const { return 2; }
  [[nodiscard]] ngemb::table_rows_ref<float> ref() const { return {}; }
  void save(const policy_type& /*policy*/, const std::string& /*prefix*/, ngemb::tensor_collection& /*out*/) const {}
};

template class ngemb::ngram_embedding<ngemb::longcat_hash, store_without_load>;
