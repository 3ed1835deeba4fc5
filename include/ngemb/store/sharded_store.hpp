#pragma once
// sharded_store: the K*(N-1) sub-tables split by rows over the ranks of a communicator, each rank holding (and
// reading from its checkpoint) only its own rows in a Local store (table_store, mmap_store, ...). The base table
// E_0 stays whole on every rank.
//
// The split: the sub-tables concatenated (global row = m_0 + ... + m_{i-1} + row) are cut into contiguous ranges,
// rank r of P owning global rows [R*r/P, R*(r+1)/P), R = sum m_i; a rank's range may cover parts of several
// sub-tables, and a sub-table may straddle ranks. ranges_of(config, r, P) gives rank r's rows per sub-table.
//
// Two lookups, chosen per call by sharded_options:
// - all_to_all (Meituan's design, as expert-parallel dispatch and combine): each rank buckets its batch's ids by
//   owner, exchanges counts, sends the ids, serves the requests it receives from its shard, sends the rows back in
//   the stored dtype and scatters them into [tokens x T*d], then projects with the whole W_cat; rows it holds itself
//   it reads in place, outside the exchange. Each rank may pass its own batch (an empty one included: it still
//   serves the others). The rows are the unsharded store's bit for bit, so the output is too. The bucketing runs on
//   the host (ids are 48 bytes per Lite token; a device copies them back once per call).
// - partial_projection (the vocab-parallel design of SGLang and vLLM): every rank passes the same batch, gathers
//   the rows it holds (zeros for the others), projects them with the columns of W_cat of its sub-tables, and an
//   all-reduce sums the partial outputs. Exact up to the order of that sum (fp32 rounding of the partial sums).
// - automatic: every rank passes the same batch; partial_projection below `all_to_all_from_tokens` tokens,
//   all_to_all from there. With the same batch everywhere, partial projection splits the GEMM over the ranks and
//   needs one collective (it wins wherever the GEMM or the latency dominates: on the CPU measured, at every batch up
//   to 4096 tokens, hence the default), while all_to_all moves 4x fewer bytes for Lite (6 KB of bf16 rows per token
//   against an fp32 all-reduce of H) and wins where the link is the bottleneck (README: the PCIe projection).
// Every collective waits at most the communicator's timeout, then throws communication_error.
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/comm/communicator.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/row_chunks.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/store/detail/shard_ops.hpp"
#include "ngemb/store/store.hpp"

namespace ngemb {

enum class sharded_lookup { automatic, all_to_all, partial_projection };

struct sharded_options {
  sharded_lookup lookup = sharded_lookup::automatic;
  /// Under automatic: batches of at least this many tokens use all_to_all (default: never; see above).
  std::size_t all_to_all_from_tokens = std::numeric_limits<std::size_t>::max();
};

namespace detail {

/// What a Local store of a sharded store must have beyond the store concept: its rows of each sub-table.
template <class S>
concept ranged_store = store<S> && requires(const S& s, int table) {
  { s.range(table) } -> std::convertible_to<row_range>;
};

/// A projection whose share for some sub-tables' columns can be computed alone (fused_projection).
template <class P, class Policy, class Acc>
concept column_projection = requires(const P& p, const Policy& policy, std::size_t tokens, std::int64_t column,
                                     view<const Acc> in, view<Acc> out) {
  p.project_columns(policy, tokens, column, column, in, out);
};

}  // namespace detail

template <class Local, class Communicator>
class sharded_store {
  static_assert(detail::check_store<Local>());
  static_assert(detail::ranged_store<Local>, "sharded_store: the Local store must have range(table), its rows of "
                                             "each sub-table (table_store, mmap_store)");
  static_assert(detail::check_communicator<Communicator>());
  static_assert(std::is_same_v<typename Local::policy_type, typename Communicator::policy_type>,
                "sharded_store: the Local store and the communicator must work in the same policy's memory");

 public:
  using element_type = typename Local::element_type;
  using policy_type = typename Local::policy_type;
  using local_store_type = Local;
  using communicator_type = Communicator;
  /// ngram_embedding hands a distributed store the whole branch (lookup and projection), never row pointers.
  static constexpr bool is_distributed = true;

