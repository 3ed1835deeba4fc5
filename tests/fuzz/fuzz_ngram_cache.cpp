// libFuzzer harness: hash_tokens (hash/hash_tokens.hpp) and the n-gram cache (cache/ngram_cache.hpp) under a
// sequence of operations. The input decodes into a small config (V, N, K, ratio or m_base, maybe an EOS and
// ignored tokens, sometimes out of range), the cache's constructor arguments (sometimes out of range), then
// operations: allocate, free, reset, append, commit, advance, hash_tokens through the cache, and hash_tokens
// over a ragged batch with context, with and without deferred input_checks, with token ids sometimes outside
// [0, V) and offsets sometimes malformed.
//
// A plain model of the cache (each slot's committed history and pending drafts) predicts every outcome:
//   * a call is refused exactly when its input is bad, and a refused call leaves the cache unchanged;
//   * an accepted call changes the cache as the model says (windows, counts, the lowest free slot);
//   * hashing through the cache gives the ids of hashing the whole sequence at once: the same as hash_tokens
//     over a plain ragged batch of history ++ drafts ++ tokens, and as a literal transcription of SPEC §2 here;
//   * with deferred checks the call stays memory-safe on bad input and raise_if_failed() reports it.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "ngemb/cache/ngram_cache.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/core/input_checks.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace {

using ngemb_fuzz::expect;
using ngemb_fuzz::library_accepts;
using policy_type = ngemb::host_policy;
using cache_type = ngemb::ngram_cache<std::int32_t, policy_type>;
using token = std::int32_t;

constexpr int max_operations = 48;
/// The model keeps this many committed tokens per slot: more than any look-back (N <= 64), so the ids of new
/// tokens are those of the whole sequence.
constexpr std::size_t kept_history = 80;

/// Mostly a value in [low, high]; one time in eight an edge value.
template <class T>
T value_or_edge(FuzzedDataProvider& in, T low, T high, std::initializer_list<T> edges) {
  if (edges.size() != 0 && in.ConsumeIntegralInRange<int>(0, 7) == 0) {
    return *(edges.begin() + in.ConsumeIntegralInRange<std::size_t>(0, edges.size() - 1));
  }
  return in.ConsumeIntegralInRange<T>(low, std::max(low, high));
}

ngemb::ngram_config decode_config(FuzzedDataProvider& in) {
  constexpr std::int64_t i64_max = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t i64_min = std::numeric_limits<std::int64_t>::min();
  constexpr int int_max = std::numeric_limits<int>::max();
  constexpr int int_min = std::numeric_limits<int>::min();
  ngemb::ngram_config config;
  config.vocab_size = value_or_edge<std::int64_t>(in, 1, 40, {0, -1, std::int64_t{1} << 31,
                                                              (std::int64_t{1} << 31) + 1, i64_max, i64_min, 65536});
  config.max_order = value_or_edge<int>(in, 2, 5, {0, 1, 8, 9, 64, 65, int_max, int_min});
  config.splits = value_or_edge<int>(in, 1, 3, {0, -1, 21, 64, 4096, 4097, int_max});
  const std::int64_t tables = std::int64_t{config.splits} * (std::int64_t{config.max_order} - 1);
  config.hidden_size = tables + value_or_edge<std::int64_t>(in, 0, 8, {-1, i64_min / 2, std::int64_t{1} << 20});
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
    case 0:
      config.m_base = value_or_edge<std::int64_t>(in, 0, 3, {-1, (std::int64_t{1} << 32) - 1,
                                                             (std::int64_t{1} << 32) - 130, std::int64_t{1} << 32,
                                                             i64_max, i64_min});
      break;
    case 1:
    case 2:
    case 3:
      config.m_base = in.ConsumeIntegralInRange<std::int64_t>(0, 100);
      break;
    case 4: {
      const double edges[] = {0.0, -1.0, NAN, INFINITY, 1e300, 4294967296.0, 0.5e-9};
      config.ratio = edges[in.ConsumeIntegralInRange<int>(0, 6)];
      break;
    }
    case 5:
      config.ratio = 1.0;
      config.m_base = 7;  // both: refused
      break;
    default:
      config.ratio = (1 + in.ConsumeIntegralInRange<int>(0, 63)) / 8.0;
      break;
  }
  const std::int64_t top = config.vocab_size > 0 ? config.vocab_size - 1 : 0;
  if (in.ConsumeBool()) {
    config.eos_token = value_or_edge<std::int64_t>(in, 0, top, {-1, config.vocab_size, i64_max});
  }
  const int ignored = value_or_edge<int>(in, 0, 2, {16, 17});
  for (int i = 0; i < ignored; ++i) {
    config.ignored_tokens.push_back(value_or_edge<std::int64_t>(in, 0, top, {-1, config.vocab_size}));
  }
  return config;
}

