#pragma once
// The part of the forward after hashing, shared by ngram_embedding and the per-layer embeddings: gather the
// rows of every token side by side, project them with one GEMM, then amplify, add the base row and average.
// Ids reach this only from the library's own hashing, so they are in range by construction.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ngemb/core/error.hpp"
#include "ngemb/core/row_chunks.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/embed/amplification.hpp"
#include "ngemb/embed/detail/embedding_ops.hpp"

namespace ngemb::detail {

/// Scratch memory reused across calls (grown on demand). Device buffers are ordered on the stream of the call
/// that grew them, so one embedding object serves one stream.
template <class Policy, class Acc>
struct embedding_workspace {
  typename Policy::template buffer<std::uint32_t> ids;
  typename Policy::template buffer<Acc> gathered;
  typename Policy::template buffer<Acc> branch;
  typename Policy::template buffer<row_statistics<Acc>> statistics;

  template <class T>
  static view<T> ensure(const Policy& policy, typename Policy::template buffer<T>& buffer, std::size_t size) {
    if (buffer.size() < size) {
      buffer = typename Policy::template buffer<T>(policy, size);
    }
    return buffer.as_view().subview(0, size);
  }
};

inline void check_output_size(const char* who, std::size_t tokens, std::int64_t width, std::size_t got) {
  if (got != tokens * static_cast<std::size_t>(width)) {
    throw shape_mismatch(std::string(who) + ": out must hold tokens x width = " + std::to_string(tokens) + " x " +
                         std::to_string(width) + " = " + std::to_string(tokens * static_cast<std::size_t>(width)) +
                         " values, got " + std::to_string(got));
  }
}

/// gathered [count x T*d] = the sub-table rows of each token's ids [count x T], side by side.
template <class Policy, class Store, class Acc>
void gather_rows(const Policy& policy, const Store& store, const std::uint32_t* ids, std::size_t count,
                 view<Acc> gathered) {
  const int tables = store.num_tables();
  const row_chunks chunks(static_cast<std::size_t>(store.row_width()), row_chunk(policy));
  const std::size_t rows = count * static_cast<std::size_t>(tables);
  using store_ref = decltype(store.ref());
  for_each_n(for_operations_of(policy, chunks.chunk), chunks.count(rows),
             gather_rows_op<store_ref, Acc>{store.ref(), ids, gathered.data(), tables, rows, chunks});
}

/// A store whose sub-table rows live on other ranks too (store/sharded_store.hpp): it computes the projected
/// branch itself, and takes part in its collectives even for an empty batch.
template <class Store>
concept distributed_store = Store::is_distributed;

/// out [count x W] from the ids [count x T] (per-table layout) already hashed into workspace.ids. `tokens` (the
/// current tokens, for the base rows) is read only when the store has a base table.
template <class Policy, class Store, class Projection, class Amplification, class Token, class Out>
void embed_hashed(const Policy& policy, Store& store, const Projection& projection,
                  const Amplification& amplification, std::size_t count, const Token* tokens,
                  embedding_workspace<Policy, typename Projection::accumulator>& workspace, view<Out> out) {
  using Acc = typename Projection::accumulator;
  using workspace_type = embedding_workspace<Policy, Acc>;
  const int tables = store.num_tables();
  const std::int64_t width = projection.output_width();
  const view<Acc> branch = workspace_type::template ensure<Acc>(policy, workspace.branch,
                                                                count * static_cast<std::size_t>(width));
  if constexpr (distributed_store<Store>) {
    store.project(policy, view<const std::uint32_t>(workspace.ids.data(), count * static_cast<std::size_t>(tables)),
                  count, projection, branch);
    if (count == 0) {
      return;
    }
  } else {
    if (count == 0) {
      return;
    }
    const view<Acc> gathered = workspace_type::template ensure<Acc>(
        policy, workspace.gathered, count * static_cast<std::size_t>(projection.input_width()));
    gather_rows(policy, store, workspace.ids.data(), count, gathered);
    projection.project(policy, count, view<const Acc>(gathered.data(), gathered.size()), branch);
  }

  const auto amplification_ref = amplification.ref(width);
  using amplification_ref_type = decltype(amplification_ref);
  const row_statistics<Acc>* statistics = nullptr;
  if constexpr (Amplification::needs_statistics) {
    const view<row_statistics<Acc>> rows =
        workspace_type::template ensure<row_statistics<Acc>>(policy, workspace.statistics, count);
    for_each_n(for_operations_of(policy, static_cast<std::size_t>(width)), count,
               row_statistics_op<amplification_ref_type, Acc>{amplification_ref, branch.data(), rows.data(), width});
    statistics = rows.data();
  }

  const row_chunks out_chunks(static_cast<std::size_t>(width), row_chunk(policy));
  const Acc divisor = static_cast<Acc>(tables + (store.has_base() ? 1 : 0));
  for_each_n(for_operations_of(policy, out_chunks.chunk), out_chunks.count(count),
             combine_op<decltype(store.ref()), Token, amplification_ref_type, Acc, Out>{
                 store.ref(), tokens, amplification_ref, branch.data(), statistics, out.data(), divisor,
                 static_cast<std::uint64_t>(store.vocab_size()), out_chunks});
}

}  // namespace ngemb::detail
