// ngram_ids: prints the LongCat n-gram ids of token sequences read from stdin, one sequence per line.
//
//   echo "1 2 | 3 4" | ngram_ids --vocab 131072 --ratio 78 --n 4 --k 4 --eos 2
//
// Tokens left of an optional `|` are earlier context (look-back only, no ids); each token right of it gets one
// line of K*(N-1) per-table row ids in sub-table order, and every sequence ends with a blank line.
#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "ngemb/ngemb.hpp"

namespace {

constexpr int exit_bad_input = 2;

constexpr std::string_view usage = R"(usage: ngram_ids --config PATH
       ngram_ids --vocab V --ratio R --n N --k K [--eos E]
       ngram_ids --help

Reads token ids from stdin, one sequence per line, separated by spaces. An optional `|` splits a line into
earlier context (left: look-back only) and current tokens (right). For each current token prints one line with
the K*(N-1) LongCat n-gram ids (row indices into each sub-table, in sub-table order i = (n-2)*K + k), and a
blank line after each sequence. An empty line is a sequence without tokens.

  --config PATH  a Hugging Face config.json, or a checkpoint folder holding one
  --vocab V      base vocabulary size (vocab_size)
  --ratio R      ngram_vocab_size_ratio: sub-table i has trunc(R*V + 2i + 1) rows
  --n N          largest n-gram order (emb_neighbor_num); orders 2..N are used
  --k K          hash functions per order (emb_split_num)
  --eos E        end-of-sequence token: tokens after it do not look back past it (default: no such token)
  --help         print this text

Exit codes: 0 success, 2 bad arguments or bad input (the message names the input line), 1 other failures.
)";

