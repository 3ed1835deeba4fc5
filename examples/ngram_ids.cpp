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

#include <nlohmann/json.hpp>

#include "ngemb/ngemb.hpp"
#include "token_lines.hpp"

namespace {

using namespace ngemb_examples;

constexpr std::string_view usage = R"(usage: ngram_ids --config PATH
       ngram_ids --vocab V --ratio R --n N --k K [--eos E]
       ngram_ids --help

Reads token ids from stdin, one sequence per line, separated by spaces. An optional `|` splits a line into
earlier context (left: look-back only) and current tokens (right). For each current token prints one line with
the K*(N-1) LongCat n-gram ids (row indices into each sub-table, in sub-table order i = (n-2)*K + k), and a
blank line after each sequence. An empty line is a sequence without tokens.

  --config PATH  a Hugging Face config.json, or a checkpoint folder holding one; only vocab_size,
                 ngram_vocab_size_ratio (or m_base), emb_neighbor_num, emb_split_num and eos_token_id are used
  --vocab V      base vocabulary size (vocab_size)
  --ratio R      ngram_vocab_size_ratio: sub-table i has trunc(R*V + 2i + 1) rows
  --n N          largest n-gram order (emb_neighbor_num); orders 2..N are used
  --k K          hash functions per order (emb_split_num)
  --eos E        end-of-sequence token: tokens after it do not look back past it (default: no such token)
  --help         print this text

Exit codes: 0 success, 2 bad arguments or bad input (the message names the input line), 1 other failures.
)";

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
    throw bad_input(std::string(option) + ": " + quoted(value) + " is not " +
                    (std::is_integral_v<Number> ? "an integer" : "a number"));
  }
}

options parse_options(int argc, char** argv) {
  options parsed;
  parse_arguments(argc, argv, {"--config", "--vocab", "--ratio", "--n", "--k", "--eos"}, parsed.help,
                  [&](std::string_view option, std::string_view value) {
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
                  });
  return parsed;
}

/// The n-gram config of --config PATH (a config.json, or a folder holding one). Ids do not depend on hidden_size, so
/// a file with only the n-gram fields is enough: a missing hidden_size is taken as K*(N-1), the smallest valid one.
ngemb::ngram_config read_config(const std::filesystem::path& path) {
  // The library's reader and parser: regular files only, nesting capped, every failure an ngemb::error naming the
  // file (a missing file says so). The nesting cap also keeps the dump below shallow.
  const auto config = ngemb::detail::read_config_file(path);
  const std::string source = config.file.string();
  nlohmann::json root = ngemb::detail::parse_json(config.text, source);
  if (root.is_object() && (!root.contains("hidden_size") || root["hidden_size"].is_null())) {
    const auto small_integer = [&](const char* field) -> std::int64_t {  // 1 when absent or odd: parse reports it
      const auto found = root.find(field);
      return found != root.end() && found->is_number_integer() && *found >= 1 && *found <= (1 << 20)
                 ? found->get<std::int64_t>()
                 : 1;
    };
    root["hidden_size"] = std::max<std::int64_t>(1, small_integer("emb_split_num") *
                                                        (small_integer("emb_neighbor_num") - 1));
    return ngemb::parse_ngram_config(root.dump(), source);
  }
  return ngemb::parse_ngram_config(config.text, source);  // bad fields reported as read
}

/// The config from --config, or from the five size options. Throws bad_input or the library's errors.
ngemb::ngram_config config_from(const options& parsed) {
  const bool any_size_option = parsed.vocab || parsed.ratio || parsed.max_order || parsed.splits || parsed.eos;
  if (parsed.config_path) {
    if (any_size_option) {
      throw bad_input("--config cannot be combined with --vocab, --ratio, --n, --k or --eos");
    }
    return read_config(*parsed.config_path);
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

/// Hashes a batch of lines and prints one line of K*(N-1) ids per token, a blank line after each sequence.
class id_printer {
 public:
  id_printer(const ngemb::longcat_hash& hasher, output_writer& out) : hasher_(hasher), out_(out) {}

  void operator()(const line_batch& batch) {
    print_lines(
        batch, batch.num_lines(), hasher_.vocab_size(),
        [&](ngemb::ragged_view<const std::int64_t> tokens, ngemb::ragged_view<const std::int64_t> context) {
          ids_.resize(tokens.num_values() * static_cast<std::size_t>(hasher_.num_tables()));
          ngemb::hash_tokens(policy_, hasher_, tokens, context, ngemb::view<std::int64_t>(ids_));
        },
        [&](std::size_t first_token, std::size_t count) {
          const auto tables = static_cast<std::size_t>(hasher_.num_tables());
          write_rows(out_, first_token, count, tables,
                     [&](std::size_t token, std::size_t table) { out_.number(ids_[token * tables + table]); });
        });
  }

 private:
  const ngemb::longcat_hash& hasher_;
  output_writer& out_;
  ngemb::host_policy policy_{};
  std::vector<std::int64_t> ids_;
};

void run(const ngemb::longcat_hash& hasher) {
  output_writer out(stdout);
  id_printer printer(hasher, out);
  // Batches bound memory for long inputs while keeping hash_tokens calls large.
  run_lines(out, std::size_t{1} << 20, printer);
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
