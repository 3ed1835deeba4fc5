// plan: the memory a model needs, part by part, from its config.json alone, and what fits where.
//   plan --config config.json [--device-memory GB] [--context N --sequences S] [--dtype bf16|fp32] [--ranks R]
// Parameter counts come from ngemb/model/parameter_count.hpp (which documents how each part is counted). Weights
// are counted at --dtype except the router and the norms, which ngemb keeps in fp32; the KV or latent cache at
// --dtype too. GB are 10^9 bytes, as the paper and the model cards count them. With --ranks, the placements of the
// n-gram tables per rank: split by rows over the ranks (as sharded_store splits them) or host-resident.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include "ngemb/core/error.hpp"
#include "ngemb/model/config_json.hpp"
#include "ngemb/model/parameter_count.hpp"

namespace {

constexpr int exit_bad_input = 2;
constexpr std::int64_t max_count = std::int64_t{1} << 40;
constexpr std::int64_t max_ranks = 65536;
constexpr std::int64_t ranks_listed = 16;  // more ranks are summed up by their smallest and largest shard

constexpr std::string_view usage =
    "usage: plan --config PATH [--device-memory GB] [--context N --sequences S] [--dtype bf16|fp32] [--ranks R]\n"
    "  --config         config.json, or a checkpoint folder holding one\n"
    "  --device-memory  accelerator memory in GB (10^9 bytes): shows what fits on it and what stays in host memory\n"
    "  --context        tokens per sequence of the KV/latent cache (default max_position_embeddings)\n"
    "  --sequences      concurrent sequences (default 1)\n"
    "  --dtype          bf16 (default) or fp32: the weights' and the cache's element type\n"
    "  --ranks          tensor/expert-parallel ranks sharing the model (1 to 65536): shows per rank the n-gram\n"
    "                   tables sharded by rows over the ranks, or host-resident and gathered over PCIe\n";

struct bad_input : std::exception {
  explicit bad_input(std::string text) : message(std::move(text)) {}
  [[nodiscard]] const char* what() const noexcept override { return message.c_str(); }
  std::string message;
};

struct options {
  std::string config;
  double device_gb = 0.0;  // 0: not given
  std::int64_t context = 0;
  std::int64_t sequences = 1;
  std::uint64_t element_bytes = 2;
  std::int64_t ranks = 0;  // 0: not given
  bool help = false;
};

double positive_number(const std::string& option, const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !(value > 0.0) || value > 1e12) {
    throw bad_input(option + " needs a positive number, got \"" + text + "\"");
  }
  return value;
}

std::int64_t positive_integer(const std::string& option, const std::string& text, std::int64_t largest = max_count) {
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0' || value < 1 || value > largest) {
    throw bad_input(option + " needs an integer in [1, " + (largest == max_count ? "2^40" : std::to_string(largest)) +
                    "], got \"" + text + "\"");
  }
  return value;
}

options parse_options(int argc, char** argv) {
  options parsed;
  for (int i = 1; i < argc; ++i) {
    const std::string option = argv[i];
    if (option == "--help" || option == "-h") {
      parsed.help = true;
      return parsed;
    }
    if (i + 1 >= argc) {
      throw bad_input(option.rfind("--", 0) == 0 ? option + " needs a value" : "unexpected argument \"" + option + "\"");
    }
    const std::string value = argv[++i];
    if (option == "--config") {
      parsed.config = value;
    } else if (option == "--device-memory") {
      parsed.device_gb = positive_number(option, value);
    } else if (option == "--context") {
      parsed.context = positive_integer(option, value);
    } else if (option == "--sequences") {
      parsed.sequences = positive_integer(option, value);
    } else if (option == "--ranks") {
      parsed.ranks = positive_integer(option, value, max_ranks);
    } else if (option == "--dtype") {
      if (value != "bf16" && value != "fp32") {
        throw bad_input("--dtype must be bf16 or fp32, got \"" + value + "\"");
      }
      parsed.element_bytes = value == "bf16" ? 2 : 4;
    } else {
      throw bad_input("unknown option \"" + option + "\"");
    }
  }
  if (parsed.config.empty()) {
    throw bad_input("missing --config");
  }
  return parsed;
}

