// The byte tokenizer (encode/decode round trips, BOS and special tokens, bad ids) and the display of possibly
// invalid UTF-8: to_display_utf8 on valid text and on a table of invalid sequences (the Unicode standard's maximal
// subparts), and utf8_stream giving the same text for every split of the input.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "ngemb/text/byte_tokenizer.hpp"

namespace {

using ngemb::byte_tokenizer;
using namespace std::string_literals;

const std::string fffd = "\xEF\xBF\xBD";

std::string repeat_fffd(int count) {
  std::string text;
  for (int i = 0; i < count; ++i) {
    text += fffd;
  }
  return text;
}

struct display_case {
  std::string bytes;
  std::string expected;
};

/// Invalid input and its display: one U+FFFD per maximal subpart (the longest prefix of a well-formed sequence), or
/// per byte that starts none.
std::vector<display_case> invalid_cases() {
  return {
      {"\x80", fffd},                                         // a lone continuation byte
      {"\xBF", fffd},
      {"a\x80\x80z", "a\xEF\xBF\xBD\xEF\xBF\xBDz"},  // each stray continuation byte on its own
      {"\xC0\xAF", repeat_fffd(2)},                           // C0, C1: every sequence they start is overlong
      {"\xC1\xBF", repeat_fffd(2)},
      {"\xE0\x80\xAF", repeat_fffd(3)},                       // overlong 3-byte: E0 80 is no prefix
      {"\xF0\x80\x80\x80", repeat_fffd(4)},                   // overlong 4-byte
      {"\xED\xA0\x80", repeat_fffd(3)},                       // a surrogate (U+D800)
      {"\xED\xBF\xBF", repeat_fffd(3)},                       // a surrogate (U+DFFF)
      {"\xF4\x90\x80\x80", repeat_fffd(4)},                   // U+110000
      {"\xF5\x80\x80\x80", repeat_fffd(4)},                   // F5..FF never start a sequence
      {"\xFF\xFE", repeat_fffd(2)},
      {"\xC2", fffd},                                          // truncated at the end: one U+FFFD per sequence
      {"\xE2\x82", fffd},
      {"\xF0\x9F\x98", fffd},
      {"\xC2" "A", fffd + "A"},                                // truncated before an ASCII byte
      {"\xF0\x9F\x98" "A", fffd + "A"},
      {"\xE2\x82\xE2\x82\xAC", fffd + "\xE2\x82\xAC"},          // truncated before a complete sequence
      {"\xF0\x9F\x98\x80\x80", "\xF0\x9F\x98\x80"s + fffd},      // one continuation byte too many
      {"\xE1\x80\xC2", repeat_fffd(2)},
      // The standard's example (Unicode 15, §3.9, U+FFFD Substitution of Maximal Subparts).
      {"\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64",
       "a"s + fffd + fffd + fffd + "b" + fffd + "c" + fffd + fffd + "d"},
      {"\x00\x7F"s, "\x00\x7F"s},                              // NUL and DEL are valid UTF-8
  };
}

/// Valid UTF-8, shown as is, including the code points next to the ranges the decoder rejects.
std::vector<std::string> valid_texts() {
  return {"",
          "plain ASCII",
          "h\xC3\xA9llo w\xC3\xB6rld",                        // 2-byte
          "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",             // 3-byte
          "\xF0\x9F\x98\x80 smile",                           // 4-byte
          "\xC2\x80\xDF\xBF",                                 // U+0080, U+07FF
          "\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF",  // U+0800, U+D7FF, U+E000, U+FFFF
          "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF"};                // U+10000, U+10FFFF
}

/// utf8_stream over `bytes` cut at `cuts` (increasing positions), then finished.
std::string streamed(std::string_view bytes, const std::vector<std::size_t>& cuts) {
  ngemb::utf8_stream stream;
  std::string text;
  std::size_t begin = 0;
  for (const std::size_t cut : cuts) {
    text += stream.push(bytes.substr(begin, cut - begin));
    begin = cut;
  }
  text += stream.push(bytes.substr(begin));
  return text + stream.finish();
}

/// Random bytes that often form (and break) multi-byte sequences: ASCII, lead bytes, continuation bytes, others.
std::string random_bytes(std::mt19937& engine, std::size_t length) {
  std::uniform_int_distribution<int> kind(0, 5);
  std::uniform_int_distribution<int> any(0, 255);
  std::uniform_int_distribution<int> continuation(0x80, 0xBF);
  std::uniform_int_distribution<int> lead(0xC0, 0xF7);
  std::string bytes;
  while (bytes.size() < length) {
    const int which = kind(engine);
    const int byte = which == 0 ? any(engine) : which <= 2 ? continuation(engine) : which <= 4 ? lead(engine) : 'a';
    bytes.push_back(static_cast<char>(byte));
  }
  return bytes;
}

}  // namespace