/// SPEC §2 written out with exact integers: id_i(p) = (t_0 + sum_j t_j * (V^j mod m_i)) mod m_i, look-back cut
/// at (and excluding) an EOS or ignored token, zero before the start; an ignored current token gets id 0.
std::vector<std::uint64_t> spec_ids(const ngemb::ngram_config& config, const std::vector<token>& sequence,
                                    std::size_t first, bool concatenated) {
  const auto cuts = [&](std::int64_t value) {
    return (config.eos_token && value == *config.eos_token) ||
           std::find(config.ignored_tokens.begin(), config.ignored_tokens.end(), value) != config.ignored_tokens.end();
  };
  const auto ignored = [&](std::int64_t value) {
    return std::find(config.ignored_tokens.begin(), config.ignored_tokens.end(), value) != config.ignored_tokens.end();
  };
  std::vector<std::uint64_t> ids;
  for (std::size_t p = first; p < sequence.size(); ++p) {
    std::uint64_t row_offset = 0;
    for (int table = 0; table < config.num_tables(); ++table) {
      const auto modulus = static_cast<unsigned __int128>(config.modulus(table));
      std::uint64_t id = 0;
      if (!ignored(sequence[p])) {
        unsigned __int128 sum = static_cast<std::uint32_t>(sequence[p]);
        unsigned __int128 weight = 1;
        for (int j = 1; j <= config.order_of(table) - 1; ++j) {
          weight = weight * static_cast<unsigned __int128>(config.vocab_size) % modulus;
          if (p < static_cast<std::size_t>(j) || cuts(sequence[p - static_cast<std::size_t>(j)])) {
            break;
          }
          sum += static_cast<unsigned __int128>(static_cast<std::uint32_t>(sequence[p - static_cast<std::size_t>(j)])) *
                 weight;
        }
        id = static_cast<std::uint64_t>(sum % modulus);
      }
      ids.push_back(id + (concatenated ? row_offset : 0));
      row_offset += static_cast<std::uint64_t>(modulus);
    }
  }
  return ids;
}

/// A ragged batch as the caller hands it in: the values, the offsets (maybe malformed), and whether they are good.
struct batch {
  std::vector<std::vector<token>> sequences;  // as the offsets split the values (when they are well formed)
  std::vector<token> values;
  std::vector<std::int64_t> offsets;
  bool offsets_ok = true;
  bool tokens_ok = true;

  [[nodiscard]] ngemb::ragged_view<const token> view() const {
    return {ngemb::view<const token>(values), ngemb::view<const std::int64_t>(offsets)};
  }
  [[nodiscard]] std::size_t count() const { return offsets.empty() ? 0 : offsets.size() - 1; }
};

class fuzz_session {
 public:
  fuzz_session(FuzzedDataProvider& in, const ngemb::ngram_config& config, cache_type& cache,
               const ngemb::longcat_hash* hasher)
      : in_(in), config_(config), cache_(cache), hasher_(hasher), slots_(cache.max_slots()),
        trace_(std::getenv("NGEMB_FUZZ_TRACE") != nullptr) {}

  void run() {
    for (int step = 0; step < max_operations && in_.remaining_bytes() > 0; ++step) {
      switch (in_.ConsumeIntegralInRange<int>(0, 9)) {
        case 0:
        case 1: allocate(); break;
        case 2: free_or_reset(true); break;
        case 3: free_or_reset(false); break;
        case 4: append(); break;
        case 5: commit(); break;
        case 6: advance(); break;
        case 7:
        case 8: hash_through_cache(); break;
        default: hash_with_context(); break;
      }
      check_cache();
    }
  }

