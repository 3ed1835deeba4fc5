#pragma once
// What the example CLIs share: token-id lines from stdin (an optional `|` splits context from current tokens),
// batched into ragged batches, buffered output, and bad input reported with the input line (exit code 2).
#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"

namespace ngemb_examples {

constexpr int exit_bad_input = 2;

/// A problem in the arguments or the input, reported on stderr with exit code 2.
class bad_input : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// `text` in double quotes, safe to print: printable ASCII as is, `"` and `\` escaped, every other byte (NUL, control
/// characters, other encodings) as \xHH, and at most `limit` bytes of the text (then "..." and its full length).
inline std::string quoted(std::string_view text, std::size_t limit = 64) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string shown = "\"";
  for (const char character : text.substr(0, limit)) {
    const auto byte = static_cast<unsigned char>(character);
    if (byte == '"' || byte == '\\') {
      shown += '\\';
      shown += character;
    } else if (byte >= 0x20 && byte < 0x7f) {
      shown += character;
    } else {
      shown += "\\x";
      shown += hex[byte >> 4];
      shown += hex[byte & 0xf];
    }
  }
  shown += text.size() > limit ? "...\"" : "\"";
  if (text.size() > limit) {
    shown += " (" + std::to_string(text.size()) + " bytes)";
  }
  return shown;
}

