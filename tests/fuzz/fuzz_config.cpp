// libFuzzer harness: the config.json readers, parse_ngram_config (io/hf_config.hpp) and parse_model_config
// (model/config_json.hpp). The input is the config text. An accepted config must validate, hold exactly the
// integers the text gives (nothing truncated or wrapped), agree between the two readers (when it has an n-gram
// embedding), and read back the same from to_json.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_common.hpp"
#include "ngemb/io/hf_config.hpp"
#include "ngemb/model/config_json.hpp"

namespace {

using ngemb_fuzz::expect;
using ngemb_fuzz::library_accepts;

/// The field's integer exactly as the text gives it; nullopt when absent, null or not an integer.
std::optional<std::int64_t> text_integer(const nlohmann::json& root, const char* field, bool& out_of_range) {
  const auto found = root.find(field);
  if (found == root.end() || !found->is_number_integer()) {
    return std::nullopt;
  }
  if (found->is_number_unsigned() && found->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
    out_of_range = true;
    return std::nullopt;
  }
  return found->get<std::int64_t>();
}

/// An accepted field that the text gives as an integer must hold that integer.
void expect_field(const nlohmann::json& root, const char* field, std::int64_t parsed) {
  bool out_of_range = false;
  const auto given = text_integer(root, field, out_of_range);
  expect(!out_of_range, std::string("\"") + field + "\" above 2^63-1 was accepted as " + std::to_string(parsed));
  if (given) {
    expect(*given == parsed, std::string("\"") + field + "\" = " + std::to_string(*given) + " was read as " +
                                 std::to_string(parsed));
  }
}

bool same(const ngemb::ngram_config& lhs, const ngemb::ngram_config& rhs) {
  return lhs.vocab_size == rhs.vocab_size && lhs.hidden_size == rhs.hidden_size && lhs.max_order == rhs.max_order &&
         lhs.splits == rhs.splits && lhs.ratio == rhs.ratio && lhs.m_base == rhs.m_base &&
         lhs.eos_token == rhs.eos_token && lhs.ignored_tokens == rhs.ignored_tokens;
}

nlohmann::json parse_accepted(std::string_view text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception& failure) {
    ngemb_fuzz::fail(std::string("a config was accepted from text that does not parse: ") + failure.what());
  }
}

void check_ngram(const nlohmann::json& root, const ngemb::ngram_config& config) {
  expect(library_accepts([&] { config.validate(); }), "an accepted ngram_config does not validate");
  expect_field(root, "vocab_size", config.vocab_size);
  expect_field(root, "hidden_size", config.hidden_size);
  expect_field(root, "emb_neighbor_num", config.max_order);
  expect_field(root, "emb_split_num", config.splits);
  if (config.m_base) {
    expect_field(root, "m_base", *config.m_base);
  }
  if (config.eos_token) {
    const auto eos = root.find("eos_token_id");
    expect(eos != root.end(), "eos_token set without eos_token_id");
    if (eos->is_array()) {
      expect(eos->size() == 1, "an eos_token_id list of several ids was accepted");
      bool out_of_range = false;
      const auto given = text_integer(nlohmann::json{{"id", (*eos)[0]}}, "id", out_of_range);
      expect(!out_of_range && given == config.eos_token, "eos_token_id [x] was read as another id");
    } else {
      expect_field(root, "eos_token_id", *config.eos_token);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  ngemb::ngram_config ngram;
  const bool ngram_accepted = library_accepts([&] { ngram = ngemb::parse_ngram_config(text); });
  ngemb::model_config model;
  const bool model_accepted = library_accepts([&] { model = ngemb::parse_model_config(text, "fuzz.json"); });
  if (ngram_accepted) {
    check_ngram(parse_accepted(text), ngram);
  }
  if (!model_accepted) {
    return 0;
  }
  const nlohmann::json root = parse_accepted(text);
  // A plain-embedding model (model_type "longcat_flash") needs no n-gram fields; every other one reads them the
  // same way parse_ngram_config does.
  if (model.has_ngram_embedding()) {
    expect(ngram_accepted, "parse_model_config accepted a text that parse_ngram_config refuses");
    expect(same(model.ngram, ngram), "parse_model_config's n-gram part differs from parse_ngram_config");
  }
  expect(library_accepts([&] { model.validate(); }), "an accepted model_config does not validate");
  for (const char* field : {"num_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "ffn_hidden_size",
                            "expert_ffn_hidden_size", "n_routed_experts", "zero_expert_num", "moe_topk",
                            "max_position_embeddings"}) {
    const std::string name(field);
    const std::int64_t parsed = name == "num_layers"                ? model.num_layers
                                : name == "num_attention_heads"     ? model.num_attention_heads
                                : name == "num_key_value_heads"     ? model.num_key_value_heads
                                : name == "head_dim"                ? model.head_dim
                                : name == "ffn_hidden_size"         ? model.ffn_hidden_size
                                : name == "expert_ffn_hidden_size"  ? model.expert_ffn_hidden_size
                                : name == "n_routed_experts"        ? model.n_routed_experts
                                : name == "zero_expert_num"         ? model.zero_expert_num
                                : name == "moe_topk"                ? model.moe_topk
                                                                    : model.max_position_embeddings;
    expect_field(root, field, parsed);
  }
  // What the library writes it must read back unchanged.
  std::string written;
  ngemb::model_config reread;
  expect(library_accepts([&] {
           written = ngemb::to_json(model);
           reread = ngemb::parse_model_config(written, "to_json");
         }),
         "parse_model_config refuses what to_json wrote for an accepted config");
  expect(reread == model, "to_json + parse_model_config changed the config:\n" + written);
  return 0;
}
