#pragma once
// What the embedding benchmarks share (bench/embedding.cpp on the host, bench/embedding_device.cu on a GPU): the
// shape and its tables, the batches, the naive path, the byte accounting, the check that both paths agree, the
// median timer and the counters. All of it is written once against a policy, so both programs time the same work;
// only the clock, the bandwidth floors and the device's stream live in the two program files.
//
// Shape: LongCat-Flash-Lite's H = 3072, N = 4, K = 4 (T = 12 sub-tables), d = 256, V = 131072, eos = 2, with bf16
// sub-tables of m_i = 2^20 + 2i + 1 rows (m_base = 2^20 instead of the ratio 78): 12 x 1M x 256 x 2 B = 6.4 GB of
// sub-tables plus the 0.8 GB base table, so random rows miss every cache, yet the tables fit a 23 GB host. They
// are built once per process and shared by every benchmark.
//
// Library path: ngram_embedding<longcat_hash, table_store<bf16>, fused_projection<float>>::forward: hash, gather the
// T rows of each token side by side into [n x T*d] fp32, ONE GEMM with W_cat [H x T*d], then add the base row and
// divide by 1 + T.
//
// Naive path (the official HF/vLLM NgramEmbedding module, op by op): hash with ngemb::hash_tokens (the same ids), then
// for each sub-table i: gather E_i[id_i] of all n tokens into a [n x d] fp32 buffer, project it with W_i [H x d]
// through ngemb::gemm_nt into [n x H], add that into the fp32 output [n x H]; finally add the base row and divide by
// 1 + T. Each step is a separate pass run by the same policy (host_policy{0} or the device stream), as each is a
// separate kernel in PyTorch. Same FLOPs as the library (T GEMMs of depth d == one GEMM of depth T*d): what fusion
// saves is T-1 passes over the [n x H] output and T small GEMMs (each re-reading the [n x d] input per panel).
//
// Batches: decode steps are B sequences of one new token with 3 context tokens of look-back each (the ragged-context
// forward); the prefill is 4 sequences x 1024 tokens without context. Every call takes the next batch of a pool of
// >= 32768 tokens (random tokens, ~3% EOS, fixed seeds): 32768 x 12 rows x 512 B = 400 MB of sub-table rows, so a
// repeated benchmark never finds its rows in a cache warmed by the previous iteration.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/row_chunks.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/embed/detail/embedding_ops.hpp"
#include "ngemb/embed/fused_projection.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/presets/longcat.hpp"
#include "ngemb/store/table_store.hpp"

#include "median.hpp"
#include "random_batch.hpp"

namespace ngemb_bench {

template <class Policy>
using embedding_type = typename ngemb::presets::longcat_shortcut<Policy>::embedding;
/// The same embedding with W_cat stored in bf16 (presets' DenseWeight = bf16) or block-scaled fp8.
template <class Policy>
using bf16_weights_embedding_type = typename ngemb::presets::longcat_shortcut<Policy, ngemb::bf16, ngemb::bf16>::embedding;
template <class Policy>
using fp8_weights_embedding_type =
    typename ngemb::presets::longcat_shortcut<Policy, ngemb::bf16, ngemb::fp8_e4m3>::embedding;

/// Lite with m_base = 2^20: moduli 1048577 + 2i.
inline ngemb::ngram_config bench_config() {
  ngemb::ngram_config config = ngemb::ngram_config::longcat_flash_lite();
  config.ratio.reset();
  config.m_base = std::int64_t{1} << 20;
  return config;
}

struct shape_spec {
  const char* name;
  std::size_t sequences;
  std::size_t length;   ///< new tokens per sequence
  std::size_t context;  ///< look-back tokens per sequence (0: every sequence starts its stream)