 private:
  struct slot_model {
    bool allocated = false;
    std::vector<token> history;  // committed, the last kept_history
    std::vector<token> pending;
  };

  // ---- input decoding --------------------------------------------------------------------------------------

  std::int32_t pick_slot() {
    const int mode = in_.ConsumeIntegralInRange<int>(0, 7);
    std::vector<std::int32_t> allocated;
    for (std::size_t slot = 0; slot < slots_.size(); ++slot) {
      if (slots_[slot].allocated) {
        allocated.push_back(static_cast<std::int32_t>(slot));
      }
    }
    if (mode < 6 && !allocated.empty()) {
      return allocated[in_.ConsumeIntegralInRange<std::size_t>(0, allocated.size() - 1)];
    }
    if (mode == 7) {
      return value_or_edge<std::int32_t>(in_, -1, -1, {std::numeric_limits<std::int32_t>::min(),
                                                       std::numeric_limits<std::int32_t>::max(), -1});
    }
    return in_.ConsumeIntegralInRange<std::int32_t>(-2, static_cast<std::int32_t>(slots_.size()) + 2);
  }

  std::vector<std::int32_t> pick_slots() {
    std::vector<std::int32_t> slots(in_.ConsumeIntegralInRange<std::size_t>(0, 3));
    for (std::int32_t& slot : slots) {
      slot = pick_slot();
    }
    return slots;
  }

  [[nodiscard]] bool in_vocabulary(token value) const { return value >= 0 && value < config_.vocab_size; }

  token pick_token() {
    if (in_.ConsumeIntegralInRange<int>(0, 15) == 0) {
      const std::int64_t edges[] = {-1, config_.vocab_size, std::numeric_limits<token>::min(),
                                    std::numeric_limits<token>::max()};
      return static_cast<token>(edges[in_.ConsumeIntegralInRange<int>(0, 3)]);
    }
    const std::int64_t top =
        config_.vocab_size > 0 ? std::min<std::int64_t>(config_.vocab_size - 1, std::numeric_limits<token>::max()) : 0;
    // Small ids, and the EOS and ignored ids, often: they are the interesting ones.
    if (in_.ConsumeBool()) {
      std::vector<std::int64_t> special = config_.ignored_tokens;
      if (config_.eos_token) {
        special.push_back(*config_.eos_token);
      }
      if (!special.empty()) {
        return static_cast<token>(special[in_.ConsumeIntegralInRange<std::size_t>(0, special.size() - 1)]);
      }
    }
    return static_cast<token>(in_.ConsumeIntegralInRange<std::int64_t>(0, std::min<std::int64_t>(top, 7 + top % 9)));
  }

  batch make_batch(std::size_t sequences) {
    batch result;
    result.offsets.push_back(0);
    for (std::size_t s = 0; s < sequences; ++s) {
      std::vector<token> tokens(value_or_edge<std::size_t>(in_, 0, 4, {9, 16}));
      for (token& value : tokens) {
        value = pick_token();
        result.tokens_ok = result.tokens_ok && in_vocabulary(value);
      }
      result.values.insert(result.values.end(), tokens.begin(), tokens.end());
      result.offsets.push_back(static_cast<std::int64_t>(result.values.size()));
      result.sequences.push_back(std::move(tokens));
    }
    if (in_.ConsumeIntegralInRange<int>(0, 9) == 0) {
      malform(result.offsets);
      result.offsets_ok = well_formed(result.offsets, result.values.size());
      if (result.offsets_ok) {  // still well formed, but maybe split elsewhere: the offsets say what is what
        result.sequences.clear();
        for (std::size_t s = 0; s + 1 < result.offsets.size(); ++s) {
          result.sequences.emplace_back(result.values.begin() + result.offsets[s],
                                        result.values.begin() + result.offsets[s + 1]);
        }
      }
    }
    return result;
  }

