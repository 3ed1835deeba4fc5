#pragma once
// The byte-level tokenizer of the tiny LongCat-Flash-Lite models: byte b is token b, then three special tokens
// (BOS, EOS, PAD), 259 in all. And the display of what a byte model writes, which need not be valid UTF-8:
// to_display_utf8 (a whole text) and utf8_stream (bytes pushed as tokens arrive) replace each maximal invalid subpart
// by U+FFFD, as the Unicode standard (§3.9, "U+FFFD Substitution of Maximal Subparts") and WHATWG's decoder do.
//
//   const auto ids = ngemb::byte_tokenizer::encode("héllo");      // {256, 104, 195, 169, 108, 108, 111}
//   ngemb::utf8_stream stream;
//   for (const auto id : generated) std::fputs(stream.push(ngemb::byte_tokenizer::decode({&id, 1})).c_str(), out);
//   std::fputs(stream.finish().c_str(), out);
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"

namespace ngemb {

/// Bytes as token ids: byte b -> id b, and BOS, EOS and PAD after the 256 bytes.
struct byte_tokenizer {
  static constexpr std::int32_t bos = 256;
  static constexpr std::int32_t eos = 257;
  static constexpr std::int32_t pad = 258;
  static constexpr std::int32_t vocab_size = 259;

  /// One id per byte of `text`, after BOS when `add_bos`.
  [[nodiscard]] static std::vector<std::int32_t> encode(std::string_view text, bool add_bos = true) {
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() + (add_bos ? 1 : 0));
    if (add_bos) {
      ids.push_back(bos);
    }
    for (const char character : text) {
      ids.push_back(static_cast<unsigned char>(character));
    }
    return ids;
  }

  /// The exact bytes of `ids`, special tokens skipped; token_out_of_range (position: the index) for an id outside
  /// [0, vocab_size).
  [[nodiscard]] static std::string decode(view<const std::int32_t> ids) {
    std::string bytes;
    bytes.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::int32_t id = ids[i];
      if (id < 0 || id >= vocab_size) {
        throw token_out_of_range("byte_tokenizer::decode: id " + std::to_string(id) + " at index " +
                                     std::to_string(i) + " is outside [0, " + std::to_string(vocab_size) + ")",
                                 0, static_cast<std::int64_t>(i), id);
      }
      if (id < bos) {
        bytes.push_back(static_cast<char>(static_cast<unsigned char>(id)));
      }
    }
    return bytes;
  }
};

/// Bytes in, displayable UTF-8 out, as the bytes arrive: each push returns the text complete so far (valid UTF-8
/// as is, each maximal invalid subpart as U+FFFD) and holds back an unfinished sequence (at most 3 bytes) until the
/// bytes that complete or break it come. finish() ends the text. The output concatenated over any split of the
/// input equals to_display_utf8 of the whole. WHATWG's UTF-8 decoder: the bounds on each continuation byte reject
/// overlongs (E0, F0), surrogates (ED) and code points above U+10FFFF (F4) at the first byte that proves them.
class utf8_stream {
 public:
  /// The displayable text that `bytes` complete.
  [[nodiscard]] std::string push(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size() + pending_.size());
    for (const char character : bytes) {
      take(static_cast<unsigned char>(character), out);
    }
    return out;
  }

  /// U+FFFD for a sequence the text ended inside, or nothing; the stream then starts afresh.
  [[nodiscard]] std::string finish() {
    if (needed_ == 0) {
      return {};
    }
    reset();
    return std::string(replacement);
  }

 private:
  static constexpr std::string_view replacement = "\xEF\xBF\xBD";  // U+FFFD

  void take(unsigned char byte, std::string& out) {
    if (needed_ != 0) {
      if (byte >= lower_ && byte <= upper_) {
        pending_.push_back(static_cast<char>(byte));
        lower_ = 0x80;
        upper_ = 0xBF;
        if (--needed_ == 0) {
          out += pending_;
          pending_.clear();
        }
        return;
      }
      // The sequence so far is a maximal subpart: one U+FFFD, then this byte starts afresh.
      reset();
      out += replacement;
    }
    if (byte < 0x80) {
      out.push_back(static_cast<char>(byte));
      return;
    }
    if (byte >= 0xC2 && byte <= 0xDF) {
      needed_ = 1;
    } else if (byte >= 0xE0 && byte <= 0xEF) {
      needed_ = 2;
      lower_ = byte == 0xE0 ? 0xA0 : 0x80;  // E0 80..9F would be overlong
      upper_ = byte == 0xED ? 0x9F : 0xBF;  // ED A0..BF would be a surrogate
    } else if (byte >= 0xF0 && byte <= 0xF4) {
      needed_ = 3;
      lower_ = byte == 0xF0 ? 0x90 : 0x80;  // F0 80..8F would be overlong
      upper_ = byte == 0xF4 ? 0x8F : 0xBF;  // F4 90.. would be above U+10FFFF
    } else {  // a stray continuation byte, C0/C1 (always overlong) or F5..FF: never in UTF-8
      out += replacement;
      return;
    }
    pending_.push_back(static_cast<char>(byte));
  }

  void reset() {
    pending_.clear();
    needed_ = 0;
    lower_ = 0x80;
    upper_ = 0xBF;
  }

  std::string pending_;     ///< the unfinished sequence's bytes
  int needed_ = 0;          ///< continuation bytes it still needs
  unsigned lower_ = 0x80;   ///< the range the next continuation byte must fall in
  unsigned upper_ = 0xBF;
};

/// `bytes` as displayable UTF-8: valid UTF-8 as is, each maximal invalid subpart (overlong, surrogate, above
/// U+10FFFF, truncated, a stray continuation byte) as U+FFFD.
[[nodiscard]] inline std::string to_display_utf8(std::string_view bytes) {
  utf8_stream stream;
  std::string text = stream.push(bytes);
  text += stream.finish();
  return text;
}

}  // namespace ngemb
