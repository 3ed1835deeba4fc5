#pragma once
// JSON from files (config.json, safetensors headers, shard indexes) is untrusted: one parse entry point that caps
// the nesting depth and turns every nlohmann exception into format_error naming the file, and descriptions of
// values that never print a container whole (a recursive dump of a 100k-deep array overflows the stack).
#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "ngemb/core/error.hpp"

namespace ngemb::detail {

/// Deeper than any checkpoint file needs (config.json nests 3 levels); deep enough to stop a crafted file early.
inline constexpr int max_json_depth = 64;
/// The most characters of a file's text an error message quotes.
inline constexpr std::size_t max_quoted_chars = 80;

/// `text` cut to max_quoted_chars, control and non-ASCII bytes escaped, so a message stays one printable line.
inline std::string clipped_text(std::string_view text) {
  std::string result;
  for (std::size_t i = 0; i < text.size() && i < max_quoted_chars; ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte >= 0x20 && byte < 0x7f) {
      result += static_cast<char>(byte);
    } else {
      static constexpr char hex[] = "0123456789abcdef";
      result += "\\x";
      result += hex[byte >> 4];
      result += hex[byte & 0xf];
    }
  }
  if (text.size() > max_quoted_chars) {
    result += "...";
  }
  return result;
}

/// What a value is, for messages: scalars with their (clipped) text, short flat arrays with their elements,
/// anything else by type and size only.
template <class Json>
std::string describe_json(const Json& value) {
  if (value.is_object()) {
    return "an object of " + std::to_string(value.size()) + " entries";
  }
  if (value.is_array()) {
    const bool short_and_flat = value.size() <= 8 && std::none_of(value.begin(), value.end(), [](const Json& element) {
                                  return element.is_structured();
                                });
    return short_and_flat ? clipped_text(value.dump()) : "an array of " + std::to_string(value.size()) + " elements";
  }
  if (value.is_string()) {
    return "\"" + clipped_text(value.template get_ref<const typename Json::string_t&>()) + "\"";
  }
  // Numbers, booleans and null print in a few characters, and dump cannot throw on them.
  return clipped_text(value.dump());
}

/// Parses `text`; format_error naming `source` for malformed JSON, nesting deeper than max_json_depth, or any other
/// failure of the parser (a number too large for a double, invalid UTF-8 in a string).
inline nlohmann::json parse_json(std::string_view text, const std::string& source) {
  const auto limit_depth = [&](int depth, nlohmann::json::parse_event_t /*event*/, nlohmann::json& /*parsed*/) {
    if (depth > max_json_depth) {
      throw format_error(source + ": JSON nests deeper than " + std::to_string(max_json_depth) + " levels");
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), limit_depth);
  } catch (const nlohmann::json::exception& failure) {
    throw format_error(source + ": not valid JSON: " + clipped_text(failure.what()));
  }
}

}  // namespace ngemb::detail