  void malform(std::vector<std::int64_t>& offsets) {
    const std::size_t last = offsets.size() - 1;
    const std::size_t some = in_.ConsumeIntegralInRange<std::size_t>(0, last);
    switch (in_.ConsumeIntegralInRange<int>(0, 7)) {
      case 0: offsets.clear(); break;
      case 1: offsets[0] = in_.ConsumeBool() ? 1 : -1; break;
      case 2: offsets[some] = std::numeric_limits<std::int64_t>::min(); break;
      case 3: offsets[some] = std::numeric_limits<std::int64_t>::max(); break;
      case 4: offsets[last] += 1; break;
      case 5: offsets[last] -= 1; break;
      case 6: offsets.push_back(offsets[last]); break;  // one more (empty) sequence than slots
      default: offsets[some] += in_.ConsumeIntegralInRange<std::int64_t>(-3, 3); break;
    }
  }

  /// What input_checks::ragged accepts: one entry at least, starting at 0, never decreasing, ending at the count.
  static bool well_formed(const std::vector<std::int64_t>& offsets, std::size_t values) {
    if (offsets.empty() || offsets[0] != 0 || offsets.back() != static_cast<std::int64_t>(values)) {
      return false;
    }
    return std::is_sorted(offsets.begin(), offsets.end());
  }

  // ---- the model -------------------------------------------------------------------------------------------

  [[nodiscard]] bool slots_ok(const std::vector<std::int32_t>& slots) const {
    std::vector<bool> seen(slots_.size(), false);
    for (const std::int32_t slot : slots) {
      if (slot < 0 || static_cast<std::size_t>(slot) >= slots_.size() || !slots_[static_cast<std::size_t>(slot)].allocated ||
          seen[static_cast<std::size_t>(slot)]) {
        return false;
      }
      seen[static_cast<std::size_t>(slot)] = true;
    }
    return true;
  }

  slot_model& model(std::int32_t slot) { return slots_[static_cast<std::size_t>(slot)]; }

  static void add_history(slot_model& slot, const std::vector<token>& tokens) {
    slot.history.insert(slot.history.end(), tokens.begin(), tokens.end());
    if (slot.history.size() > kept_history) {
      slot.history.erase(slot.history.begin(), slot.history.end() - static_cast<std::ptrdiff_t>(kept_history));
    }
  }

  /// Every slot as the model says: allocated ones hold the last N-1 committed tokens then the drafts.
  void check_cache() {
    std::size_t free_count = 0;
    for (std::size_t index = 0; index < slots_.size(); ++index) {
      const auto slot = static_cast<std::int32_t>(index);
      const slot_model& expected = slots_[index];
      if (!expected.allocated) {
        ++free_count;
        expect(!library_accepts([&] { (void)cache_.committed(slot); }), "committed() of a free slot accepted");
        continue;
      }
      const std::size_t committed = std::min<std::size_t>(expected.history.size(), static_cast<std::size_t>(cache_.lookback()));
      std::vector<token> window(expected.history.end() - static_cast<std::ptrdiff_t>(committed), expected.history.end());
      window.insert(window.end(), expected.pending.begin(), expected.pending.end());
      expect(cache_.committed(slot) == static_cast<std::int32_t>(committed) &&
                 cache_.pending(slot) == static_cast<std::int32_t>(expected.pending.size()) && cache_.window(slot) == window,
             "slot " + std::to_string(slot) + " holds other tokens than the model (" + std::to_string(cache_.committed(slot)) +
                 " committed, " + std::to_string(cache_.pending(slot)) + " pending; expected " +
                 std::to_string(committed) + " and " + std::to_string(expected.pending.size()) + ")");
    }
    expect(cache_.free_slot_count() == free_count, "free_slot_count() differs from the model");
  }

  /// An accepted call must be one the model accepts, and the other way round.
  void expect_outcome(bool accepted, bool valid, const char* operation) {
    if (trace_) {
      std::fprintf(stderr, "%s: %s (model: %s)\n", operation, accepted ? "accepted" : "refused",
                   valid ? "good" : "bad");
    }
    expect(accepted == valid, std::string(operation) + (accepted ? " accepted bad input" : " refused good input"));
  }