  /// Rank r of P's rows of each sub-table under the split above.
  static std::vector<row_range> ranges_of(const ngram_config& config, int rank, int ranks) {
    check_rank(rank, ranks);
    return detail::table_split(table_rows(config), ranks).ranges(rank);
  }

  /// Adopts this rank's shard: `local.range(i)` must be ranges_of(config, rank, size)[i] for every sub-table
  /// (shape_mismatch naming the first that is not).
  sharded_store(const ngram_config& config, Local local, Communicator communicator, sharded_options options = {})
      : local_(std::move(local)),
        communicator_(std::move(communicator)),
        options_(options),
        split_(table_rows(config), communicator_.size()),
        shard_(split_.shard(communicator_.rank())),
        table_rows_(table_rows(config)) {
    const std::vector<row_range> expected = split_.ranges(communicator_.rank());
    if (local_.num_tables() != static_cast<int>(expected.size())) {
      throw shape_mismatch("sharded_store: the local store has " + std::to_string(local_.num_tables()) +
                           " sub-tables, the config K*(N-1) = " + std::to_string(expected.size()));
    }
    for (int table = 0; table < local_.num_tables(); ++table) {
      const row_range got = local_.range(table);
      const row_range want = expected[static_cast<std::size_t>(table)];
      if (got.count != want.count || (want.count != 0 && got.first != want.first)) {
        throw shape_mismatch("sharded_store: rank " + std::to_string(communicator_.rank()) + " of " +
                             std::to_string(communicator_.size()) + " must hold rows [" + std::to_string(want.first) +
                             ", " + std::to_string(want.first + want.count) + ") of sub-table " +
                             std::to_string(table) + ", its local store holds [" + std::to_string(got.first) + ", " +
                             std::to_string(got.first + got.count) + ")");
      }
    }
    if (split_.bound(communicator_.rank() + 1) - split_.bound(communicator_.rank()) >
        static_cast<std::int64_t>(std::numeric_limits<std::uint32_t>::max())) {
      throw invalid_argument("sharded_store: a shard of more than 2^32 - 1 rows; use more ranks");
    }
  }

  /// Loads this rank's rows only (Local::load_rows) with `communicator`'s rank and size.
  static sharded_store load(const policy_type& policy, const std::shared_ptr<const checkpoint>& source,
                            const std::string& prefix, const ngram_config& config, Communicator communicator,
                            sharded_options options = {}) {
    const std::vector<row_range> rows = ranges_of(config, communicator.rank(), communicator.size());
    Local local = Local::load_rows(policy, source, prefix, config, std::span<const row_range>(rows));
    return sharded_store(config, std::move(local), std::move(communicator), options);
  }

  /// The store concept's form, over a default-constructed communicator (mpi_communicator: MPI_COMM_WORLD).
  static sharded_store load(const policy_type& policy, const std::shared_ptr<const checkpoint>& source,
                            const std::string& prefix, const ngram_config& config)
    requires std::default_initializable<Communicator>
  {
    return load(policy, source, prefix, config, Communicator{});
  }

  /// The names load() reads, for a loader's check of a checkpoint (a names-only collection). A rank holds only its
  /// shard, so writing the tensors throws invalid_argument: save them from an unsharded store.
  void save(const policy_type& /*policy*/, const std::string& prefix, tensor_collection& out) const {
    const std::string why = "sharded_store: rank " + std::to_string(communicator_.rank()) +
                            " holds only its shard of \"" + prefix +
                            "\"'s sub-tables; save the tables from an unsharded store";
    if (has_base()) {
      out.add_unwritable<element_type>(ngram_names::base_table(prefix), {vocab_size(), hidden_size()}, why);
    }
    const std::string module = ngram_names::module(prefix);
    for (int table = 0; table < num_tables(); ++table) {
      out.add_unwritable<element_type>(ngram_names::embedder(module, table), {rows(table), row_width()}, why);
    }
  }