std::string grouped(std::uint64_t value) {  // 68537123456 -> 68,537,123,456
  const std::string digits = std::to_string(value);
  std::string result;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) {
      result += ',';
    }
    result += digits[i];
  }
  return result;
}

double gigabytes(std::uint64_t bytes) { return static_cast<double>(bytes) / 1e9; }

void print_part(const char* name, std::uint64_t parameters, std::uint64_t bytes, const std::string& how) {
  std::printf("  %-20s %18s  %9.2fB  %10.2f GB   %s\n", name, grouped(parameters).c_str(),
              static_cast<double>(parameters) / 1e9, gigabytes(bytes), how.c_str());
}

/// What fits on one device of `device` GB: everything but the n-gram tables (`rest_bytes`), then the tables.
void print_device_fit(const ngemb::model_config& config, double device, std::uint64_t rest_bytes,
                      std::uint64_t expert_bytes, std::uint64_t table_bytes) {
  const double needed = gigabytes(rest_bytes);
  const double tables = gigabytes(table_bytes);
  std::printf("\ndevice memory %.2f GB:\n", device);
  std::printf("  dense weights + experts + cache = %.2f GB on the device: %s\n", needed,
              needed <= device ? "fits" : "does not fit");
  if (needed > device) {
    std::printf("  short by %.2f GB: fewer sequences or a shorter context shrink the cache; the experts (%.2f GB) "
                "would have to be sharded over devices\n",
                needed - device, gigabytes(expert_bytes));
  }
  if (config.has_ngram_embedding()) {
    if (needed + tables <= device) {
      std::printf("  n-gram tables (%.2f GB) fit on the device too (%.2f GB in all)\n", tables, needed + tables);
    } else {
      std::printf("  n-gram tables (%.2f GB) stay in host memory (mmap_store or a host-resident store): %.2f GB of "
                  "host RAM or page cache; each token reads only %d rows of them\n",
                  tables, tables, config.ngram.num_tables());
    }
  }
}