TEST_CASE("byte tokenizer: ids, BOS and round trips") {
  static_assert(byte_tokenizer::bos == 256 && byte_tokenizer::eos == 257 && byte_tokenizer::pad == 258 &&
                byte_tokenizer::vocab_size == 259);
  CHECK(byte_tokenizer::encode("A\xFF") == std::vector<std::int32_t>{256, 65, 255});
  CHECK(byte_tokenizer::encode("A\xFF", false) == std::vector<std::int32_t>{65, 255});
  CHECK(byte_tokenizer::encode("") == std::vector<std::int32_t>{256});
  CHECK(byte_tokenizer::encode("", false).empty());
  // Special tokens anywhere are skipped; every byte value, NUL included, comes back.
  const std::vector<std::int32_t> ids{256, 0, 104, 257, 255, 258, 105};
  CHECK(byte_tokenizer::decode(ids) == "\x00h\xFFi"s);

  std::mt19937 engine(12);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<std::size_t> length(0, 300);
  for (int round = 0; round < 200; ++round) {
    std::string text(length(engine), '\0');
    for (char& character : text) {
      character = static_cast<char>(byte(engine));
    }
    const auto encoded = byte_tokenizer::encode(text);
    REQUIRE(encoded.size() == text.size() + 1);
    CHECK(encoded[0] == byte_tokenizer::bos);
    CHECK(byte_tokenizer::decode(encoded) == text);
    CHECK(byte_tokenizer::decode(byte_tokenizer::encode(text, false)) == text);
  }
}

TEST_CASE("byte tokenizer: the shipped model's validation text round trips and is valid UTF-8") {
  std::ifstream file(std::filesystem::path(NGEMB_REFERENCE_DIR) / "tiny_longcat" / "validation.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  REQUIRE(text.size() > 100000);
  const auto encoded = byte_tokenizer::encode(text);
  REQUIRE(encoded.size() == text.size() + 1);
  CHECK(byte_tokenizer::decode(encoded) == text);
  CHECK(ngemb::to_display_utf8(text) == text);  // Python sources: nothing to replace
}

TEST_CASE("byte tokenizer: an id outside [0, 259) is an error naming it and its index") {
  const std::vector<std::int32_t> too_large{256, 65, 259};
  CHECK_THROWS_WITH_AS(static_cast<void>(byte_tokenizer::decode(too_large)),
                       "byte_tokenizer::decode: id 259 at index 2 is outside [0, 259)", ngemb::token_out_of_range);
  const std::vector<std::int32_t> negative{-1};
  try {
    static_cast<void>(byte_tokenizer::decode(negative));
    FAIL("no error for id -1");
  } catch (const ngemb::token_out_of_range& problem) {
    CHECK(problem.position() == 0);
    CHECK(problem.value() == -1);
    CHECK(std::string(problem.what()).find("id -1 at index 0") != std::string::npos);
  }
}

TEST_CASE("display: valid UTF-8 is kept, each maximal invalid subpart is one U+FFFD") {
  for (const std::string& text : valid_texts()) {
    CAPTURE(text);
    CHECK(ngemb::to_display_utf8(text) == text);
  }
  for (const display_case& entry : invalid_cases()) {
    CAPTURE(entry.bytes);
    CHECK(ngemb::to_display_utf8(entry.bytes) == entry.expected);
  }
}

TEST_CASE("display: utf8_stream equals to_display_utf8 for every split") {
  std::vector<std::string> inputs = valid_texts();
  for (const display_case& entry : invalid_cases()) {
    inputs.push_back(entry.bytes);
  }
  for (const std::string& bytes : inputs) {
    CAPTURE(bytes);
    const std::string whole = ngemb::to_display_utf8(bytes);
    for (std::size_t first = 0; first <= bytes.size(); ++first) {
      CHECK(streamed(bytes, {first}) == whole);
      for (std::size_t second = first; second <= bytes.size(); ++second) {
        CHECK(streamed(bytes, {first, second}) == whole);
      }
    }
    // Byte by byte, as a byte model emits them.
    std::vector<std::size_t> every;
    for (std::size_t cut = 1; cut < bytes.size(); ++cut) {
      every.push_back(cut);
    }
    CHECK(streamed(bytes, every) == whole);
  }

  std::mt19937 engine(2026);
  std::uniform_int_distribution<std::size_t> length(0, 64);
  for (int round = 0; round < 2000; ++round) {
    const std::string bytes = random_bytes(engine, length(engine));
    CAPTURE(bytes);
    const std::string whole = ngemb::to_display_utf8(bytes);
    CHECK(ngemb::to_display_utf8(whole) == whole);  // the display is valid UTF-8
    std::uniform_int_distribution<std::size_t> position(0, bytes.size());
    std::vector<std::size_t> cuts(std::uniform_int_distribution<std::size_t>(0, 6)(engine));
    for (std::size_t& cut : cuts) {
      cut = position(engine);
    }
    std::sort(cuts.begin(), cuts.end());
    CHECK(streamed(bytes, cuts) == whole);
  }
}

TEST_CASE("display: a finished stream starts afresh") {
  ngemb::utf8_stream stream;
  CHECK(stream.push("a\xE2\x82") == "a");
  CHECK(stream.finish() == fffd);
  CHECK(stream.finish().empty());
  CHECK(stream.push("\xAC") == fffd);  // not the end of the sequence finish() dropped
  CHECK(stream.push("\xE2\x82").empty());
  CHECK(stream.push("\xAC") == "\xE2\x82\xAC");
}