template <class Number>
std::optional<Number> parse_number(std::string_view text) {
  Number value{};
  const auto [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (status != std::errc{} || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

/// Walks `--option value` arguments: --help or -h sets `help`; an option outside `known` or without a value is
/// bad_input; `take(option, value)` handles the others.
template <class Take>
void parse_arguments(int argc, char** argv, std::initializer_list<std::string_view> known, bool& help, Take&& take) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view option = argv[i];
    if (option == "--help" || option == "-h") {
      help = true;
      continue;
    }
    if (std::find(known.begin(), known.end(), option) == known.end()) {
      throw bad_input((option.starts_with("-") ? "unknown option " : "unexpected argument ") + quoted(option));
    }
    if (i + 1 == argc) {
      throw bad_input(std::string(option) + " needs a value");
    }
    take(option, std::string_view(argv[++i]));
  }
}

/// stdin line by line through a large buffer (a line may span buffer refills).
class line_reader {
 public:
  explicit line_reader(std::FILE* stream) : stream_(stream), buffer_(1 << 20) {}

  /// The next line without its '\n'; false at the end of the input. The view lives until the next call.
  bool next(std::string_view& line) {
    for (;;) {
      const auto newline = std::find(buffer_.begin() + static_cast<std::ptrdiff_t>(begin_),
                                     buffer_.begin() + static_cast<std::ptrdiff_t>(end_), '\n');
      if (newline != buffer_.begin() + static_cast<std::ptrdiff_t>(end_)) {
        const auto length = static_cast<std::size_t>(newline - buffer_.begin()) - begin_;
        line = std::string_view(buffer_.data() + begin_, length);
        begin_ += length + 1;
        return true;
      }
      if (at_end_) {  // a last line without '\n' still counts
        if (begin_ == end_) {
          return false;
        }
        line = std::string_view(buffer_.data() + begin_, end_ - begin_);
        begin_ = end_;
        return true;
      }
      refill();
    }
  }

 private:
  void refill() {
    std::copy(buffer_.begin() + static_cast<std::ptrdiff_t>(begin_), buffer_.begin() + static_cast<std::ptrdiff_t>(end_),
              buffer_.begin());
    end_ -= begin_;
    begin_ = 0;
    if (end_ == buffer_.size()) {  // one line longer than the buffer
      buffer_.resize(buffer_.size() * 2);
    }
    const std::size_t got = std::fread(buffer_.data() + end_, 1, buffer_.size() - end_, stream_);
    end_ += got;
    if (got == 0) {
      if (std::ferror(stream_)) {
        throw std::runtime_error("cannot read stdin");
      }
      at_end_ = true;
    }
  }

  std::FILE* stream_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  bool at_end_ = false;
};

/// Buffered stdout: std::to_chars into a block written with one fwrite when full.
class output_writer {
 public:
  explicit output_writer(std::FILE* stream) : stream_(stream) { buffer_.reserve(capacity); }
  output_writer(const output_writer&) = delete;
  output_writer& operator=(const output_writer&) = delete;

  void number(std::int64_t value) {
    char digits[24];
    const auto result = std::to_chars(digits, digits + sizeof digits, value);
    buffer_.append(digits, result.ptr);
    flush_if_full();
  }
  /// %.9g: enough significant digits to read back the same float.
  void real(float value) {
    char digits[32];
    const int length = std::snprintf(digits, sizeof digits, "%.9g", static_cast<double>(value));
    buffer_.append(digits, static_cast<std::size_t>(length));
    flush_if_full();
  }
  void put(char character) {
    buffer_.push_back(character);
    flush_if_full();
  }
  void flush() {
    if (!buffer_.empty() && std::fwrite(buffer_.data(), 1, buffer_.size(), stream_) != buffer_.size()) {
      buffer_.clear();
      throw std::runtime_error("cannot write stdout");
    }
    buffer_.clear();
    if (std::fflush(stream_) != 0) {
      throw std::runtime_error("cannot write stdout");
    }
  }

 private:
  static constexpr std::size_t capacity = 1 << 20;

  void flush_if_full() {
    if (buffer_.size() >= capacity - 64) {
      flush();
    }
  }

  std::FILE* stream_;
  std::string buffer_;
};

/// Lines parsed but not yet hashed: one ragged batch of current tokens and one of context, a sequence per line.
struct line_batch {
  std::int64_t first_line = 1;
  std::vector<std::int64_t> tokens;
  std::vector<std::int64_t> token_offsets{0};
  std::vector<std::int64_t> context;
  std::vector<std::int64_t> context_offsets{0};

  [[nodiscard]] std::size_t num_lines() const { return token_offsets.size() - 1; }
  [[nodiscard]] std::size_t num_values() const { return tokens.size() + context.size(); }

  void restart(std::int64_t next_line) {
    first_line = next_line;
    tokens.clear();
    context.clear();
    token_offsets.assign(1, 0);
    context_offsets.assign(1, 0);
  }
};

bool is_blank(char character) { return character == ' ' || character == '\t' || character == '\r'; }

/// Appends one line to the batch, or nothing when the line is malformed. Range checks are left to hash_tokens,
/// which names the offending token.
void parse_line(std::string_view line, std::int64_t line_number, line_batch& batch) {
  const std::size_t tokens_before = batch.tokens.size();
  const std::size_t context_before = batch.context.size();
  const auto fail = [&](const std::string& problem) {
    batch.tokens.resize(tokens_before);
    batch.context.resize(context_before);
    throw bad_input("line " + std::to_string(line_number) + ": " + problem);
  };
  bool seen_bar = false;
  std::size_t at = 0;
  while (at < line.size()) {
    if (is_blank(line[at])) {
      ++at;
      continue;
    }
    if (line[at] == '|') {
      if (seen_bar) {
        fail("more than one '|' (a line is: context tokens | current tokens)");
      }
      seen_bar = true;  // what was read so far is context
      batch.context.insert(batch.context.end(), batch.tokens.begin() + static_cast<std::ptrdiff_t>(tokens_before),
                           batch.tokens.end());
      batch.tokens.resize(tokens_before);
      ++at;
      continue;
    }
    std::size_t end = at;
    while (end < line.size() && !is_blank(line[end]) && line[end] != '|') {
      ++end;
    }
    const std::string_view word = line.substr(at, end - at);
    std::int64_t token = 0;
    const auto [word_end, status] = std::from_chars(word.data(), word.data() + word.size(), token);
    if (status == std::errc::result_out_of_range) {
      fail("token id " + quoted(word) + " is far outside any vocabulary");
    }
    if (status != std::errc{} || word_end != word.data() + word.size()) {
      fail(quoted(word) + " is not an integer token id");
    }
    batch.tokens.push_back(token);
    at = end;
  }
  batch.token_offsets.push_back(static_cast<std::int64_t>(batch.tokens.size()));
  batch.context_offsets.push_back(static_cast<std::int64_t>(batch.context.size()));
}

/// Prints tokens [first, first + count) of a sequence, one line of `width` space-separated values each
/// (`value(token, column)` writes one), and a blank line after the sequence.
template <class Value>
void write_rows(output_writer& out, std::size_t first, std::size_t count, std::size_t width, Value&& value) {
  for (std::size_t token = first; token < first + count; ++token) {
    for (std::size_t column = 0; column < width; ++column) {
      if (column != 0) {
        out.put(' ');
      }
      value(token, column);
    }
    out.put('\n');
  }
  out.put('\n');
}

/// Prints the first `lines` lines of a batch: `compute(tokens, context)` fills the per-token results (it may throw
/// token_out_of_range), then `write(first_token, count)` prints each line's tokens. On a bad token the lines before
/// its line are printed first, then bad_input names the line.
template <class Compute, class Write>
void print_lines(const line_batch& batch, std::size_t lines, std::int64_t vocab_size, Compute&& compute, Write&& write) {
  const auto token_count = static_cast<std::size_t>(batch.token_offsets[lines]);
  const auto context_count = static_cast<std::size_t>(batch.context_offsets[lines]);
  const ngemb::ragged_view<const std::int64_t> tokens(
      ngemb::view<const std::int64_t>(batch.tokens.data(), token_count),
      ngemb::view<const std::int64_t>(batch.token_offsets.data(), lines + 1));
  const ngemb::ragged_view<const std::int64_t> context(
      ngemb::view<const std::int64_t>(batch.context.data(), context_count),
      ngemb::view<const std::int64_t>(batch.context_offsets.data(), lines + 1));
  try {
    compute(tokens, context);
  } catch (const ngemb::token_out_of_range& failure) {
    // The batch checks report one bad token; the lines before its line may hold earlier ones.
    print_lines(batch, failure.sequence(), vocab_size, compute, write);
    throw bad_input("line " + std::to_string(batch.first_line + static_cast<std::int64_t>(failure.sequence())) +
                    ": token id " + std::to_string(failure.value()) + " is outside [0, " + std::to_string(vocab_size) +
                    ")");
  }
  for (std::size_t line = 0; line < lines; ++line) {
    write(static_cast<std::size_t>(tokens.begin_of(line)), static_cast<std::size_t>(tokens.size_of(line)));
  }
}

/// Reads stdin to the end, handing `print(batch)` batches of whole lines; on bad input the output of every line
/// before the bad one is flushed, then bad_input propagates.
template <class Print>
void run_lines(output_writer& out, std::size_t max_batch_values, Print&& print) {
  constexpr std::size_t max_batch_lines = std::size_t{1} << 16;
  line_reader reader(stdin);
  line_batch batch;
  std::int64_t line_number = 0;
  std::string_view line;
  try {
    while (reader.next(line)) {
      ++line_number;
      try {
        parse_line(line, line_number, batch);
      } catch (const bad_input&) {
        print(batch);  // the lines before it go out first, and one of them may hold an earlier error
        throw;
      }
      if (batch.num_values() >= max_batch_values || batch.num_lines() >= max_batch_lines) {
        print(batch);
        batch.restart(line_number + 1);
      }
    }
    print(batch);
  } catch (const bad_input&) {
    out.flush();
    throw;
  }
  out.flush();
}

}  // namespace ngemb_examples