  /// NGEMB_FUZZ_TRACE=1 prints each call's slots and tokens (to read a crash input).
  void trace_call(const char* operation, const std::vector<std::int32_t>& slots, const batch* tokens) const {
    if (!trace_) {
      return;
    }
    std::string line = std::string(operation) + " slots [";
    for (const std::int32_t slot : slots) {
      line += " " + std::to_string(slot);
    }
    if (tokens != nullptr) {
      line += " ] values [";
      for (const token value : tokens->values) {
        line += " " + std::to_string(value);
      }
      line += " ] offsets [";
      for (const std::int64_t offset : tokens->offsets) {
        line += " " + std::to_string(offset);
      }
    }
    std::fprintf(stderr, "%s ]\n", line.c_str());
  }

  // ---- operations ------------------------------------------------------------------------------------------

  void allocate() {
    std::optional<std::int32_t> lowest;
    for (std::size_t slot = 0; slot < slots_.size() && !lowest; ++slot) {
      if (!slots_[slot].allocated) {
        lowest = static_cast<std::int32_t>(slot);
      }
    }
    std::int32_t slot = -1;
    expect_outcome(library_accepts([&] { slot = cache_.allocate(); }), lowest.has_value(), "allocate");
    if (lowest) {
      expect(slot == *lowest, "allocate() returned slot " + std::to_string(slot) + ", not the lowest free slot " +
                                  std::to_string(*lowest));
      model(slot) = {true, {}, {}};
    }
  }

  void free_or_reset(bool free) {
    const std::int32_t slot = pick_slot();
    const bool valid = slots_ok({slot});
    trace_call(free ? "free" : "reset", {slot}, nullptr);
    expect_outcome(library_accepts([&] { free ? cache_.free(slot) : cache_.reset(slot); }), valid,
                   free ? "free" : "reset");
    if (valid) {
      model(slot) = {!free, {}, {}};
    }
  }

  void append() {
    const std::vector<std::int32_t> slots = pick_slots();
    const batch tokens = make_batch(slots.size());
    bool valid = slots_ok(slots) && tokens.count() == slots.size() && tokens.offsets_ok && tokens.tokens_ok;
    for (std::size_t b = 0; valid && b < slots.size(); ++b) {
      valid = model(slots[b]).pending.size() + tokens.sequences[b].size() <= static_cast<std::size_t>(cache_.max_draft());
    }
    const bool single = slots.size() == 1 && tokens.count() == 1 && tokens.offsets_ok && in_.ConsumeBool();
    trace_call(single ? "append (one slot)" : "append", slots, &tokens);
    expect_outcome(library_accepts([&] {
                     if (single) {
                       cache_.append(slots[0], ngemb::view<const token>(tokens.values));
                     } else {
                       cache_.append(ngemb::view<const std::int32_t>(slots), tokens.view());
                     }
                   }),
                   valid, "append");
    if (valid) {
      for (std::size_t b = 0; b < slots.size(); ++b) {
        auto& pending = model(slots[b]).pending;
        pending.insert(pending.end(), tokens.sequences[b].begin(), tokens.sequences[b].end());
      }
    }
  }

  void commit() {
    const std::vector<std::int32_t> slots = pick_slots();
    const bool slots_good = slots_ok(slots);
    std::vector<std::int32_t> accepted(slots.size());
    bool valid = slots_good;
    for (std::size_t b = 0; b < slots.size(); ++b) {
      const bool known = slots_good || slots_ok({slots[b]});
      const auto pending = known ? static_cast<std::int32_t>(model(slots[b]).pending.size()) : 0;
      accepted[b] = value_or_edge<std::int32_t>(in_, 0, pending, {-1, pending + 1, std::numeric_limits<std::int32_t>::max(),
                                                                  std::numeric_limits<std::int32_t>::min()});
      valid = valid && accepted[b] >= 0 && accepted[b] <= pending;
    }
    if (in_.ConsumeIntegralInRange<int>(0, 15) == 0) {
      in_.ConsumeBool() || accepted.empty() ? accepted.push_back(0) : accepted.pop_back();
      valid = false;
    }
    const bool single = slots.size() == 1 && accepted.size() == 1 && in_.ConsumeBool();
    trace_call("commit", slots, nullptr);
    expect_outcome(library_accepts([&] {
                     if (single) {
                       cache_.commit(slots[0], accepted[0]);
                     } else {
                       cache_.commit(ngemb::view<const std::int32_t>(slots), ngemb::view<const std::int32_t>(accepted));
                     }
                   }),
                   valid, "commit");
    if (valid) {
      for (std::size_t b = 0; b < slots.size(); ++b) {
        slot_model& slot = model(slots[b]);
        add_history(slot, std::vector<token>(slot.pending.begin(), slot.pending.begin() + accepted[b]));
        slot.pending.clear();
      }
    }
  }