/// The placements of the n-gram tables on each of `ranks` ranks sharing the model. Sharded: the concatenated
/// sub-tables split into contiguous row ranges as sharded_store splits them (rank r holds global rows
/// [total*r/ranks, total*(r+1)/ranks)). Host-resident: the tables in pinned host memory, each decode token gathering
/// one row per sub-table over PCIe. Everything else is counted whole on every rank.
void print_ranks(const ngemb::model_config& config, std::uint64_t ranks, std::uint64_t element_bytes,
                 std::uint64_t rest_bytes, double device) {
  std::printf("\n%s ranks sharing the model (tensor/expert parallel). Assumed: the n-gram tables split by rows over "
              "the ranks as sharded_store splits them; every other weight and the cache counted whole on each rank, "
              "as above (an upper bound where experts or heads are split over the ranks)\n",
              grouped(ranks).c_str());
  if (!config.has_ngram_embedding()) {
    std::printf("  no n-gram tables: each rank holds what is listed above\n");
    return;
  }
  const ngemb::ngram_config& ngram = config.ngram;
  std::uint64_t total_rows = 0;
  for (int table = 0; table < ngram.num_tables(); ++table) {
    total_rows += static_cast<std::uint64_t>(ngram.modulus(table));
  }
  const std::uint64_t row_bytes = static_cast<std::uint64_t>(ngram.row_width()) * element_bytes;
  const auto first_row = [&](std::uint64_t rank) { return total_rows * rank / ranks; };  // < 2^44 x 2^16: no overflow
  std::uint64_t largest = 0;
  std::uint64_t smallest = total_rows;
  const std::string width = grouped(static_cast<std::uint64_t>(ngram.row_width()));
  std::printf("  n-gram tables sharded over the devices: %s rows of %d sub-tables x d = %s (%.2f GB)\n",
              grouped(total_rows).c_str(), ngram.num_tables(), width.c_str(), gigabytes(total_rows * row_bytes));
  for (std::uint64_t rank = 0; rank < ranks; ++rank) {
    const std::uint64_t rows = first_row(rank + 1) - first_row(rank);
    largest = std::max(largest, rows);
    smallest = std::min(smallest, rows);
    if (ranks <= ranks_listed) {
      std::printf("    rank %s: global rows [%s, %s), %.2f GB\n", grouped(rank).c_str(),
                  grouped(first_row(rank)).c_str(), grouped(first_row(rank + 1)).c_str(), gigabytes(rows * row_bytes));
    }
  }
  std::printf("    %.2f GB per rank at most (shards of %s to %s rows)\n", gigabytes(largest * row_bytes),
              grouped(smallest).c_str(), grouped(largest).c_str());
  const std::uint64_t gathered = static_cast<std::uint64_t>(ngram.num_tables()) * row_bytes;
  std::printf("  or host-resident: the tables in pinned host memory (%.2f GB), gathered over PCIe: %s bytes per decode "
              "token (K*(N-1) = %d rows x d = %s x %s bytes)\n",
              gigabytes(total_rows * row_bytes), grouped(gathered).c_str(), ngram.num_tables(), width.c_str(),
              grouped(element_bytes).c_str());
  if (device <= 0.0) {
    std::printf("  (give --device-memory GB to see what fits on each rank)\n");
    return;
  }
  const double rest = gigabytes(rest_bytes);
  const double sharded = rest + gigabytes(largest * row_bytes);
  std::printf("  per rank, device memory %.2f GB:\n", device);
  std::printf("    tables sharded: dense weights + experts + cache %.2f GB + shard %.2f GB = %.2f GB: %s\n", rest,
              gigabytes(largest * row_bytes), sharded, sharded <= device ? "fits" : "does not fit");
  std::printf("    tables host-resident: dense weights + experts + cache %.2f GB on the device: %s\n", rest,
              rest <= device ? "fits" : "does not fit");
}