  [[nodiscard]] int num_tables() const { return static_cast<int>(table_rows_.size()); }
  /// m_i: the rows of the whole sub-table, as the hasher addresses them.
  [[nodiscard]] std::int64_t rows(int table) const { return table_rows_[static_cast<std::size_t>(table)]; }
  [[nodiscard]] std::int64_t row_width() const { return local_.row_width(); }
  [[nodiscard]] bool has_base() const { return local_.has_base(); }
  [[nodiscard]] std::int64_t vocab_size() const { return local_.vocab_size(); }
  [[nodiscard]] std::int64_t hidden_size() const { return local_.hidden_size(); }
  /// The base table only: sub-table rows live on their owners and are reached through lookup() and project().
  [[nodiscard]] table_rows_ref<element_type> ref() const {
    table_rows_ref<element_type> base_only = local_.ref();
    std::fill(std::begin(base_only.tables), std::end(base_only.tables), nullptr);
    return base_only;
  }

  [[nodiscard]] const Local& local() const { return local_; }
  [[nodiscard]] Communicator& communicator() { return communicator_; }
  [[nodiscard]] const Communicator& communicator() const { return communicator_; }
  [[nodiscard]] const sharded_options& options() const { return options_; }
  void set_options(const sharded_options& options) { options_ = options; }
  /// The lookup a batch of `tokens` tokens takes under the options.
  [[nodiscard]] sharded_lookup lookup_for(std::size_t tokens) const {
    if (options_.lookup != sharded_lookup::automatic) {
      return options_.lookup;
    }
    return tokens >= options_.all_to_all_from_tokens ? sharded_lookup::all_to_all : sharded_lookup::partial_projection;
  }

  /// gathered [count x T*d] = the rows of ids [count x T] (per-table layout, policy memory), through the all-to-all:
  /// each rank its own batch. Bit for bit the unsharded store's gather. An id outside its sub-table is
  /// invalid_argument before any collective (project() trusts its ids: they come from the library's hashing).
  template <class Acc>
  void lookup(const policy_type& policy, view<const std::uint32_t> ids, std::size_t count, view<Acc> gathered) {
    check_sizes(ids.size(), count, gathered.size(), static_cast<std::size_t>(num_tables() * row_width()), "gathered");
    std::vector<std::uint32_t>& host_ids = scratch_.host_ids;
    host_ids.resize(ids.size());
    copy_to_host(policy, ids, view<std::uint32_t>(host_ids));
    detail::bucketed_requests& buckets = scratch_.buckets;
    buckets.bucket(split_, communicator_.rank(), host_ids);
    const std::vector<std::size_t>& send_counts = buckets.counts;
    std::vector<std::size_t>& receive_counts = scratch_.receive_counts;
    receive_counts.assign(send_counts.size(), 0);
    communicator_.exchange_counts(std::span<const std::size_t>(send_counts), std::span<std::size_t>(receive_counts));
    std::size_t received = 0;
    for (const std::size_t requests : receive_counts) {
      received += requests;
    }
    const auto width = static_cast<std::size_t>(row_width());
    const detail::row_chunks chunks(width, row_chunk(policy));
    using local_ref = decltype(local_.ref());

    // Requests travel to their owners, which answer from their shards in the order asked; this rank's own rows are
    // read in place meanwhile (the host policy runs it in order, a device queues it on the same stream).
    const view<std::uint32_t> requests = upload(policy, scratch_.requests, buckets.requests);
    const view<std::uint32_t> asked = ensure(policy, scratch_.asked, received);
    communicator_.all_to_all_v(policy, view<const std::uint32_t>(requests), std::span<const std::size_t>(send_counts),
                               asked, std::span<const std::size_t>(receive_counts));
    const view<std::uint32_t> local_requests = upload(policy, scratch_.local_requests, buckets.local_requests);
    const view<std::uint32_t> local_rows = upload(policy, scratch_.local_rows, buckets.local_rows);
    for_each_n(for_operations_of(policy, chunks.chunk), chunks.count(local_rows.size()),
               detail::copy_shard_rows_op<local_ref, Acc>{local_.ref(), shard_, local_requests.data(),
                                                          local_rows.data(), gathered.data(), local_rows.size(),
                                                          chunks});
    const view<element_type> answers = ensure(policy, scratch_.answers, received * width);
    for_each_n(for_operations_of(policy, chunks.chunk), chunks.count(received),
               detail::copy_shard_rows_op<local_ref, element_type>{local_.ref(), shard_, asked.data(), nullptr,
                                                                   answers.data(), received, chunks});

    std::vector<std::size_t>& answer_counts = scratch_.answer_counts;
    std::vector<std::size_t>& reply_counts = scratch_.reply_counts;
    answer_counts.resize(receive_counts.size());
    reply_counts.resize(send_counts.size());
    for (std::size_t rank = 0; rank < send_counts.size(); ++rank) {
      answer_counts[rank] = receive_counts[rank] * width;
      reply_counts[rank] = send_counts[rank] * width;
    }
    const view<element_type> replies = ensure(policy, scratch_.replies, requests.size() * width);
    communicator_.all_to_all_v(policy, view<const element_type>(answers), std::span<const std::size_t>(answer_counts),
                               replies, std::span<const std::size_t>(reply_counts));

    const view<std::uint32_t> answer_rows = upload(policy, scratch_.answer_rows, buckets.answer_rows);
    for_each_n(for_operations_of(policy, chunks.chunk), chunks.count(answer_rows.size()),
               detail::scatter_answers_op<element_type, Acc>{replies.data(), answer_rows.data(), gathered.data(),
                                                             chunks});
    synchronize(policy);  // the host vectors uploaded above are rewritten by the next call
  }