  void advance() {
    const std::vector<std::int32_t> slots = pick_slots();
    const batch tokens = make_batch(slots.size());
    bool valid = slots_ok(slots) && tokens.count() == slots.size() && tokens.offsets_ok && tokens.tokens_ok;
    for (std::size_t b = 0; valid && b < slots.size(); ++b) {
      valid = model(slots[b]).pending.empty();
    }
    const bool single = slots.size() == 1 && tokens.count() == 1 && tokens.offsets_ok && in_.ConsumeBool();
    trace_call(single ? "advance (one slot)" : "advance", slots, &tokens);
    expect_outcome(library_accepts([&] {
                     if (single) {
                       cache_.advance(slots[0], ngemb::view<const token>(tokens.values));
                     } else {
                       cache_.advance(ngemb::view<const std::int32_t>(slots), tokens.view());
                     }
                   }),
                   valid, "advance");
    if (valid) {
      for (std::size_t b = 0; b < slots.size(); ++b) {
        add_history(model(slots[b]), tokens.sequences[b]);
      }
    }
  }

  /// The ids each sequence's new tokens must get, given what precedes them: by SPEC §2 here, and by the library's
  /// own plain hash_tokens over the whole sequences (every sequence a fresh stream).
  template <class Id>
  std::vector<std::uint64_t> expected_ids(const std::vector<std::vector<token>>& before, const batch& tokens,
                                          ngemb::id_layout layout) {
    const bool concatenated = layout == ngemb::id_layout::concatenated;
    std::vector<std::uint64_t> spec;
    std::vector<token> whole_values;
    std::vector<std::int64_t> whole_offsets{0};
    std::vector<std::size_t> firsts;
    for (std::size_t s = 0; s < tokens.sequences.size(); ++s) {
      std::vector<token> whole = before[s];
      whole.insert(whole.end(), tokens.sequences[s].begin(), tokens.sequences[s].end());
      const std::vector<std::uint64_t> ids = spec_ids(config_, whole, before[s].size(), concatenated);
      spec.insert(spec.end(), ids.begin(), ids.end());
      firsts.push_back(whole_values.size() + before[s].size());
      whole_values.insert(whole_values.end(), whole.begin(), whole.end());
      whole_offsets.push_back(static_cast<std::int64_t>(whole_values.size()));
    }
    const auto tables = static_cast<std::size_t>(hasher_->num_tables());
    std::vector<Id> whole_ids(whole_values.size() * tables);
    expect(library_accepts([&] {
             ngemb::hash_tokens(policy_type{}, *hasher_,
                                ngemb::ragged_view<const token>(ngemb::view<const token>(whole_values),
                                                                ngemb::view<const std::int64_t>(whole_offsets)),
                                ngemb::view<Id>(whole_ids), layout);
           }),
           "hash_tokens refused the whole sequences");
    std::vector<std::uint64_t> library;
    for (std::size_t s = 0; s < tokens.sequences.size(); ++s) {
      for (std::size_t i = 0; i < tokens.sequences[s].size() * tables; ++i) {
        library.push_back(static_cast<std::uint64_t>(whole_ids[firsts[s] * tables + i]));
      }
    }
    expect(library == spec, "hash_tokens over whole sequences disagrees with SPEC §2 written out");
    return spec;
  }

