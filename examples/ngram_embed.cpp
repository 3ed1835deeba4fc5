// ngram_embed: prints the n-gram embedding (SPEC §3) of token sequences read from stdin, one sequence per line.
//
//   echo "1 2 | 3 4" | ngram_embed --checkpoint LongCat-Flash-Lite/
//
// The checkpoint folder holds config.json and safetensors files (one file, or shards with
// model.safetensors.index.json). The tables are memory-mapped in their stored dtype (F32, BF16 or F16), so a
// 60 GB table set opens at once and only the rows the input touches are read.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ngemb/ngemb.hpp"
#include "token_lines.hpp"

namespace {

using namespace ngemb_examples;

constexpr std::string_view usage = R"(usage: ngram_embed --checkpoint DIR [--threads T]
       ngram_embed --help

Reads token ids from stdin, one sequence per line, separated by spaces. An optional `|` splits a line into
earlier context (left: look-back only) and current tokens (right). For each current token prints one line with
the H values of its n-gram embedding e = (E_0[x] + sum_i W_i E_i[id_i]) / (1 + T) ('%.9g', space separated), and
a blank line after each sequence. An empty line is a sequence without tokens.

  --checkpoint DIR  a folder with config.json and the tensors model.embed_tokens.weight,
                    model.ngram_embeddings.embedders.{i}.weight and model.ngram_embeddings.post_projs.{i}.weight
  --threads T       host threads (default 0: all cores)
  --help            print this text

Exit codes: 0 success, 2 bad arguments, a bad checkpoint or bad input (the message names the input line),
1 other failures.
)";

struct options {
  std::optional<std::filesystem::path> checkpoint;
  unsigned threads = 0;
  bool help = false;
};

options parse_options(int argc, char** argv) {
  options parsed;
  parse_arguments(argc, argv, {"--checkpoint", "--threads"}, parsed.help,
                  [&](std::string_view option, std::string_view value) {
                    if (option == "--checkpoint") {
                      if (parsed.checkpoint) {
                        throw bad_input("--checkpoint is given twice");
                      }
                      parsed.checkpoint = std::filesystem::path(value);
                    } else {
                      const auto threads = parse_number<unsigned>(value);
                      if (!threads) {
                        throw bad_input("--threads: \"" + std::string(value) + "\" is not a count");
                      }
                      parsed.threads = *threads;
                    }
                  });
  if (!parsed.help && !parsed.checkpoint) {
    throw bad_input("missing --checkpoint DIR");
  }
  return parsed;
}

/// Embeds a batch of lines and prints one line of H values per token, a blank line after each sequence.
template <class Embedding>
class embedding_printer {
 public:
  embedding_printer(Embedding& embedding, const ngemb::host_policy& policy, output_writer& out)
      : embedding_(embedding), policy_(policy), out_(out) {}

  void operator()(const line_batch& batch) {
    const auto width = static_cast<std::size_t>(embedding_.output_width());
    print_lines(
        batch, batch.num_lines(), embedding_.config().vocab_size,
        [&](ngemb::ragged_view<const std::int64_t> tokens, ngemb::ragged_view<const std::int64_t> context) {
          values_.resize(tokens.num_values() * width);
          embedding_.forward(policy_, tokens, context, ngemb::view<float>(values_));
        },
        [&](std::size_t first_token, std::size_t count) {
          write_rows(out_, first_token, count, width,
                     [&](std::size_t token, std::size_t column) { out_.real(values_[token * width + column]); });
        });
  }

 private:
  Embedding& embedding_;
  const ngemb::host_policy& policy_;
  output_writer& out_;
  std::vector<float> values_;
};

template <ngemb::storage_type T>
void run(const ngemb::host_policy& policy, const std::shared_ptr<const ngemb::safetensors_checkpoint>& checkpoint,
         const ngemb::ngram_config& config) {
  using embedding_type = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::mmap_store<T>>;
  auto embedding = embedding_type::load(policy, checkpoint, ngemb::ngram_names::released_owner, config);
  output_writer out(stdout);
  embedding_printer<embedding_type> printer(embedding, policy, out);
  // A batch's outputs take H floats per token: bound the batch so they stay in tens of megabytes.
  const std::size_t max_tokens = std::max<std::size_t>(1, (std::size_t{1} << 24) / static_cast<std::size_t>(config.hidden_size));
  run_lines(out, max_tokens, printer);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const options parsed = parse_options(argc, argv);
    if (parsed.help) {
      std::fwrite(usage.data(), 1, usage.size(), stdout);
      return 0;
    }
    const ngemb::host_policy policy{parsed.threads};
    const auto config = ngemb::read_ngram_config(*parsed.checkpoint);
    const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(*parsed.checkpoint);
    // The tables are served in their stored dtype: the first sub-table's dtype selects the store.
    const std::string first_table =
        ngemb::ngram_names::embedder(ngemb::ngram_names::module(ngemb::ngram_names::released_owner), 0);
    const std::string dtype = checkpoint->info(first_table).dtype;
    if (dtype == "F32") {
      run<float>(policy, checkpoint, config);
    } else if (dtype == "BF16") {
      run<ngemb::bf16>(policy, checkpoint, config);
    } else if (dtype == "F16") {
      run<ngemb::fp16>(policy, checkpoint, config);
    } else {
      throw ngemb::format_error(checkpoint->location_of(first_table) +
                                ": the sub-tables have dtype " + dtype + "; ngram_embed reads F32, BF16 or F16");
    }
    return 0;
  } catch (const bad_input& failure) {
    std::fprintf(stderr, "ngram_embed: %s\n", failure.what());
    return exit_bad_input;
  } catch (const ngemb::error& failure) {  // the checkpoint: unreadable, malformed, shapes or dtypes that disagree
    std::fprintf(stderr, "ngram_embed: %s\n", failure.what());
    return exit_bad_input;
  } catch (const std::exception& failure) {
    std::fprintf(stderr, "ngram_embed: %s\n", failure.what());
    return 1;
  }
}
