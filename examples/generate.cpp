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

#include "demo_model.hpp"
#include "ngemb/ngemb.hpp"
#include "token_lines.hpp"

namespace {

using namespace ngemb_examples;
using model = demo_model<ngemb::host_policy>;

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
