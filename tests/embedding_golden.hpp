#pragma once
// The golden n-gram embedding cases written by tests/reference/ngram_embedding_reference.py: a checkpoint folder,
// a ragged batch, its ids and the fp64 outputs, the error measure the tests state their tolerances in, and the
// checks the host (tests/embed.cpp) and device (tests/cuda/embed.cu) tests both run, under any policy.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <type_traits>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "ngemb/core/config.hpp"
#include "ngemb/cache/ngram_cache.hpp"
#include "ngemb/io/hf_config.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"
#include "token_batch.hpp"

namespace ngemb_test {

struct embedding_golden {
  std::filesystem::path folder;
  ngemb::ngram_config config;
  nlohmann::json expected;
  token_batch batch;
  std::vector<std::uint32_t> ids;

  /// Rows [tokens x width] of an fp64 output array of expected.json.
  [[nodiscard]] static std::vector<double> flatten(const nlohmann::json& rows) {
    std::vector<double> values;
    for (const auto& row : rows) {
      for (const auto& value : row) {
        values.push_back(value.get<double>());
      }
    }
    return values;
  }
};

inline embedding_golden load_embedding_golden(const std::string& name) {
  embedding_golden golden;
  golden.folder = std::filesystem::path(NGEMB_REFERENCE_DIR) / "embedding" / name;
  golden.config = ngemb::read_ngram_config(golden.folder);
  std::ifstream file(golden.folder / "expected.json");
  golden.expected = nlohmann::json::parse(file);
  for (const auto& sequence : golden.expected.at("sequences")) {
    golden.batch.add(sequence.get<std::vector<std::int32_t>>());
  }
  for (const auto& row : golden.expected.at("ids")) {
    for (const auto& id : row) {
      golden.ids.push_back(id.get<std::uint32_t>());
    }
  }
  return golden;
}

/// The largest |got - want| of a token row relative to that row's largest |want|: the error of a dot product
/// accumulated in floating point scales with the magnitudes involved, not with each (possibly tiny) result.
template <class Got>
double worst_row_error(const std::vector<Got>& got, const std::vector<double>& want, std::size_t width) {
  double worst = 0.0;
  for (std::size_t row = 0; row * width < want.size(); ++row) {
    double scale = 0.0;
    double difference = 0.0;
    for (std::size_t column = 0; column < width; ++column) {
      const std::size_t index = row * width + column;
      scale = std::max(scale, std::abs(want[index]));
      difference = std::max(difference, std::abs(static_cast<double>(got[index]) - want[index]));
    }
    worst = std::max(worst, difference / std::max(scale, 1e-300));
  }
  return worst;
}


/// Host values copied into policy memory.
template <class Policy, class T>
typename Policy::template buffer<T> to_policy(const Policy& policy, const std::vector<T>& values) {
  return ngemb::upload(policy, ngemb::view<const T>(values));
}

template <class Policy, class T>
std::vector<T> to_host(const Policy& policy, ngemb::view<const T> values) {
  std::vector<T> host(values.size());
  copy_to_host(policy, values, ngemb::view<T>(host));
  return host;
}

/// A token_batch in policy memory.
template <class Policy>
struct policy_batch {
  typename Policy::template buffer<std::int32_t> tokens;
  typename Policy::template buffer<std::int64_t> offsets;