  /// The id type's limit and the output size, as check_id_output judges them.
  template <class Id>
  [[nodiscard]] bool ids_ok(std::size_t values, std::size_t ids, ngemb::id_layout layout) const {
    std::int64_t largest = 0;
    for (int table = 0; table < hasher_->num_tables(); ++table) {
      largest = layout == ngemb::id_layout::concatenated ? largest + hasher_->rows(table)
                                                         : std::max(largest, hasher_->rows(table));
    }
    return ids == values * static_cast<std::size_t>(hasher_->num_tables()) &&
           largest - 1 <= static_cast<std::int64_t>(std::numeric_limits<Id>::max());
  }

  /// Runs `call(ids, layout, checks)` with checks (hash_tokens_async) or without (null: hash_tokens) and compares
  /// the outcome and the ids.
  template <class Id, class Call>
  void run_hash(const char* operation, bool valid, std::size_t values, Call&& call,
                const std::function<std::vector<std::uint64_t>()>& expected) {
    const auto layout = in_.ConsumeBool() ? ngemb::id_layout::per_table : ngemb::id_layout::concatenated;
    std::size_t size = values * static_cast<std::size_t>(hasher_->num_tables());
    if (in_.ConsumeIntegralInRange<int>(0, 15) == 0) {
      size = in_.ConsumeBool() ? size + 1 : (size == 0 ? 1 : size - 1);
    }
    valid = valid && ids_ok<Id>(values, size, layout);
    std::vector<Id> ids(size, Id{7});
    const bool deferred = in_.ConsumeBool();
    bool accepted = false;
    if (deferred) {
      ngemb::input_checks<policy_type> checks(policy_type{});
      accepted = library_accepts([&] { call(ngemb::view<Id>(ids), layout, &checks); }) &&
                 library_accepts([&] { checks.raise_if_failed(); });
    } else {
      accepted = library_accepts([&] { call(ngemb::view<Id>(ids), layout, nullptr); });
    }
    expect_outcome(accepted, valid, operation);
    if (valid) {
      const std::vector<std::uint64_t> wanted = expected();
      if (trace_) {
        std::string line = "ids";
        for (const Id id : ids) {
          line += " " + std::to_string(id);
        }
        line += "\nexpected";
        for (const std::uint64_t id : wanted) {
          line += " " + std::to_string(id);
        }
        std::fprintf(stderr, "%s%s\n", line.c_str(), deferred ? " (deferred checks)" : "");
      }
      expect(std::equal(ids.begin(), ids.end(), wanted.begin(), wanted.end(),
                        [](Id lhs, std::uint64_t rhs) { return static_cast<std::uint64_t>(lhs) == rhs; }),
             std::string(operation) + ": the ids differ from hashing the whole sequences at once");
    }
  }

  void hash_through_cache() {
    if (hasher_ == nullptr) {
      return;
    }
    const std::vector<std::int32_t> slots = pick_slots();
    const batch tokens = make_batch(slots.size());
    const bool valid = slots_ok(slots) && tokens.count() == slots.size() && tokens.offsets_ok && tokens.tokens_ok;
    trace_call("hash_tokens through the cache", slots, &tokens);
    const auto expected = [&]<class Id>(ngemb::id_layout layout) {
      std::vector<std::vector<token>> before;
      for (const std::int32_t slot : slots) {
        std::vector<token> whole = model(slot).history;
        whole.insert(whole.end(), model(slot).pending.begin(), model(slot).pending.end());
        before.push_back(std::move(whole));
      }
      return expected_ids<Id>(before, tokens, layout);
    };
    const auto run = [&]<class Id>() {
      ngemb::id_layout used{};
      run_hash<Id>(
          "hash_tokens through the cache", valid, tokens.values.size(),
          [&](ngemb::view<Id> ids, ngemb::id_layout layout, ngemb::input_checks<policy_type>* deferred) {
            used = layout;
            const ngemb::view<const std::int32_t> slot_view(slots);
            if (deferred != nullptr) {
              ngemb::hash_tokens_async(policy_type{}, *hasher_, cache_, slot_view, tokens.view(), ids, layout,
                                       *deferred);
            } else {
              ngemb::hash_tokens(policy_type{}, *hasher_, cache_, slot_view, tokens.view(), ids, layout);
            }
          },
          [&] { return expected.template operator()<Id>(used); });
    };
    in_.ConsumeBool() ? run.template operator()<std::uint32_t>() : run.template operator()<std::int64_t>();
  }

