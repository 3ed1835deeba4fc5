#pragma once
// Reads the n-gram fields of a Hugging Face `config.json` (SPEC §1) into an ngram_config.
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include <nlohmann/json.hpp>

#include "ngemb/core/checked.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/io/detail/json_input.hpp"
#include "ngemb/io/detail/mapped_file.hpp"

namespace ngemb {

namespace detail {

inline const nlohmann::json& require_field(const nlohmann::json& root, const char* field, const std::string& source) {
  const auto found = root.find(field);
  if (found == root.end() || found->is_null()) {
    throw format_error(source + ": missing field \"" + field + "\"");
  }
  return *found;
}

/// An integer field as T: format_error for a non-integer (a float such as 3.0 included: a size written as a float
/// is a broken writer), invalid_argument naming the field for a value T cannot hold (never a silent truncation;
/// unsigned values above INT64_MAX are read as unsigned, not wrapped). Sane bounds are the config's validate().
template <std::integral T>
T integer_field(const nlohmann::json& value, const char* field, const std::string& source) {
  if (!value.is_number_integer()) {
    throw format_error(source + ": field \"" + field + "\" must be an integer, got " + describe_json(value));
  }
  const std::string what = source + ": " + field;
  return value.is_number_unsigned() ? checked_cast<T>(value.get<std::uint64_t>(), what)
                                    : checked_cast<T>(value.get<std::int64_t>(), what);
}

}  // namespace detail

/// Parses config.json text. `source` names the file in error messages. Throws format_error for malformed JSON,
/// missing fields or wrong types, and invalid_argument (from validate) for values out of range.
inline ngram_config parse_ngram_config(std::string_view json_text, const std::string& source = "config.json") {
  const nlohmann::json root = detail::parse_json(json_text, source);
  if (!root.is_object()) {
    throw format_error(source + ": the top level must be a JSON object");
  }
  using detail::integer_field;
  using detail::require_field;
  ngram_config config;
  config.vocab_size = integer_field<std::int64_t>(require_field(root, "vocab_size", source), "vocab_size", source);
  config.hidden_size = integer_field<std::int64_t>(require_field(root, "hidden_size", source), "hidden_size", source);
  config.max_order = integer_field<int>(require_field(root, "emb_neighbor_num", source), "emb_neighbor_num", source);
  config.splits = integer_field<int>(require_field(root, "emb_split_num", source), "emb_split_num", source);
  // The official config gives the ratio; some engines give m_base = r*V directly (SPEC §1). Exactly one.
  const auto ratio = root.find("ngram_vocab_size_ratio");
  const auto m_base = root.find("m_base");
  const bool has_ratio = ratio != root.end() && !ratio->is_null();
  const bool has_m_base = m_base != root.end() && !m_base->is_null();
  if (has_ratio == has_m_base) {
    throw format_error(source + (has_ratio ? ": both \"ngram_vocab_size_ratio\" and \"m_base\" are given; give one"
                                           : ": missing field \"ngram_vocab_size_ratio\" (or \"m_base\")"));
  }
  if (has_ratio) {
    if (!ratio->is_number()) {
      throw format_error(source + ": field \"ngram_vocab_size_ratio\" must be a number, got " +
                         detail::describe_json(*ratio));
    }
    config.ratio = ratio->get<double>();
  } else {
    config.m_base = integer_field<std::int64_t>(*m_base, "m_base", source);
  }
  if (const auto eos = root.find("eos_token_id"); eos != root.end() && !eos->is_null()) {
    if (eos->is_array()) {  // some HF configs list several EOS ids; the hash has one segment token
      if (eos->size() != 1) {
        throw format_error(source + ": eos_token_id lists " + std::to_string(eos->size()) +
                           " ids; the n-gram hash needs exactly one");
      }
      config.eos_token = integer_field<std::int64_t>((*eos)[0], "eos_token_id", source);
    } else {
      config.eos_token = integer_field<std::int64_t>(*eos, "eos_token_id", source);
    }
  }
  config.validate();
  return config;
}

namespace detail {

struct config_file {
  std::filesystem::path file;
  std::string text;
};

/// config.json holds a few hundred bytes; more than this is not a config.
inline constexpr std::size_t max_config_bytes = std::size_t{16} << 20;

/// The text of `path` (a config.json file, or a checkpoint folder holding one); io_error naming the file and the
/// reason when it cannot be read or is not a regular file.
inline config_file read_config_file(const std::filesystem::path& path) {
  std::error_code unreadable;  // a failed probe reads as "not a folder"; opening the file then says why
  const std::filesystem::path file = std::filesystem::is_directory(path, unreadable) ? path / "config.json" : path;
  return {file, read_text_file(file, max_config_bytes)};
}

}  // namespace detail

/// Reads `path` (a config.json file, or a checkpoint folder holding one).
inline ngram_config read_ngram_config(const std::filesystem::path& path) {
  const detail::config_file config = detail::read_config_file(path);
  return parse_ngram_config(config.text, config.file.string());
}

}  // namespace ngemb
