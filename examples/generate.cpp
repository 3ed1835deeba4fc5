// generate: a whole LongCat-shaped model, end to end. Without arguments it builds a small model (n-gram
// embedding, shortcut-connected blocks, MoE with zero experts) from a fixed seed, saves it as a checkpoint in a
// temporary folder, loads it back, and generates from a batch of prompts, printing the tokens, prefill and decode
// tokens/s and where the time went. With --checkpoint DIR it runs a saved model of the same type.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include "ngemb/ngemb.hpp"
#include "token_lines.hpp"

namespace {

using namespace ngemb_examples;

// The model as a type: bf16 n-gram tables and expert weights (as LongCat-Flash-Lite ships them), fp32 elsewhere.
using embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<ngemb::bf16>>;
using experts = ngemb::moe<ngemb::softmax_router<>, ngemb::bf16>;
using block = ngemb::shortcut_block<ngemb::attention<>, ngemb::swiglu<>, experts>;
using model = ngemb::causal_lm<embedding, block>;

/// LongCat-Flash-Lite's structure (N=4, K=4 n-gram embedding; k of E routed + Z zero experts; shortcut layers)
/// at a size a laptop runs in seconds.
ngemb::model_config demo_config() {
  ngemb::model_config config;
  config.ngram.vocab_size = 8192;
  config.ngram.hidden_size = 256;
  config.ngram.max_order = 4;
  config.ngram.splits = 4;
  config.ngram.ratio = 4.0;
  config.ngram.eos_token = 2;
  config.num_layers = 4;
  config.num_attention_heads = 8;
  config.num_key_value_heads = 2;
  config.head_dim = 32;
  config.ffn_hidden_size = 512;
  config.expert_ffn_hidden_size = 128;
  config.n_routed_experts = 32;
  config.zero_expert_num = 16;
  config.moe_topk = 4;
  config.routed_scaling_factor = 6.0;
  config.rms_norm_eps = 1e-5;
  config.rope_theta = 10000.0;
  config.max_position_embeddings = 512;
  return config;
}

/// Gaussian parameters from one seeded stream; Linear weights get std 1/sqrt(fan_in), norms 1 +- 0.1.
class random_parameters {
 public:
  explicit random_parameters(std::uint64_t seed) : engine_(seed) {}

  template <class T = float>
  std::vector<T> normal(std::size_t count, double std, double mean = 0.0) {
    std::normal_distribution<double> distribution(mean, std);
    std::vector<T> values;
    values.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      values.push_back(static_cast<T>(static_cast<float>(distribution(engine_))));
    }
    return values;
  }
  template <class T = float>
  std::vector<T> linear(std::int64_t out_features, std::int64_t in_features) {
    return normal<T>(static_cast<std::size_t>(out_features * in_features), 1.0 / std::sqrt(double(in_features)));
  }
  ngemb::rms_norm<> norm(const ngemb::host_policy& policy, std::int64_t hidden, double eps) {
    return ngemb::rms_norm<>(policy, ngemb::view<const float>(normal(static_cast<std::size_t>(hidden), 0.1, 1.0)),
                             static_cast<float>(eps));
  }

 private:
  std::mt19937_64 engine_;
};

/// Every part built from its constructor: how a model is assembled in code rather than loaded.
model random_model(const ngemb::host_policy& policy, const ngemb::model_config& config, std::uint64_t seed) {
  random_parameters random(seed);
  const std::int64_t hidden = config.hidden_size();
  const ngemb::ngram_config& ngram = config.ngram;

  ngemb::table_store<ngemb::bf16> tables(policy, ngram, true);
  const auto base = random.normal<ngemb::bf16>(tables.base().size(), 1.0);
  std::copy(base.begin(), base.end(), tables.base().begin());
  std::vector<std::vector<float>> projections;
  std::vector<ngemb::view<const float>> projection_views;
  for (int table = 0; table < ngram.num_tables(); ++table) {
    const auto rows = random.normal<ngemb::bf16>(tables.table(table).size(), 1.0);
    std::copy(rows.begin(), rows.end(), tables.table(table).begin());
    projections.push_back(random.linear(hidden, ngram.row_width()));
    projection_views.emplace_back(projections.back());
  }
  embedding ngram_embedding(ngram, std::move(tables),
                            ngemb::fused_projection<float>(policy, hidden, ngram.row_width(),
                                                           std::span<const ngemb::view<const float>>(projection_views)));

  const ngemb::attention<>::shape attention_shape{hidden, config.num_attention_heads, config.num_key_value_heads,
                                                  config.head_dim, config.rope_theta};
  const std::int64_t heads_width = std::int64_t{config.num_attention_heads} * config.head_dim;
  const std::int64_t kv_width = std::int64_t{config.num_key_value_heads} * config.head_dim;
  const auto attention = [&] {
    return ngemb::attention<>(policy, attention_shape, random.linear(heads_width, hidden),
                              random.linear(kv_width, hidden), random.linear(kv_width, hidden),
                              random.linear(hidden, heads_width));
  };
  const auto dense = [&] {
    const std::int64_t width = config.ffn_hidden_size;
    return ngemb::swiglu<>(policy, hidden, width, random.linear(width, hidden), random.linear(width, hidden),
                           random.linear(hidden, width));
  };
  const auto moe = [&] {
    const ngemb::router_options options = config.router();
    const std::int64_t width = config.expert_ffn_hidden_size;
    ngemb::softmax_router<> router(policy, options, hidden, random.linear(options.num_experts(), hidden), {},
                                   random.normal(static_cast<std::size_t>(options.num_experts()), 0.01));
    const auto experts_times = [&](std::int64_t rows, std::int64_t columns) {
      return random.normal<ngemb::bf16>(static_cast<std::size_t>(options.routed_experts * rows * columns),
                                        1.0 / std::sqrt(double(columns)));
    };
    return experts(policy, std::move(router), hidden, width, experts_times(width, hidden),
                   experts_times(width, hidden), experts_times(hidden, width));
  };
  std::vector<block> blocks;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    blocks.emplace_back(std::array{random.norm(policy, hidden, config.rms_norm_eps),
                                   random.norm(policy, hidden, config.rms_norm_eps)},
                        std::array{attention(), attention()},
                        std::array{random.norm(policy, hidden, config.rms_norm_eps),
                                   random.norm(policy, hidden, config.rms_norm_eps)},
                        std::array{dense(), dense()}, moe());
  }
  ngemb::lm_head<> head(policy, random.norm(policy, hidden, config.rms_norm_eps), config.vocab_size(),
                        random.linear(config.vocab_size(), hidden));
  return model(policy, config, std::move(ngram_embedding), std::move(blocks), std::move(head));
}