  void hash_with_context() {
    if (hasher_ == nullptr) {
      return;
    }
    const std::size_t sequences = in_.ConsumeIntegralInRange<std::size_t>(0, 3);
    const batch tokens = make_batch(sequences);
    const batch context = make_batch(in_.ConsumeIntegralInRange<int>(0, 15) == 0 ? sequences + 1 : sequences);
    const bool valid = tokens.offsets_ok && tokens.tokens_ok && context.offsets_ok && context.tokens_ok &&
                       context.count() == tokens.count();
    trace_call("hash_tokens with context: tokens", {}, &tokens);
    trace_call("hash_tokens with context: context", {}, &context);
    const auto run = [&]<class Id>() {
      ngemb::id_layout used{};
      run_hash<Id>(
          "hash_tokens with context", valid, tokens.values.size(),
          [&](ngemb::view<Id> ids, ngemb::id_layout layout, ngemb::input_checks<policy_type>* deferred) {
            used = layout;
            if (deferred != nullptr) {
              ngemb::hash_tokens_async(policy_type{}, *hasher_, tokens.view(), context.view(), ids, layout, *deferred);
            } else {
              ngemb::hash_tokens(policy_type{}, *hasher_, tokens.view(), context.view(), ids, layout);
            }
          },
          [&] { return expected_ids<Id>(context.sequences, tokens, used); });
    };
    in_.ConsumeBool() ? run.template operator()<std::uint32_t>() : run.template operator()<std::int64_t>();
  }

  FuzzedDataProvider& in_;
  const ngemb::ngram_config& config_;
  cache_type& cache_;
  const ngemb::longcat_hash* hasher_;
  std::vector<slot_model> slots_;
  bool trace_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const ngemb::ngram_config config = decode_config(in);
  const std::size_t max_slots = value_or_edge<std::size_t>(
      in, 0, 4, {cache_type::slot_limit + 1, std::size_t{1} << 31, std::size_t{1} << 40,
                 std::numeric_limits<std::size_t>::max()});
  const int max_draft = value_or_edge<int>(in, 0, 4, {-1, cache_type::draft_limit, cache_type::draft_limit + 1,
                                                      std::numeric_limits<int>::max(), std::numeric_limits<int>::min()});

  const bool config_ok = library_accepts([&] { config.validate(); });
  std::optional<ngemb::longcat_hash> hasher;
  const bool hasher_ok = library_accepts([&] { hasher.emplace(config); });
  expect(config_ok || !hasher_ok, "longcat_hash accepted a config that does not validate");

  std::optional<cache_type> cache;
  const bool cache_ok = library_accepts([&] { cache.emplace(policy_type{}, config, max_slots, max_draft); });
  const bool arguments_ok = config_ok && max_draft >= 0 && max_draft <= cache_type::draft_limit &&
                            max_slots <= cache_type::slot_limit;
  expect(cache_ok == arguments_ok, std::string("ngram_cache(max_slots = ") + std::to_string(max_slots) +
                                       ", max_draft = " + std::to_string(max_draft) + ") was " +
                                       (cache_ok ? "accepted" : "refused"));
  if (!cache_ok) {
    return 0;
  }
  expect(cache->max_slots() == max_slots && cache->max_draft() == max_draft && cache->lookback() == config.lookback(),
         "the cache reports other sizes than it was built with");
  if (std::getenv("NGEMB_FUZZ_TRACE") != nullptr) {
    std::fprintf(stderr, "V=%lld N=%d K=%d m_base=%lld ratio=%g eos=%lld ignored=%zu slots=%zu draft=%d\n",
                 static_cast<long long>(config.vocab_size), config.max_order, config.splits,
                 static_cast<long long>(config.m_base.value_or(-1)), config.ratio.value_or(0.0),
                 static_cast<long long>(config.eos_token.value_or(-1)), config.ignored_tokens.size(), max_slots,
                 max_draft);
  }
  fuzz_session(in, config, *cache, hasher_ok ? &*hasher : nullptr).run();
  return 0;
}