  [[nodiscard]] std::size_t tokens() const { return sequences * length; }
};

inline constexpr std::array<shape_spec, 5> shapes{{{"decode_B1", 1, 1, 3},
                                                   {"decode_B16", 16, 1, 3},
                                                   {"decode_B64", 64, 1, 3},
                                                   {"decode_B256", 256, 1, 3},
                                                   {"prefill_4x1024", 4, 1024, 0}}};

/// Every call takes the next batch of a pool of at least this many tokens (see the top of the file).
inline constexpr std::size_t pool_tokens = 32768;

// Bytes moved per token by a forward of `batch` tokens: what it cannot avoid (ids, tokens, GEMM scratch excluded):
//   T*d*2             the T gathered bf16 sub-table rows,
//   + H*2             the bf16 base row,
//   + H*T*d*w / batch W_cat (w = 4, 2 or 1 bytes a weight: fp32, bf16, fp8) read once per forward, shared by the
//                     batch's tokens,
//   + H*4             the fp32 output row written.
// The gather alone moves T*d*2 (rows read) + T*d*4 (fp32 gathered rows written).
// Floor: a large copy timed in the same run. A copy of S bytes reads S and writes S, so it moves 2*S bytes and
// its bandwidth is 2*S / time; a benchmark that moves X bytes per iteration has floor time X / bandwidth, and
// vs_floor = (its time) / (floor time). The read-only floor (where a program measures one) counts the bytes read
// alone, the terms above without the written output: vs_read_floor = (its time) / (read bytes / read bandwidth).
inline double forward_read_bytes_per_token(const ngemb::ngram_config& config, std::size_t batch,
                                           double weight_bytes) {
  const auto tables = static_cast<double>(config.num_tables());
  const auto width = static_cast<double>(config.row_width());
  const auto hidden = static_cast<double>(config.hidden_size);
  return tables * width * sizeof(ngemb::bf16) + hidden * sizeof(ngemb::bf16) +
         hidden * tables * width * weight_bytes / static_cast<double>(batch);
}

inline double forward_bytes_per_token(const ngemb::ngram_config& config, std::size_t batch, double weight_bytes) {
  return forward_read_bytes_per_token(config, batch, weight_bytes) +
         static_cast<double>(config.hidden_size) * sizeof(float);
}

inline double gather_read_bytes_per_token(const ngemb::ngram_config& config) {
  return static_cast<double>(config.num_tables() * config.row_width()) * sizeof(ngemb::bf16);
}

inline double gather_bytes_per_token(const ngemb::ngram_config& config) {
  return gather_read_bytes_per_token(config) +
         static_cast<double>(config.num_tables() * config.row_width()) * sizeof(float);
}

/// A setup that measured something wrong ends the program: a benchmark of a wrong path is worthless.
[[noreturn]] inline void fail_setup(const std::string& message) {
  std::fprintf(stderr, "embedding benchmark setup failed: %s\n", message.c_str());
  std::fflush(stdout);
  std::exit(EXIT_FAILURE);
}

// ---------------------------------------------------------------------------------------------------------------
// Element operations (host loop or device kernel, by the policy that runs them).

NGEMB_HD inline std::uint64_t mix64(std::uint64_t x) {  // splitmix64's finaliser: a counter-based generator
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// Elements [4*index, 4*index + 4) of `values` from one 64-bit hash of (seed, index): uniform odd multiples of 2^-16
/// in (-1, 1) times `scale`, so no value is ever zero.
template <class T>
struct fill_random_op {
  T* values;
  std::size_t size;
  std::uint64_t seed;
  float scale;

  NGEMB_HD void operator()(std::size_t index) const {
    const std::uint64_t bits = mix64(seed * 0xd1b54a32d192ed03ull + index);
    const std::size_t begin = index * 4;
    for (std::size_t k = 0; k < 4 && begin + k < size; ++k) {
      const auto sample = static_cast<float>((bits >> (16 * k)) & 0xffffu);
      values[begin + k] = T(scale * ((2.0f * sample + 1.0f) / 65536.0f - 1.0f));
    }
  }
};

template <class Policy, class T>
void fill_random(const Policy& policy, ngemb::view<T> values, std::uint64_t seed, float scale) {
  for_each_n(policy, (values.size() + 3) / 4, fill_random_op<T>{values.data(), values.size(), seed, scale});
}

/// Naive step 1 for sub-table `table`: its row of every token into [n x d] fp32 (ids in the [n x T] layout).
struct naive_gather_op {
  const ngemb::bf16* rows;  ///< E_table [m x d]
  const std::uint32_t* ids;
  int table;
  int tables;
  float* gathered;
  ngemb::detail::row_chunks chunks;

  NGEMB_HD void operator()(std::size_t index) const {
    const ngemb::detail::row_chunks::part part = chunks.locate(index);
    const ngemb::bf16* row = rows + static_cast<std::size_t>(ids[part.row * static_cast<std::size_t>(tables) +
                                                                static_cast<std::size_t>(table)]) *
                                        chunks.width;
    float* destination = gathered + part.row * chunks.width;
    for (std::size_t column = part.begin; column < part.end; ++column) {
      destination[column] = static_cast<float>(row[column]);
    }
  }
};

/// Naive step 3: out (=|+=) projected, [n x H] (the first sub-table assigns, so no zeroing pass is needed).
struct naive_accumulate_op {
  const float* projected;
  float* out;
  bool assign;
  ngemb::detail::row_chunks chunks;

  NGEMB_HD void operator()(std::size_t index) const {
    const ngemb::detail::row_chunks::part part = chunks.locate(index);
    const std::size_t row = part.row * chunks.width;
    for (std::size_t column = part.begin; column < part.end; ++column) {
      out[row + column] = assign ? projected[row + column] : out[row + column] + projected[row + column];
    }
  }
};

/// Naive last step: out = (out + E_0[token]) / (1 + T).
struct naive_finish_op {
  const ngemb::bf16* base;  ///< E_0 [V x H]
  const token_type* tokens;
  float* out;
  float divisor;
  ngemb::detail::row_chunks chunks;

  NGEMB_HD void operator()(std::size_t index) const {
    const ngemb::detail::row_chunks::part part = chunks.locate(index);
    const ngemb::bf16* base_row = base + static_cast<std::size_t>(tokens[part.row]) * chunks.width;
    float* out_row = out + part.row * chunks.width;
    for (std::size_t column = part.begin; column < part.end; ++column) {
      out_row[column] = (out_row[column] + static_cast<float>(base_row[column])) / divisor;
    }
  }
};

// ---------------------------------------------------------------------------------------------------------------
// The model (tables and projections, ~7.2 GB) and one workload per shape.

template <class Policy, class T>
using buffer_of = typename Policy::template buffer<T>;

/// The library's embedding over random tables three times: with fp32, bf16 and fp8 W_cat. The 7.2 GB of tables
/// exist once and are moved (a pointer swap) into whichever embedding is asked for. W_i are drawn, then rounded to
/// bf16, so the fp32 and bf16 W_cat hold the same values and compute the same products as the naive path with its
/// separate fp32 W_i; the fp8 W_cat quantises them per 128 x 128 block. Build once per process.
template <class Policy>
class model {
 public:
  explicit model(const Policy& policy)
      : config_(bench_config()), embedding_(build(policy, config_, projections_, bf16_projection_, fp8_projection_)) {}

  [[nodiscard]] const ngemb::ngram_config& config() const { return config_; }
  [[nodiscard]] embedding_type<Policy>& embedding() {
    if (tables_at_ != weights::fp32) {
      embedding_.store() = std::move(tables());
      tables_at_ = weights::fp32;
    }
    return embedding_;
  }
  [[nodiscard]] bf16_weights_embedding_type<Policy>& bf16_weights_embedding() {
    return with_tables(bf16_embedding_, bf16_projection_, weights::bf16);
  }
  [[nodiscard]] fp8_weights_embedding_type<Policy>& fp8_weights_embedding() {
    return with_tables(fp8_embedding_, fp8_projection_, weights::fp8);
  }
  /// W_i [H x d] in policy memory, as the naive path multiplies it.
  [[nodiscard]] ngemb::view<const float> projection(int table) const {
    return projections_[static_cast<std::size_t>(table)].as_view();
  }

 private:
  enum class weights { fp32, bf16, fp8 };
  using bf16_projection_type = typename bf16_weights_embedding_type<Policy>::projection_type;
  using fp8_projection_type = typename fp8_weights_embedding_type<Policy>::projection_type;

  /// The store that holds the tables now.
  ngemb::table_store<ngemb::bf16, Policy>& tables() {
    switch (tables_at_) {
      case weights::bf16:
        return bf16_embedding_->store();
      case weights::fp8:
        return fp8_embedding_->store();
      case weights::fp32:
        break;
    }
    return embedding_.store();
  }

  /// `embedding` holding the tables (built around them on first use).
  template <class Embedding, class Projection>
  Embedding& with_tables(std::optional<Embedding>& embedding, std::optional<Projection>& projection, weights kind) {
    if (!embedding) {
      embedding.emplace(config_, std::move(tables()), std::move(*projection));
    } else if (tables_at_ != kind) {
      embedding->store() = std::move(tables());
    }
    tables_at_ = kind;
    return *embedding;
  }

  static embedding_type<Policy> build(const Policy& policy, const ngemb::ngram_config& config,
                                      std::vector<buffer_of<Policy, float>>& projections,
                                      std::optional<bf16_projection_type>& bf16_projection,
                                      std::optional<fp8_projection_type>& fp8_projection) {
    ngemb::table_store<ngemb::bf16, Policy> store(policy, config, /*with_base=*/true);
    fill_random(policy, store.base(), 1, 1.0f);
    for (int table = 0; table < config.num_tables(); ++table) {
      fill_random(policy, store.table(table), 100 + static_cast<std::uint64_t>(table), 1.0f);
    }
    // W_i on the host, uniform in +-1/sqrt(T*d) so the projected branch is O(1), rounded to bf16.
    const auto size = static_cast<std::size_t>(config.hidden_size * config.row_width());
    const float scale = 1.0f / std::sqrt(static_cast<float>(config.num_tables() * config.row_width()));
    std::vector<std::vector<float>> host(static_cast<std::size_t>(config.num_tables()), std::vector<float>(size));
    std::vector<ngemb::view<const float>> views;
    for (std::size_t table = 0; table < host.size(); ++table) {
      fill_random(ngemb::host_policy{0}, ngemb::view<float>(host[table]), 1000 + table, scale);
      for (float& weight : host[table]) {
        weight = static_cast<float>(ngemb::bf16(weight));
      }
      views.emplace_back(host[table]);
    }
    const ngemb::projection_shape dims{
        .num_tables = config.num_tables(), .row_width = config.row_width(), .output_width = config.hidden_size};
    ngemb::fused_projection<float, Policy> projection(policy, dims, std::span<const ngemb::view<const float>>(views));
    bf16_projection.emplace(policy, dims, std::span<const ngemb::view<const float>>(views));
    fp8_projection.emplace(policy, dims, std::span<const ngemb::view<const float>>(views));
    for (const auto& weights : views) {
      projections.emplace_back(policy, weights.size());
      copy_to(policy, weights, projections.back().as_view());
    }
    synchronize(policy);  // the host arrays die here
    return embedding_type<Policy>(config, std::move(store), std::move(projection));
  }

  ngemb::ngram_config config_;
  std::vector<buffer_of<Policy, float>> projections_;  // built by build(), before embedding_
  std::optional<bf16_projection_type> bf16_projection_;  // likewise; moved into their embeddings on first use
  std::optional<fp8_projection_type> fp8_projection_;
  embedding_type<Policy> embedding_;
  std::optional<bf16_weights_embedding_type<Policy>> bf16_embedding_;
  std::optional<fp8_weights_embedding_type<Policy>> fp8_embedding_;
  weights tables_at_ = weights::fp32;
};

/// One shape: its batch pool in policy memory, the ids of the whole pool (for the gather-only benchmark) and the
/// outputs. Each run_* call takes the pool's next batch.
template <class Policy>
class workload {
 public:
  workload(const Policy& policy, model<Policy>& model, const shape_spec& shape, unsigned seed)
      : policy_(policy),
        model_(&model),
        shape_(shape),
        batches_(std::max<std::size_t>(1, (pool_tokens + shape.tokens() - 1) / shape.tokens())),
        host_(random_batch(model.config(), shape.sequences * batches_, shape.length, shape.context, seed)) {
    const ngemb::ngram_config& config = model.config();
    const std::size_t tokens = shape_.tokens();
    const auto tables = static_cast<std::size_t>(config.num_tables());
    const auto width = static_cast<std::size_t>(config.row_width());
    const auto hidden = static_cast<std::size_t>(config.hidden_size);
    tokens_ = upload(host_.tokens);
    context_ = upload(host_.context);
    // Every sequence has the same length, so the first B+1 offsets of the pool serve every batch.
    offsets_ = upload(std::vector<std::int64_t>(host_.offsets.begin(),
                                                host_.offsets.begin() + static_cast<std::ptrdiff_t>(shape_.sequences + 1)));
    context_offsets_ = upload(std::vector<std::int64_t>(
        host_.context_offsets.begin(), host_.context_offsets.begin() + static_cast<std::ptrdiff_t>(shape_.sequences + 1)));
    ids_ = buffer_of<Policy, std::uint32_t>(policy_, tokens * tables);
    gathered_ = buffer_of<Policy, float>(policy_, tokens * width);
    projected_ = buffer_of<Policy, float>(policy_, tokens * hidden);
    out_ = buffer_of<Policy, float>(policy_, tokens * hidden);
    naive_out_ = buffer_of<Policy, float>(policy_, tokens * hidden);
    gathered_all_ = buffer_of<Policy, float>(policy_, tokens * tables * width);
    // The pool's ids, hashed once as one ragged batch (sequences are independent, so they equal per-batch ids).
    pool_ids_ = buffer_of<Policy, std::uint32_t>(policy_, host_.tokens.size() * tables);
    {
      const auto all_offsets = upload(host_.offsets);
      const auto all_context_offsets = upload(host_.context_offsets);
      const ngemb::ragged_view<const token_type> all_tokens(view_of(tokens_), view_of(all_offsets));
      const ngemb::ragged_view<const token_type> all_context(view_of(context_), view_of(all_context_offsets));
      ngemb::hash_tokens(policy_, model_->embedding().hasher(), all_tokens, all_context, pool_ids_.as_view());
      synchronize(policy_);
    }
    verify();
  }

  [[nodiscard]] std::size_t tokens() const { return shape_.tokens(); }
  [[nodiscard]] const shape_spec& shape() const { return shape_; }
  [[nodiscard]] const ngemb::ngram_config& config() const { return model_->config(); }

  /// The library's forward (hash + fused embed) of the next batch, with fp32 W_cat.
  void run_library() { forward(model_->embedding()); }
  /// The same with bf16 W_cat.
  void run_library_bf16() { forward(model_->bf16_weights_embedding()); }
  /// The same with block-scaled fp8 W_cat.
  void run_library_fp8() { forward(model_->fp8_weights_embedding()); }

  /// The naive path (see the top of the file) on the next batch.
  void run_naive() {
    const std::size_t batch = next();
    const ngemb::ragged_view<const token_type> tokens = batch_tokens(batch);
    const auto& embedding = model_->embedding();
    if (shape_.context > 0) {
      ngemb::hash_tokens(policy_, embedding.hasher(), tokens, batch_context(batch), ids_.as_view());
    } else {
      ngemb::hash_tokens(policy_, embedding.hasher(), tokens, ids_.as_view());
    }
    const std::size_t count = tokens.num_values();
    const int tables = model_->config().num_tables();
    const auto width = static_cast<std::size_t>(model_->config().row_width());
    const auto hidden = static_cast<std::size_t>(model_->config().hidden_size);
    const auto rows = embedding.store().ref();
    const ngemb::detail::row_chunks row_parts(width, row_chunk(policy_));
    const ngemb::detail::row_chunks out_parts(hidden, row_chunk(policy_));
    for (int table = 0; table < tables; ++table) {
      for_each_n(policy_, row_parts.count(count),
                 naive_gather_op{rows.tables[table], ids_.data(), table, tables, gathered_.data(), row_parts});
      gemm_nt(policy_, count, hidden, width, ngemb::view<const float>(gathered_.data(), count * width),
              model_->projection(table), projected_.as_view());
      for_each_n(policy_, out_parts.count(count),
                 naive_accumulate_op{projected_.data(), naive_out_.data(), table == 0, out_parts});
    }
    for_each_n(policy_, out_parts.count(count),
               naive_finish_op{rows.base, tokens.values().data(), naive_out_.data(), static_cast<float>(tables + 1),
                               out_parts});
  }

  /// The library's gather step alone, exactly as detail::embed_hashed runs it, on the next batch's ids.
  void run_gather() {
    const std::size_t batch = next();
    const auto& store = model_->embedding().store();
    const std::size_t count = tokens();
    ngemb::detail::gather_rows(policy_, store,
                               pool_ids_.data() + batch * count * static_cast<std::size_t>(store.num_tables()), count,
                               ngemb::view<float>(gathered_all_.data(), gathered_all_.size()));
  }

  /// The naive path's T gathers alone (the baseline of the gather benchmark), on the next batch's ids.
  void run_naive_gather() {
    const std::size_t batch = next();
    const std::size_t count = tokens();
    const int tables = model_->config().num_tables();
    const auto width = static_cast<std::size_t>(model_->config().row_width());
    const auto rows = model_->embedding().store().ref();
    const ngemb::detail::row_chunks row_parts(width, row_chunk(policy_));
    const std::uint32_t* ids = pool_ids_.data() + batch * count * static_cast<std::size_t>(tables);
    for (int table = 0; table < tables; ++table) {
      for_each_n(policy_, row_parts.count(count),
                 naive_gather_op{rows.tables[table], ids, table, tables, gathered_.data(), row_parts});
    }
  }

 private:
  template <class T>
  buffer_of<Policy, T> upload(const std::vector<T>& values) {
    buffer_of<Policy, T> buffer(policy_, values.size());
    copy_to(policy_, ngemb::view<const T>(values), buffer.as_view());
    synchronize(policy_);  // `values` may be a temporary
    return buffer;
  }

  template <class T>
  static ngemb::view<const T> view_of(const buffer_of<Policy, T>& buffer) {
    return {buffer.data(), buffer.size()};
  }

  template <class Embedding>
  void forward(Embedding& embedding) {
    const std::size_t batch = next();
    const ngemb::view<float> out = out_.as_view();
    if (shape_.context > 0) {
      embedding.forward(policy_, batch_tokens(batch), batch_context(batch), out);
    } else {
      embedding.forward(policy_, batch_tokens(batch), out);
    }
  }

  std::size_t next() {
    const std::size_t batch = cursor_;
    cursor_ = (cursor_ + 1) % batches_;
    return batch;
  }

  [[nodiscard]] ngemb::ragged_view<const token_type> batch_tokens(std::size_t batch) const {
    return {ngemb::view<const token_type>(tokens_.data() + batch * tokens(), tokens()), view_of(offsets_)};
  }
  [[nodiscard]] ngemb::ragged_view<const token_type> batch_context(std::size_t batch) const {
    const std::size_t size = shape_.sequences * shape_.context;
    return {ngemb::view<const token_type>(context_.data() + batch * size, size), view_of(context_offsets_)};
  }

  /// Library (fp32, bf16, fp8 W_cat) and naive outputs of the first batch must agree: max |library - naive| <= 1e-4 *
  /// max |naive| (all hold the same weights and accumulate in fp32 in a different order, so they differ by rounding
  /// only), all finite and not all zero.
  void verify() {
    cursor_ = 0;
    run_naive();
    cursor_ = 0;
    run_library();
    verify_against_naive("fp32 W_cat");
    cursor_ = 0;
    run_library_bf16();
    verify_against_naive("bf16 W_cat");
    cursor_ = 0;
    run_library_fp8();
    verify_against_naive("fp8 W_cat", fp8_tolerance);
    cursor_ = 0;
  }

  /// fp8 W_cat's weights differ from the naive path's by up to 2^-4 relative (a 3-bit mantissa): its output differs
  /// by a few percent of the largest, where a wrong path is off by its whole size.
  static constexpr double fp8_tolerance = 1e-1;

  void verify_against_naive(const std::string& which, double tolerance = 1e-4) {

    const std::size_t size = out_.size();
    std::vector<float> library(size);
    std::vector<float> naive(size);
    copy_to_host(policy_, ngemb::view<const float>(out_.data(), size), ngemb::view<float>(library));
    copy_to_host(policy_, ngemb::view<const float>(naive_out_.data(), size), ngemb::view<float>(naive));
    double largest = 0;
    double difference = 0;
    std::size_t worst = 0;
    for (std::size_t i = 0; i < size; ++i) {
      if (!std::isfinite(library[i]) || !std::isfinite(naive[i])) {
        fail_setup(std::string(shape_.name) + " (" + which + "): non-finite output at " + std::to_string(i));
      }
      largest = std::max(largest, static_cast<double>(std::abs(naive[i])));
      const double here = std::abs(static_cast<double>(library[i]) - static_cast<double>(naive[i]));
      if (here > difference) {
        difference = here;
        worst = i;
      }
    }
    if (largest == 0 || difference > tolerance * largest) {
      fail_setup(std::string(shape_.name) + ": library (" + which + ") and naive outputs differ: max |difference| " +
                 std::to_string(difference) + " at element " + std::to_string(worst) + " (library " +
                 std::to_string(library[worst]) + ", naive " + std::to_string(naive[worst]) +
                 "), max |naive| " + std::to_string(largest) + ", tolerance " + std::to_string(tolerance) + " relative");
    }
  }

  Policy policy_;
  model<Policy>* model_;
  shape_spec shape_;
  std::size_t batches_;
  std::size_t cursor_ = 0;
  batch host_;
  buffer_of<Policy, token_type> tokens_;
  buffer_of<Policy, token_type> context_;
  buffer_of<Policy, std::int64_t> offsets_;
  buffer_of<Policy, std::int64_t> context_offsets_;
  buffer_of<Policy, std::uint32_t> ids_;
  buffer_of<Policy, std::uint32_t> pool_ids_;
  buffer_of<Policy, float> gathered_;
  buffer_of<Policy, float> projected_;
  buffer_of<Policy, float> out_;
  buffer_of<Policy, float> naive_out_;
  buffer_of<Policy, float> gathered_all_;
};

// ---------------------------------------------------------------------------------------------------------------
// Timing and reporting.

enum class variant { library, library_bf16, library_fp8, naive, gather };

/// Bytes per W_cat weight the variant reads (fp8's 128 x 128 block scales add 1/4096 of a float: left out).
constexpr double weight_bytes(variant kind) {
  return kind == variant::library_bf16 ? 2.0 : kind == variant::library_fp8 ? 1.0 : 4.0;
}

/// One call of the chosen variant on the next batch.
template <class Work>
void run_once(Work& work, variant kind) {
  switch (kind) {
    case variant::library:
      work.run_library();
      break;
    case variant::library_bf16:
      work.run_library_bf16();
      break;
    case variant::library_fp8:
      work.run_library_fp8();
      break;
    case variant::naive:
      work.run_naive();
      break;
    case variant::gather:
      work.run_gather();
      break;
  }
}

/// Bytes per token a step moves (read + written) and of them those it reads (see forward_bytes_per_token).
struct token_bytes {
  double moved;
  double read;
};

/// The byte accounting of one step of `kind` on `work`'s batch.
template <class Work>
token_bytes bytes_per_token(const Work& work, variant kind) {
  const ngemb::ngram_config& config = work.config();
  if (kind == variant::gather) {
    return {gather_bytes_per_token(config), gather_read_bytes_per_token(config)};
  }
  return {forward_bytes_per_token(config, work.tokens(), weight_bytes(kind)),
          forward_read_bytes_per_token(config, work.tokens(), weight_bytes(kind))};
}

/// The counters every benchmark prints. `baseline_seconds` is the naive counterpart's median (measured at setup),
/// `bandwidth` the memcpy floor's bytes per second (read + write), `read_bandwidth` the read-only floor's, where
/// the program measures one (vs_read_floor only then).
inline void set_counters(benchmark::State& state, double tokens, const token_bytes& per_token,
                         double seconds_per_iteration, double baseline_seconds, double bandwidth,
                         std::optional<double> read_bandwidth = std::nullopt) {
  state.counters["tokens_per_second"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes_per_token"] = benchmark::Counter(per_token.moved);
  state.counters["vs_naive"] = benchmark::Counter(baseline_seconds / seconds_per_iteration);
  state.counters["vs_floor"] = benchmark::Counter(seconds_per_iteration / (per_token.moved * tokens / bandwidth));
  if (read_bandwidth) {
    state.counters["vs_read_floor"] =
        benchmark::Counter(seconds_per_iteration / (per_token.read * tokens / *read_bandwidth));
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(per_token.moved * tokens));
}

/// Registers library (fp32, bf16 and fp8 W_cat), naive and gather benchmarks for every shape as
/// `{prefix}{shape}{, _bf16, _fp8, _naive, _gather}`;
/// `run(state, shape_index, variant)` measures one and `configure(benchmark, shape, variant)` sets it up.
template <class Run, class Configure>
void register_shapes(const std::string& prefix, Run run, Configure configure) {
  for (std::size_t index = 0; index < shapes.size(); ++index) {
    for (const auto& [kind, suffix] :
         {std::pair{variant::library, ""}, std::pair{variant::library_bf16, "_bf16"},
          std::pair{variant::library_fp8, "_fp8"}, std::pair{variant::naive, "_naive"},
          std::pair{variant::gather, "_gather"}}) {
      const std::string name = prefix + shapes[index].name + suffix;
      configure(benchmark::RegisterBenchmark(
                    name.c_str(), [run, index, kind = kind](benchmark::State& state) { run(state, index, kind); }),
                shapes[index], kind);
    }
  }
}

}  // namespace ngemb_bench
