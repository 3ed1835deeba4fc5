// Must not compile: an n-gram embedding over a "hasher" that has sizes but no ref() for the element operations.
// The test expects the hasher check's message naming ref.
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/store/table_store.hpp"

struct hasher_without_ref {
  explicit hasher_without_ref(const ngemb::ngram_config& /*config*/) {}
  [[nodiscard]] int num_tables() const { return 1; }
  [[nodiscard]] int lookback() const { return 1; }
  [[nodiscard]] std::int64_t vocab_size() const { return 2; }
  [[nodiscard]] std::int64_t rows(int /*table*/) const { return 3; }
  [[nodiscard]] std::int64_t total_rows() const { return 3; }
};

template class ngemb::ngram_embedding<hasher_without_ref, ngemb::table_store<float>>;