/// A problem in the arguments or the input, reported on stderr with exit code 2.
class bad_input : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class Number>
std::optional<Number> parse_number(std::string_view text) {
  Number value{};
  const auto [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (status != std::errc{} || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

struct options {
  std::optional<std::filesystem::path> config_path;
  std::optional<std::int64_t> vocab;
  std::optional<double> ratio;
  std::optional<int> max_order;
  std::optional<int> splits;
  std::optional<std::int64_t> eos;
  bool help = false;
};

template <class Number>
void set_number(std::optional<Number>& field, std::string_view option, std::string_view value) {
  if (field) {
    throw bad_input(std::string(option) + " is given twice");
  }
  field = parse_number<Number>(value);
  if (!field) {
    throw bad_input(std::string(option) + ": \"" + std::string(value) + "\" is not " +
                    (std::is_integral_v<Number> ? "an integer" : "a number"));
  }
}

options parse_options(int argc, char** argv) {
  options parsed;
  for (int i = 1; i < argc; ++i) {
    const std::string_view option = argv[i];
    if (option == "--help" || option == "-h") {
      parsed.help = true;
      continue;
    }
    const bool known = option == "--config" || option == "--vocab" || option == "--ratio" || option == "--n" ||
                       option == "--k" || option == "--eos";
    if (!known) {
      throw bad_input((option.starts_with("-") ? "unknown option \"" : "unexpected argument \"") +
                      std::string(option) + "\"");
    }
    if (i + 1 == argc) {
      throw bad_input(std::string(option) + " needs a value");
    }
    const std::string_view value = argv[++i];
    if (option == "--config") {
      if (parsed.config_path) {
        throw bad_input("--config is given twice");
      }
      parsed.config_path = std::filesystem::path(value);
    } else if (option == "--vocab") {
      set_number(parsed.vocab, option, value);
    } else if (option == "--ratio") {
      set_number(parsed.ratio, option, value);
    } else if (option == "--n") {
      set_number(parsed.max_order, option, value);
    } else if (option == "--k") {
      set_number(parsed.splits, option, value);
    } else {
      set_number(parsed.eos, option, value);
    }
  }
  return parsed;
}

/// The config from --config, or from the five size options. Throws bad_input or the library's errors.
ngemb::ngram_config config_from(const options& parsed) {
  const bool any_size_option = parsed.vocab || parsed.ratio || parsed.max_order || parsed.splits || parsed.eos;
  if (parsed.config_path) {
    if (any_size_option) {
      throw bad_input("--config cannot be combined with --vocab, --ratio, --n, --k or --eos");
    }
    return ngemb::read_ngram_config(*parsed.config_path);
  }
  if (!any_size_option) {
    throw bad_input("give either --config PATH or --vocab V --ratio R --n N --k K [--eos E]");
  }
  std::string missing;
  for (const auto& [present, name] : {std::pair{parsed.vocab.has_value(), "--vocab"},
                                      std::pair{parsed.ratio.has_value(), "--ratio"},
                                      std::pair{parsed.max_order.has_value(), "--n"},
                                      std::pair{parsed.splits.has_value(), "--k"}}) {
    if (!present) {
      missing += missing.empty() ? name : std::string(", ") + name;
    }
  }
  if (!missing.empty()) {
    throw bad_input("missing " + missing);
  }
  ngemb::ngram_config config;
  config.vocab_size = *parsed.vocab;
  config.ratio = *parsed.ratio;
  config.max_order = *parsed.max_order;
  config.splits = *parsed.splits;
  config.eos_token = parsed.eos;
  // Ids do not depend on the hidden size; the smallest valid one lets validate() judge the other fields.
  config.hidden_size = std::max<std::int64_t>(1, std::int64_t{config.splits} * (std::int64_t{config.max_order} - 1));
  return config;
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
      fail("token id " + std::string(word) + " is far outside any vocabulary");
    }
    if (status != std::errc{} || word_end != word.data() + word.size()) {
      fail("\"" + std::string(word) + "\" is not an integer token id");
    }
    batch.tokens.push_back(token);
    at = end;
  }
  batch.token_offsets.push_back(static_cast<std::int64_t>(batch.tokens.size()));
  batch.context_offsets.push_back(static_cast<std::int64_t>(batch.context.size()));
}

class id_printer {
 public:
  id_printer(const ngemb::longcat_hash& hasher, output_writer& out) : hasher_(hasher), out_(out) {}

  /// Hashes and prints every line of the batch. A token outside [0, V) raises bad_input naming its line, after
  /// the lines before it have been printed.
  void print(const line_batch& batch) { print_lines(batch, batch.num_lines()); }

 private:
  /// Prints the first `lines` lines of the batch; on a bad token, prints the lines before it, then raises.
  void print_lines(const line_batch& batch, std::size_t lines) {
    const auto token_count = static_cast<std::size_t>(batch.token_offsets[lines]);
    const auto context_count = static_cast<std::size_t>(batch.context_offsets[lines]);
    const ngemb::ragged_view<const std::int64_t> tokens(
        ngemb::view<const std::int64_t>(batch.tokens.data(), token_count),
        ngemb::view<const std::int64_t>(batch.token_offsets.data(), lines + 1));
    const ngemb::ragged_view<const std::int64_t> context(
        ngemb::view<const std::int64_t>(batch.context.data(), context_count),
        ngemb::view<const std::int64_t>(batch.context_offsets.data(), lines + 1));
    ids_.resize(token_count * static_cast<std::size_t>(hasher_.num_tables()));
    try {
      ngemb::hash_tokens(policy_, hasher_, tokens, context, ngemb::view<std::int64_t>(ids_));
    } catch (const ngemb::token_out_of_range& failure) {
      // The batch checks report one bad token; the lines before its line may hold earlier ones.
      print_lines(batch, failure.sequence());
      throw bad_input("line " + std::to_string(batch.first_line + static_cast<std::int64_t>(failure.sequence())) +
                      ": token id " + std::to_string(failure.value()) + " is outside [0, " +
                      std::to_string(hasher_.vocab_size()) + ")");
    }
    for (std::size_t line = 0; line < lines; ++line) {
      write_sequence(static_cast<std::size_t>(tokens.begin_of(line)), static_cast<std::size_t>(tokens.size_of(line)));
    }
  }

  void write_sequence(std::size_t first_token, std::size_t count) {
    const auto tables = static_cast<std::size_t>(hasher_.num_tables());
    for (std::size_t token = first_token; token < first_token + count; ++token) {
      for (std::size_t table = 0; table < tables; ++table) {
        if (table != 0) {
          out_.put(' ');
        }
        out_.number(ids_[token * tables + table]);
      }
      out_.put('\n');
    }
    out_.put('\n');
  }

  const ngemb::longcat_hash& hasher_;
  output_writer& out_;
  ngemb::host_policy policy_{};
  std::vector<std::int64_t> ids_;
};

void run(const ngemb::longcat_hash& hasher) {
  // Batches bound memory for long inputs while keeping hash_tokens calls large.
  constexpr std::size_t max_batch_values = std::size_t{1} << 20;
  constexpr std::size_t max_batch_lines = std::size_t{1} << 16;
  output_writer out(stdout);
  id_printer printer(hasher, out);
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
        printer.print(batch);  // the lines before it go out first, and one of them may hold an earlier error
        throw;
      }
      if (batch.num_values() >= max_batch_values || batch.num_lines() >= max_batch_lines) {
        printer.print(batch);
        batch.restart(line_number + 1);
      }
    }
    printer.print(batch);
  } catch (const bad_input&) {
    out.flush();  // the output of every line before the bad one
    throw;
  }
  out.flush();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const options parsed = parse_options(argc, argv);
    if (parsed.help) {
      std::fwrite(usage.data(), 1, usage.size(), stdout);
      return 0;
    }
    const ngemb::longcat_hash hasher(config_from(parsed));
    run(hasher);
    return 0;
  } catch (const bad_input& failure) {
    std::fprintf(stderr, "ngram_ids: %s\n", failure.what());
    return exit_bad_input;
  } catch (const ngemb::error& failure) {  // the config: unreadable file, malformed JSON, values out of range
    std::fprintf(stderr, "ngram_ids: %s\n", failure.what());
    return exit_bad_input;
  } catch (const std::exception& failure) {
    std::fprintf(stderr, "ngram_ids: %s\n", failure.what());
    return 1;
  }
}
