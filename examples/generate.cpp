// generate: a whole LongCat-shaped model, end to end. Without arguments it builds a small model (n-gram
// embedding, shortcut-connected blocks, MoE with zero experts) from a fixed seed, saves it as a checkpoint in a
// temporary folder, loads it back, and generates from a batch of prompts, printing the tokens, prefill and decode
// tokens/s and where the time went. With --checkpoint DIR it runs a saved model as the layout its config.json's
// model_type names: "longcat_flash_ngram" (LongCat-Flash-Lite), "longcat_flash", or none (the demo's). Every option is
// checked before any work: ranges when parsed, prompt token ids and lengths against config.json before the weights.
#include <stdlib.h>  // mkdtemp

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <unistd.h>

#include "demo_model.hpp"
#include "ngemb/ngemb.hpp"
#include "token_lines.hpp"

namespace {

using namespace ngemb_examples;
using model = demo_model<ngemb::host_policy>;
namespace fs = std::filesystem;

/// The sequences generate() runs at once (the loaded model's max_sequences).
constexpr std::size_t max_prompts = 16;

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
        throw bad_input("--prompt: " + quoted(text.substr(begin, end - begin)) + " is not a token id");
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
    throw bad_input(std::string(option) + ": " + quoted(value) + " is not a valid number");
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
                      if (parsed.generation.max_new_tokens < 1) {
                        throw bad_input("--max-new-tokens must be >= 1, got " + std::string(value));
                      }
                    } else if (option == "--temperature") {
                      parsed.generation.sampling.temperature = parse_option<float>(option, value);
                      if (!(parsed.generation.sampling.temperature >= 0.0f) ||
                          !std::isfinite(parsed.generation.sampling.temperature)) {
                        throw bad_input("--temperature must be finite and >= 0 (0: greedy), got " + std::string(value));
                      }
                    } else if (option == "--top-k") {
                      parsed.generation.sampling.top_k = parse_option<int>(option, value);
                      if (parsed.generation.sampling.top_k < 0) {
                        throw bad_input("--top-k must be >= 0 (0 keeps all), got " + std::string(value));
                      }
                    } else if (option == "--top-p") {
                      parsed.generation.sampling.top_p = parse_option<float>(option, value);
                      if (!(parsed.generation.sampling.top_p > 0.0f && parsed.generation.sampling.top_p <= 1.0f)) {
                        throw bad_input("--top-p must be in (0, 1], got " + std::string(value));
                      }
                    } else if (option == "--seed") {
                      parsed.generation.sampling.seed = parse_option<std::uint64_t>(option, value);
                    } else {
                      parsed.threads = parse_option<unsigned>(option, value);
                    }
                  });
  if (parsed.checkpoint && parsed.save) {
    throw bad_input("--save writes the generated model; with --checkpoint there is none");
  }
  if (parsed.prompts.size() > max_prompts) {
    throw bad_input("at most " + std::to_string(max_prompts) + " --prompt options (one sequence each), got " +
                    std::to_string(parsed.prompts.size()));
  }
  return parsed;
}

void print_help() {
  std::puts(
      "usage: generate [--checkpoint DIR | --save DIR] [--prompt \"ID ID ...\"]... [--max-new-tokens N]\n"
      "                [--temperature T] [--top-k K] [--top-p P] [--seed S] [--threads N]\n"
      "With --checkpoint DIR: runs the checkpoint as the layout config.json's model_type names\n"
      "(longcat_flash_ngram, longcat_flash, or none for the demo layout).\n"
      "Without --checkpoint: builds a small LongCat-shaped model from a fixed seed, saves it to a temporary\n"
      "folder (or --save DIR, a new or empty folder) and loads it back. Greedy unless --temperature > 0. Each\n"
      "--prompt adds a sequence (at most 16).");
}

/// "No such file or directory" as "no such file or directory", to follow "path: " in a message.
std::string reason(const std::error_code& failure) {
  std::string text = failure.message();
  if (!text.empty()) {
    text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  }
  return text;
}

/// A fresh folder under the temporary directory ($TMPDIR), removed with its content on scope exit. mkdtemp gives it
/// a unique name and mode 0700, or fails: a name planted in advance (a folder, a symbolic link) is never reused, so
/// only what this program wrote is ever removed.
struct scratch_folder {
  fs::path path;
  scratch_folder() {
    std::error_code failure;
    const fs::path temp = fs::temp_directory_path(failure);
    if (failure) {
      throw std::runtime_error("no temporary folder (TMPDIR): " + reason(failure));
    }
    std::string pattern = (temp / "ngemb_generate_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("cannot create a folder " + pattern + ": " +
                               reason(std::error_code(errno, std::generic_category())));
    }
    path = pattern;
  }
  ~scratch_folder() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  scratch_folder(const scratch_folder&) = delete;
  scratch_folder& operator=(const scratch_folder&) = delete;
};

/// --checkpoint DIR names a folder holding config.json; bad_input saying what is missing otherwise.
void check_checkpoint_folder(const fs::path& folder) {
  const std::string what = "--checkpoint " + folder.string();
  std::error_code failure;
  const fs::file_status status = fs::status(folder, failure);
  if (status.type() == fs::file_type::not_found) {
    throw bad_input(what + ": no such file or directory");
  }
  if (failure) {
    throw bad_input(what + ": " + reason(failure));
  }
  if (!fs::is_directory(status)) {
    throw bad_input(what + ": not a folder (a checkpoint is a folder with config.json and .safetensors files)");
  }
  const fs::file_status config = fs::status(folder / "config.json", failure);
  if (config.type() == fs::file_type::not_found) {
    throw bad_input(what + ": no config.json in it (a checkpoint is a folder with config.json and .safetensors files)");
  }
  if (failure) {
    throw bad_input(what + "/config.json: " + reason(failure));
  }
}