struct arguments {
  bool help = false;
  std::optional<std::filesystem::path> checkpoint;
  std::optional<std::filesystem::path> save;
  std::vector<std::vector<std::int32_t>> prompts;
  ngemb::generation_options generation;
  unsigned threads = 0;
};

std::vector<std::int32_t> parse_prompt(std::string_view text) {
  std::vector<std::int32_t> tokens;
  std::size_t begin = 0;
  while (begin < text.size()) {
    const std::size_t end = std::min(text.find(' ', begin), text.size());
    if (end > begin) {
      const auto token = parse_number<std::int32_t>(text.substr(begin, end - begin));
      if (!token) {
        throw bad_input("--prompt: \"" + std::string(text.substr(begin, end - begin)) + "\" is not a token id");
      }
      tokens.push_back(*token);
    }
    begin = end + 1;
  }
  if (tokens.empty()) {
    throw bad_input("--prompt needs at least one token id");
  }
  return tokens;
}

template <class Number>
Number parse_option(std::string_view option, std::string_view value) {
  const auto number = parse_number<Number>(value);
  if (!number) {
    throw bad_input(std::string(option) + ": \"" + std::string(value) + "\" is not a valid number");
  }
  return *number;
}

arguments parse(int argc, char** argv) {
  arguments parsed;
  parsed.generation.max_new_tokens = 32;
  parse_arguments(argc, argv,
                  {"--checkpoint", "--save", "--prompt", "--max-new-tokens", "--temperature", "--top-k", "--top-p",
                   "--seed", "--threads"},
                  parsed.help, [&](std::string_view option, std::string_view value) {
                    if (option == "--checkpoint") {
                      parsed.checkpoint = std::filesystem::path(value);
                    } else if (option == "--save") {
                      parsed.save = std::filesystem::path(value);
                    } else if (option == "--prompt") {
                      parsed.prompts.push_back(parse_prompt(value));
                    } else if (option == "--max-new-tokens") {
                      parsed.generation.max_new_tokens = parse_option<int>(option, value);
                    } else if (option == "--temperature") {
                      parsed.generation.sampling.temperature = parse_option<float>(option, value);
                    } else if (option == "--top-k") {
                      parsed.generation.sampling.top_k = parse_option<int>(option, value);
                    } else if (option == "--top-p") {
                      parsed.generation.sampling.top_p = parse_option<float>(option, value);
                    } else if (option == "--seed") {
                      parsed.generation.sampling.seed = parse_option<std::uint64_t>(option, value);
                    } else {
                      parsed.threads = parse_option<unsigned>(option, value);
                    }
                  });
  if (parsed.checkpoint && parsed.save) {
    throw bad_input("--save writes the generated model; with --checkpoint there is none");
  }
  return parsed;
}

void print_help() {
  std::puts(
      "usage: generate [--checkpoint DIR | --save DIR] [--prompt \"ID ID ...\"]... [--max-new-tokens N]\n"
      "                [--temperature T] [--top-k K] [--top-p P] [--seed S] [--threads N]\n"
      "Without --checkpoint: builds a small LongCat-shaped model from a fixed seed, saves it to a temporary\n"
      "folder (or --save DIR) and loads it back. Greedy unless --temperature > 0. Each --prompt adds a sequence.");
}