void run(const options& parsed) {
  const ngemb::model_config config = ngemb::read_model_config(parsed.config);
  const ngemb::parameter_counts counts = ngemb::count_parameters(config);
  const std::uint64_t weight = parsed.element_bytes;
  const std::uint64_t fp32 = 4;
  const char* dtype = weight == 2 ? "bf16" : "fp32";
  const std::string attention_kind = config.mla ? "MLA" : "GQA";
  const std::uint64_t sublayers = ngemb::attention_sublayers(config);
  const std::string hidden = std::to_string(config.hidden_size());

  std::printf("plan for %s: model_type \"%s\", %d layers (%s %s attention sublayers), weights in %s\n",
              parsed.config.c_str(), config.model_type.c_str(), config.num_layers, grouped(sublayers).c_str(),
              attention_kind.c_str(), dtype);
  std::printf("\n  %-20s %18s  %10s  %13s   %s\n", "part", "parameters", "", "bytes", "how it is counted");
  if (config.has_ngram_embedding()) {
    const ngemb::ngram_config& ngram = config.ngram;
    print_part("n-gram tables", counts.ngram_tables, counts.ngram_tables * weight,
               std::to_string(ngram.num_tables()) + " sub-tables (K*(N-1)) of m_i = " + std::to_string(ngram.modulus(0)) +
                   " + 2i rows x d = " + std::to_string(ngram.row_width()) + " (SPEC 1)");
    print_part("n-gram projections", counts.ngram_projections, counts.ngram_projections * weight,
               std::to_string(ngram.num_tables()) + " x H x d");
  }
  print_part("embedding", counts.embedding, counts.embedding * weight, "V x H (embed_tokens)");
  print_part("experts", counts.experts, counts.experts * weight,
             std::to_string(config.num_layers) + " MoE x " + std::to_string(config.n_routed_experts) +
                 " experts x 3 x H x " + std::to_string(config.expert_ffn_hidden_size) + " (zero experts: none)");
  print_part("attention", counts.attention, counts.attention * weight,
             grouped(sublayers) + " x " + grouped(ngemb::attention_parameters(config)) + " (" + attention_kind +
                 " projections and latent norms)");
  print_part("dense FFNs", counts.dense_ffn, counts.dense_ffn * weight,
             std::to_string(2 * config.num_layers) + " x 3 x H x " + std::to_string(config.ffn_hidden_size));
  print_part("router", counts.router, counts.router * fp32,
             std::to_string(config.num_layers) + " x (E+Z) x H + biases, fp32");
  print_part("norms", counts.norms, counts.norms * fp32, "(4 per layer + final) x H, fp32");
  print_part("lm_head", counts.lm_head, counts.lm_head * weight, "V x H (not tied)");
  const std::uint64_t dense_bytes =
      (counts.dense() - counts.router - counts.norms) * weight + (counts.router + counts.norms) * fp32;
  const std::uint64_t expert_bytes = counts.experts * weight;
  const std::uint64_t table_bytes = counts.ngram_tables * weight;
  print_part("total", counts.total(), dense_bytes + expert_bytes + table_bytes, "MTP module not counted");
  std::printf("  (dense weights: everything but the n-gram tables and the experts: %s parameters, %.2f GB)\n",
              grouped(counts.dense()).c_str(), gigabytes(dense_bytes));

  const std::uint64_t values = ngemb::cache_values_per_token(config);
  const std::uint64_t per_token = ngemb::checked_product("cache bytes per token", values, sublayers, weight);
  const std::int64_t context = parsed.context > 0 ? parsed.context : config.max_position_embeddings;
  const std::uint64_t cache_bytes = ngemb::checked_product("cache bytes", per_token, context, parsed.sequences);
  std::printf("\ncache: %s values per token per attention sublayer (%s), x %s sublayers = %s bytes per token in "
              "%s\n",
              grouped(values).c_str(),
              config.mla ? "latent c_kv + k_rope: kv_lora_rank + qk_rope_head_dim" : "keys and values: 2 x kv heads x head_dim",
              grouped(sublayers).c_str(), grouped(per_token).c_str(), dtype);
  std::printf("       %s tokens x %s sequences: %.2f GB\n", grouped(static_cast<std::uint64_t>(context)).c_str(),
              grouped(static_cast<std::uint64_t>(parsed.sequences)).c_str(), gigabytes(cache_bytes));

  const std::uint64_t rest_bytes = dense_bytes + expert_bytes + cache_bytes;
  if (parsed.device_gb <= 0.0) {
    std::printf("\n(give --device-memory GB to see what fits on the device)\n");
  } else {
    print_device_fit(config, parsed.device_gb, rest_bytes, expert_bytes, table_bytes);
  }
  if (parsed.ranks > 0) {
    print_ranks(config, static_cast<std::uint64_t>(parsed.ranks), weight, rest_bytes, parsed.device_gb);
  }
}
}  // namespace

int main(int argc, char** argv) {
  try {
    const options parsed = parse_options(argc, argv);
    if (parsed.help) {
      std::fwrite(usage.data(), 1, usage.size(), stdout);
      return 0;
    }
    run(parsed);
    return 0;
  } catch (const bad_input& failure) {
    std::fprintf(stderr, "plan: %s\n%.*s", failure.what(), static_cast<int>(usage.size()), usage.data());
    return exit_bad_input;
  } catch (const ngemb::error& failure) {  // the config: unreadable, malformed, unsupported or out of range
    std::fprintf(stderr, "plan: %s\n", failure.what());
    return exit_bad_input;
  } catch (const std::exception& failure) {
    std::fprintf(stderr, "plan: %s\n", failure.what());
    return 1;
  }
}