/// --save DIR must be new or an empty folder: the save never replaces another checkpoint.
void check_save_folder(const fs::path& folder) {
  const std::string what = "--save " + folder.string();
  std::error_code failure;
  const fs::file_status status = fs::symlink_status(folder, failure);
  if (status.type() == fs::file_type::not_found) {
    return;
  }
  if (failure) {
    throw bad_input(what + ": " + reason(failure));
  }
  if (!fs::is_directory(status)) {
    throw bad_input(what + ": exists and is not a folder; choose a new folder");
  }
  if (!fs::is_empty(folder, failure) || failure) {
    throw bad_input(what + (failure ? ": " + reason(failure) : ": the folder is not empty; choose a new folder"));
  }
}

/// Every prompt token in [0, vocab_size) and every prompt with its new tokens within max_position_embeddings, where
/// `source` says where the config came from.
void check_prompts(const std::vector<std::vector<std::int32_t>>& prompts, int max_new_tokens,
                   const ngemb::model_config& config, const std::string& source) {
  const std::int64_t vocab = config.vocab_size();
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    for (const std::int32_t token : prompts[p]) {
      if (token < 0 || token >= vocab) {
        throw bad_input("--prompt: token " + std::to_string(token) + " is outside [0, " + std::to_string(vocab) +
                        ") (vocab_size of " + source + ")");
      }
    }
    const auto positions = static_cast<std::int64_t>(prompts[p].size()) + max_new_tokens - 1;
    if (positions > config.max_position_embeddings) {
      throw bad_input("prompt " + std::to_string(p + 1) + " (" + std::to_string(prompts[p].size()) +
                      " tokens) with --max-new-tokens " + std::to_string(max_new_tokens) + " needs " +
                      std::to_string(positions) + " positions, more than max_position_embeddings = " +
                      std::to_string(config.max_position_embeddings) + " of " + source);
    }
  }
}

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

/// Loads `folder` as a Model and generates from the prompts, printing tokens, speeds and the time share.
template <class Model>
int load_and_generate(const ngemb::host_policy& policy, const fs::path& folder,
                      const std::vector<std::vector<std::int32_t>>& prompts, const arguments& args) {
  const auto load_start = std::chrono::steady_clock::now();
  Model lm = Model::load(policy, folder, {.max_sequences = max_prompts, .max_positions = 0});
  std::printf("loaded %s in %.2f s\n", folder.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());
  ngemb::generation_options options = args.generation;
  options.profile = true;
  const bool terminal = ::isatty(STDERR_FILENO) != 0;
  const auto result = ngemb::generate(policy, lm, prompts, options, [&](const ngemb::generation_progress& progress) {
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

int run(const arguments& args) {
  const ngemb::host_policy policy{args.threads};
  constexpr std::uint64_t seed = 2026;
  // Everything the options name is checked against the config before the model is built or its weights are read.
  if (args.checkpoint) {
    check_checkpoint_folder(*args.checkpoint);
  } else if (args.save) {
    check_save_folder(*args.save);
  }
  const ngemb::model_config config = args.checkpoint ? ngemb::read_model_config(*args.checkpoint) : demo_config();
  const std::string config_source = args.checkpoint ? (*args.checkpoint / "config.json").string() : "the demo model";
  std::vector<std::vector<std::int32_t>> prompts = args.prompts;
  if (prompts.empty()) {  // three prompts of different lengths: a ragged prefill
    std::mt19937 engine(static_cast<std::uint32_t>(seed));
    const auto last = static_cast<std::int32_t>(config.vocab_size() - 1);
    std::uniform_int_distribution<std::int32_t> token(std::min(3, last), last);
    for (const int length : {48, 16, 32}) {
      prompts.emplace_back();
      for (int i = 0; i < length; ++i) {
        prompts.back().push_back(token(engine));
      }
    }
  }
  check_prompts(prompts, args.generation.max_new_tokens, config, config_source);

  std::optional<scratch_folder> scratch;
  fs::path folder;
  if (args.checkpoint) {
    folder = *args.checkpoint;
  } else {
    const auto built = std::chrono::steady_clock::now();
    const model generated = random_model(policy, config, seed);
    folder = args.save ? *args.save : scratch.emplace().path / "checkpoint";
    generated.save(policy, folder, {.max_shard_bytes = std::size_t{32} << 20});
    std::printf("built a LongCat-shaped model from seed %llu: %d shortcut layers, H=%lld, %d routed + %d zero experts "
                "(top %d), n-gram embedding N=%d K=%d over V=%lld\nsaved it to %s (%.1f MB) in %.2f s\n",
                static_cast<unsigned long long>(seed), config.num_layers, static_cast<long long>(config.hidden_size()),
                config.n_routed_experts, config.zero_expert_num, config.moe_topk, config.ngram.max_order,
                config.ngram.splits, static_cast<long long>(config.vocab_size()), folder.c_str(),
                static_cast<double>(folder_bytes(folder)) / 1e6,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - built).count());
  }
  // A checkpoint runs as the layout its config.json names; the demo layout has no model_type.
  if (config.model_type == "longcat_flash_ngram") {
    return load_and_generate<ngemb::presets::longcat_flash_lite<ngemb::host_policy>::model>(policy, folder, prompts,
                                                                                            args);
  }
  if (config.model_type == "longcat_flash") {
    return load_and_generate<ngemb::presets::longcat_flash<ngemb::host_policy>::model>(policy, folder, prompts, args);
  }
  return load_and_generate<model>(policy, folder, prompts, args);
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