  policy_batch(const Policy& policy, const token_batch& batch)
      : tokens(to_policy(policy, batch.tokens)), offsets(to_policy(policy, batch.offsets)) {}
  [[nodiscard]] ngemb::ragged_view<const std::int32_t> view() const {
    return {tokens.as_view(), offsets.as_view()};
  }
};

template <class Out>
std::vector<double> widened(const std::vector<Out>& values) {
  std::vector<double> result;
  for (const Out value : values) {
    if constexpr (std::is_same_v<Out, double>) {
      result.push_back(value);
    } else {
      result.push_back(static_cast<double>(static_cast<float>(value)));
    }
  }
  return result;
}

/// One-shot prefill of the golden batch: ids bit-exact, outputs within `tolerance`.
template <class Out, class Policy, class Embedding>
void check_prefill(const Policy& policy, Embedding& embedding, const embedding_golden& golden,
                   const std::string& amplification, double tolerance) {
  const auto width = static_cast<std::size_t>(golden.config.hidden_size);
  const policy_batch<Policy> batch(policy, golden.batch);
  auto out = to_policy(policy, std::vector<Out>(golden.batch.tokens.size() * width, Out(-7.0f)));
  embedding.forward(policy, batch.view(), out.as_view());
  CHECK(to_host(policy, embedding.last_ids()) == golden.ids);
  const double error = worst_row_error(widened(to_host(policy, ngemb::view<const Out>(out.as_view()))),
                                       embedding_golden::flatten(golden.expected.at("outputs").at(amplification)),
                                       width);
  INFO(golden.folder.filename().string() << " " << amplification << ": error " << error);
  CHECK(error <= tolerance);
}

/// The same batch fed through an n-gram cache in random steps (a prefill of a random prefix, then decode steps of
/// 0-3 tokens per sequence, each after a speculative draft token that verification rejects): every output equals
/// the reference.
template <class Policy, class Embedding>
void check_through_cache(const Policy& policy, Embedding& embedding, const embedding_golden& golden,
                         const std::string& amplification, std::uint32_t seed) {
  const auto width = static_cast<std::size_t>(golden.config.hidden_size);
  const auto& sequences = golden.expected.at("sequences");
  const std::size_t count = sequences.size();
  ngemb::ngram_cache<std::int32_t, Policy> cache(policy, golden.config, count, 3);
  std::vector<std::int32_t> slots;
  for (std::size_t s = 0; s < count; ++s) {
    slots.push_back(cache.allocate());
  }
  std::mt19937 random(seed);
  std::vector<std::size_t> done(count, 0);
  std::vector<double> got(golden.batch.tokens.size() * width, 0.0);
  const auto tables = static_cast<std::size_t>(golden.config.num_tables());
  std::vector<std::uint32_t> ids(golden.ids.size(), 0);
  bool first = true;
  bool remaining = true;
  while (remaining) {
    token_batch step;
    token_batch draft;
    std::vector<std::size_t> flat_positions;
    remaining = false;
    for (std::size_t s = 0; s < count; ++s) {
      const auto sequence = sequences[s].get<std::vector<std::int32_t>>();
      const std::size_t left = sequence.size() - done[s];
      const std::size_t take = std::min<std::size_t>(left, first ? random() % (sequence.size() + 1) : random() % 4);
      step.add(std::vector<std::int32_t>(sequence.begin() + static_cast<std::ptrdiff_t>(done[s]),
                                         sequence.begin() + static_cast<std::ptrdiff_t>(done[s] + take)));
      draft.add({static_cast<std::int32_t>(random() % static_cast<std::uint32_t>(golden.config.vocab_size))});
      for (std::size_t p = 0; p < take; ++p) {
        flat_positions.push_back(static_cast<std::size_t>(golden.batch.offsets[s]) + done[s] + p);
      }
      done[s] += take;
      remaining = remaining || done[s] < sequence.size();
    }
    first = false;
    const ngemb::view<const std::int32_t> slot_list(slots);
    const policy_batch<Policy> draft_tokens(policy, draft);
    auto draft_out = to_policy(policy, std::vector<float>(count * width));
    embedding.forward(policy, cache, slot_list, draft_tokens.view(), draft_out.as_view());
    cache.append(slot_list, draft_tokens.view());
    cache.commit(slot_list, std::vector<std::int32_t>(count, 0));

    const policy_batch<Policy> step_tokens(policy, step);
    auto out = to_policy(policy, std::vector<float>(step.tokens.size() * width));
    embedding.forward(policy, cache, slot_list, step_tokens.view(), out.as_view());
    cache.advance(slot_list, step_tokens.view());
    const auto host_out = to_host(policy, ngemb::view<const float>(out.as_view()));
    const auto step_ids = to_host(policy, embedding.last_ids());
    for (std::size_t t = 0; t < flat_positions.size(); ++t) {
      std::copy_n(step_ids.begin() + static_cast<std::ptrdiff_t>(t * tables), tables,
                  ids.begin() + static_cast<std::ptrdiff_t>(flat_positions[t] * tables));
      std::copy_n(host_out.begin() + static_cast<std::ptrdiff_t>(t * width), width,
                  got.begin() + static_cast<std::ptrdiff_t>(flat_positions[t] * width));
    }
  }
  CHECK(ids == golden.ids);  // step by step, the ids of the whole sequences at once
  const double error = worst_row_error(got, embedding_golden::flatten(golden.expected.at("outputs").at(amplification)),
                                       width);
  INFO(golden.folder.filename().string() << " through the cache: error " << error);
  CHECK(error <= 1e-5);
}

}  // namespace ngemb_test