  /// branch [count x H] = the projected n-gram rows of ids [count x T] under lookup_for(count): what
  /// ngram_embedding's forward needs of a store before amplification. Under partial_projection (and automatic)
  /// every rank must pass the same batch: a different token count on any rank is a shape_mismatch on all.
  template <class Projection, class Acc>
  void project(const policy_type& policy, view<const std::uint32_t> ids, std::size_t count,
               const Projection& projection, view<Acc> branch) {
    static_assert(detail::column_projection<Projection, policy_type, Acc>,
                  "sharded_store: the projection must have project_columns(policy, tokens, first_column, columns, "
                  "in, out) (fused_projection)");
    const auto output_width = static_cast<std::size_t>(projection.output_width());
    check_sizes(ids.size(), count, branch.size(), output_width, "branch");
    if (lookup_for(count) == sharded_lookup::all_to_all) {
      const view<Acc> gathered = ensure(policy, gathered_buffer<Acc>(), count * static_cast<std::size_t>(
                                                                                    projection.input_width()));
      lookup(policy, ids, count, gathered);
      projection.project(policy, count, view<const Acc>(gathered), branch);
      return;
    }
    require_same_batch(count);
    // Sub-tables this shard holds rows of: its range is contiguous in the concatenation, so they are too.
    int first_table = 0;
    while (first_table < num_tables() && shard_.count[first_table] == 0) {
      ++first_table;
    }
    int end_table = first_table;
    while (end_table < num_tables() && shard_.count[end_table] != 0) {
      ++end_table;
    }
    const int owned_tables = end_table - first_table;
    const auto width = static_cast<std::size_t>(row_width());
    const view<Acc> gathered =
        ensure(policy, gathered_buffer<Acc>(), count * static_cast<std::size_t>(owned_tables) * width);
    if (owned_tables > 0) {
      const detail::row_chunks chunks(width, row_chunk(policy));
      using local_ref = decltype(local_.ref());
      for_each_n(for_operations_of(policy, chunks.chunk), chunks.count(count * static_cast<std::size_t>(owned_tables)),
                 detail::gather_owned_op<local_ref, Acc>{local_.ref(), shard_, ids.data(), gathered.data(),
                                                         num_tables(), first_table, owned_tables, chunks});
    }
    projection.project_columns(policy, count, static_cast<std::int64_t>(first_table) * row_width(),
                               static_cast<std::int64_t>(owned_tables) * row_width(), view<const Acc>(gathered),
                               branch);
    communicator_.all_reduce_sum(policy, branch);
  }