/// A fresh folder under the temporary directory, removed on scope exit.
struct scratch_folder {
  std::filesystem::path path = std::filesystem::temp_directory_path() /
                               ("ngemb_generate_" + std::to_string(::getpid()));
  scratch_folder() { std::filesystem::create_directories(path); }
  ~scratch_folder() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  scratch_folder(const scratch_folder&) = delete;
  scratch_folder& operator=(const scratch_folder&) = delete;
};

std::uintmax_t folder_bytes(const std::filesystem::path& folder) {
  std::uintmax_t bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    bytes += entry.is_regular_file() ? entry.file_size() : 0;
  }
  return bytes;
}

std::string join(const std::vector<std::int32_t>& tokens) {
  std::string text;
  for (const std::int32_t token : tokens) {
    if (!text.empty()) {
      text += ' ';
    }
    text += std::to_string(token);
  }
  return text;
}

int run(const arguments& args) {
  const ngemb::host_policy policy{args.threads};
  constexpr std::uint64_t seed = 2026;
  std::optional<scratch_folder> scratch;
  std::filesystem::path folder;
  if (args.checkpoint) {
    folder = *args.checkpoint;
  } else {
    const ngemb::model_config config = demo_config();
    const auto built = std::chrono::steady_clock::now();
    const model generated = random_model(policy, config, seed);
    folder = args.save ? *args.save : scratch.emplace().path;
    generated.save(policy, folder, std::size_t{32} << 20);
    std::printf("built a LongCat-shaped model from seed %llu: %d shortcut layers, H=%lld, %d routed + %d zero experts "
                "(top %d), n-gram embedding N=%d K=%d over V=%lld\nsaved it to %s (%.1f MB) in %.2f s\n",
                static_cast<unsigned long long>(seed), config.num_layers, static_cast<long long>(config.hidden_size()),
                config.n_routed_experts, config.zero_expert_num, config.moe_topk, config.ngram.max_order,
                config.ngram.splits, static_cast<long long>(config.vocab_size()), folder.c_str(),
                static_cast<double>(folder_bytes(folder)) / 1e6,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - built).count());
  }
  const auto load_start = std::chrono::steady_clock::now();
  model lm = model::load(policy, folder, {.max_sequences = 16, .max_positions = 0});
  std::printf("loaded %s in %.2f s\n", folder.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());

  std::vector<std::vector<std::int32_t>> prompts = args.prompts;
  if (prompts.empty()) {  // three prompts of different lengths: a ragged prefill
    std::mt19937 engine(static_cast<std::uint32_t>(seed));
    std::uniform_int_distribution<std::int32_t> token(3, static_cast<std::int32_t>(lm.config().vocab_size() - 1));
    for (const int length : {48, 16, 32}) {
      prompts.emplace_back();
      for (int i = 0; i < length; ++i) {
        prompts.back().push_back(token(engine));
      }
    }
  }
  ngemb::generation_options options = args.generation;
  options.profile = true;
  const bool terminal = ::isatty(STDERR_FILENO) != 0;
  const auto result = lm.generate(policy, prompts, options, [&](const ngemb::generation_progress& progress) {
    if (terminal || progress.active_sequences == 0) {
      std::fprintf(stderr, "\rstep %d/%d: %zu sequences active, %zu tokens generated, %.2f s%s", progress.step,
                   progress.max_steps, progress.active_sequences, progress.generated_tokens, progress.elapsed_seconds,
                   progress.active_sequences == 0 ? "\n" : "");
    }
  });
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    std::printf("prompt %zu (%zu tokens): %s\n  -> %s\n", p, prompts[p].size(), join(prompts[p]).c_str(),
                join(result.tokens[p]).c_str());
  }
  std::printf("prefill: %zu tokens in %.1f ms (%.0f tokens/s)\n", result.prefill_tokens,
              result.prefill_seconds * 1e3, static_cast<double>(result.prefill_tokens) / result.prefill_seconds);
  if (result.decode_tokens > 0) {
    std::printf("decode:  %zu tokens in %.1f ms (%.0f tokens/s)\n", result.decode_tokens, result.decode_seconds * 1e3,
                static_cast<double>(result.decode_tokens) / result.decode_seconds);
  }
  std::printf("time share:");
  for (std::size_t stage = 0; stage < static_cast<std::size_t>(ngemb::model_stage::count); ++stage) {
    const auto which = static_cast<ngemb::model_stage>(stage);
    std::printf("%s %s %.1f%%", stage == 0 ? "" : ",", ngemb::name_of(which), 100.0 * result.stages.share(which));
  }
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const arguments args = parse(argc, argv);
    if (args.help) {
      print_help();
      return 0;
    }
    return run(args);
  } catch (const bad_input& problem) {
    std::fprintf(stderr, "generate: %s\n", problem.what());
    return exit_bad_input;
  } catch (const std::exception& problem) {
    std::fprintf(stderr, "generate: %s\n", problem.what());
    return exit_bad_input;
  }
}