 private:
  static std::vector<std::int64_t> table_rows(const ngram_config& config) {
    config.validate();
    detail::check_table_count(config.num_tables(), "sharded_store");
    std::vector<std::int64_t> rows;
    for (int table = 0; table < config.num_tables(); ++table) {
      rows.push_back(config.modulus(table));
    }
    return rows;
  }

  static void check_rank(int rank, int ranks) {
    if (ranks < 1 || rank < 0 || rank >= ranks) {
      throw invalid_argument("sharded_store: rank " + std::to_string(rank) + " of " + std::to_string(ranks) +
                             " ranks is not a rank");
    }
  }

  void check_sizes(std::size_t ids, std::size_t count, std::size_t out, std::size_t width, const char* name) const {
    if (ids != count * static_cast<std::size_t>(num_tables()) || out != count * width) {
      throw shape_mismatch("sharded_store: " + std::to_string(count) + " tokens need " +
                           std::to_string(count * static_cast<std::size_t>(num_tables())) + " ids and " +
                           std::to_string(count * width) + " values of " + name + ", got " + std::to_string(ids) +
                           " and " + std::to_string(out));
    }
  }

  /// partial_projection sums every rank's share of the same tokens: a rank with another batch would add rows of
  /// other tokens, so the token counts are compared first (one count per peer).
  void require_same_batch(std::size_t count) {
    const auto ranks = static_cast<std::size_t>(communicator_.size());
    std::vector<std::size_t> mine(ranks, count);
    std::vector<std::size_t> theirs(ranks, 0);
    communicator_.exchange_counts(std::span<const std::size_t>(mine), std::span<std::size_t>(theirs));
    for (std::size_t rank = 0; rank < ranks; ++rank) {
      if (theirs[rank] != count) {
        throw shape_mismatch("sharded_store: partial projection needs the same batch on every rank; rank " +
                             std::to_string(communicator_.rank()) + " has " + std::to_string(count) +
                             " tokens, rank " + std::to_string(rank) + " has " + std::to_string(theirs[rank]));
      }
    }
  }

  template <class T>
  static view<T> ensure(const policy_type& policy, typename policy_type::template buffer<T>& buffer,
                        std::size_t size) {
    if (buffer.size() < size) {
      buffer = typename policy_type::template buffer<T>(policy, size);
    }
    return buffer.as_view().subview(0, size);
  }

  /// `values` copied into `buffer` (grown on demand), in policy memory.
  static view<std::uint32_t> upload(const policy_type& policy,
                                    typename policy_type::template buffer<std::uint32_t>& buffer,
                                    const std::vector<std::uint32_t>& values) {
    const view<std::uint32_t> destination = ensure(policy, buffer, values.size());
    copy_to(policy, view<const std::uint32_t>(values), destination);
    return destination;
  }

  template <class Acc>
  typename policy_type::template buffer<Acc>& gathered_buffer() {
    if constexpr (std::is_same_v<Acc, double>) {
      return scratch_.gathered_double;
    } else {
      return scratch_.gathered;
    }
  }

  /// Per-call memory, grown on demand; device buffers are ordered on the stream of the call that grew them.
  struct scratch {
    std::vector<std::uint32_t> host_ids;
    detail::bucketed_requests buckets;
    std::vector<std::size_t> receive_counts;
    std::vector<std::size_t> answer_counts;
    std::vector<std::size_t> reply_counts;
    typename policy_type::template buffer<std::uint32_t> requests;
    typename policy_type::template buffer<std::uint32_t> asked;
    typename policy_type::template buffer<std::uint32_t> answer_rows;
    typename policy_type::template buffer<std::uint32_t> local_requests;
    typename policy_type::template buffer<std::uint32_t> local_rows;
    typename policy_type::template buffer<element_type> answers;
    typename policy_type::template buffer<element_type> replies;
    typename policy_type::template buffer<float> gathered;
    typename policy_type::template buffer<double> gathered_double;
  };

  Local local_;
  Communicator communicator_;
  sharded_options options_;
  detail::table_split split_;
  detail::shard_rows shard_;
  std::vector<std::int64_t> table_rows_;
  scratch scratch_;
};

}  // namespace ngemb
