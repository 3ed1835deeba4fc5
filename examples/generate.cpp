// generate: a whole LongCat-shaped model, end to end. Without arguments it builds a small model (n-gram
// embedding, shortcut-connected blocks, MoE with zero experts) from a fixed seed, saves it as a checkpoint in a
// temporary folder, loads it back, and generates from a batch of prompts, printing the tokens, prefill and decode
// tokens/s and where the time went. With --checkpoint DIR it runs a saved model as the layout its config.json's
// model_type names: "longcat_flash_ngram" (LongCat-Flash-Lite), "longcat_flash", or none (the demo's). Every option is
// checked before any work: ranges when parsed, prompt token ids and lengths against config.json before the weights.
// --prompt-text runs a byte-level model (text/byte_tokenizer.hpp) and streams the text as it is generated; --score
// measures bits per byte of files in fixed windows (model/score.hpp). --draft decodes speculatively (spec/) and
// reports the mean accepted length and the target forwards per generated token.
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
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
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
  std::optional<std::string> prompt_text;
  std::vector<fs::path> score_files;
  std::optional<std::int64_t> context;  ///< --score's window; 512 when not given
  ngemb::generation_options generation;
  unsigned threads = 0;
  std::optional<std::string> draft;               ///< mtp, lookup, ngram or model:DIR
  int draft_tokens = 3;                           ///< k
  std::optional<float> early_reject;              ///< the threshold P of early rejection
  std::optional<fs::path> draft_model;            ///< DIR of --draft model:DIR
};

/// The drafts per step the CLI allows (the loaded models' max_draft).
constexpr int max_draft_tokens = 16;

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
                  {"--checkpoint", "--save", "--prompt", "--prompt-text", "--score", "--context", "--max-new-tokens",
                   "--temperature", "--top-k", "--top-p", "--seed", "--threads", "--draft", "--draft-tokens",
                   "--early-reject"},
                  parsed.help, [&](std::string_view option, std::string_view value) {
                    if (option == "--checkpoint") {
                      parsed.checkpoint = std::filesystem::path(value);
                    } else if (option == "--save") {
                      parsed.save = std::filesystem::path(value);
                    } else if (option == "--prompt") {
                      parsed.prompts.push_back(parse_prompt(value));
                    } else if (option == "--prompt-text") {
                      if (parsed.prompt_text) {
                        throw bad_input("--prompt-text given twice; text mode runs one prompt");
                      }
                      parsed.prompt_text = std::string(value);
                    } else if (option == "--score") {
                      parsed.score_files.emplace_back(value);
                    } else if (option == "--context") {
                      parsed.context = parse_option<std::int64_t>(option, value);
                      if (*parsed.context < 1) {
                        throw bad_input("--context must be >= 1, got " + std::string(value));
                      }
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
                    } else if (option == "--draft") {
                      const std::string name(value);
                      if (name.starts_with("model:") && name.size() > 6) {
                        parsed.draft_model = fs::path(name.substr(6));
                      } else if (name != "mtp" && name != "lookup" && name != "ngram") {
                        throw bad_input("--draft must be mtp, lookup, ngram or model:DIR, got " +
                                        ngemb_examples::quoted(name));
                      }
                      parsed.draft = name;
                    } else if (option == "--draft-tokens") {
                      parsed.draft_tokens = parse_option<int>(option, value);
                      if (parsed.draft_tokens < 1 || parsed.draft_tokens > max_draft_tokens) {
                        throw bad_input("--draft-tokens must be in [1, " + std::to_string(max_draft_tokens) +
                                        "], got " + std::string(value));
                      }
                    } else if (option == "--early-reject") {
                      parsed.early_reject = parse_option<float>(option, value);
                      if (!(*parsed.early_reject > 0.0f && *parsed.early_reject < 1.0f)) {
                        throw bad_input("--early-reject must be a probability in (0, 1), got " + std::string(value));
                      }
                    } else {
                      parsed.threads = parse_option<unsigned>(option, value);
                    }
                  });
  if (parsed.checkpoint && parsed.save) {
    throw bad_input("--save writes the generated model; with --checkpoint there is none");
  }
  if (parsed.prompt_text && !parsed.prompts.empty()) {
    throw bad_input("--prompt-text and --prompt are exclusive (text or token ids)");
  }
  if (!parsed.score_files.empty() && (parsed.prompt_text || !parsed.prompts.empty())) {
    throw bad_input("--score scores files; it takes no --prompt or --prompt-text");
  }
  if (parsed.context && parsed.score_files.empty()) {
    throw bad_input("--context is the window of --score; give --score FILE");
  }
  if (parsed.draft && !parsed.score_files.empty()) {
    throw bad_input("--draft decodes speculatively; --score runs no decoding");
  }
  if (parsed.early_reject && !parsed.draft) {
    throw bad_input("--early-reject filters the drafts of --draft; give --draft");
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
      "       generate [--checkpoint DIR] --prompt-text TEXT [--max-new-tokens N] [sampling options]\n"
      "       generate [--checkpoint DIR] --score FILE [--score FILE]... [--context W]\n"
      "       generate ... --draft mtp|lookup|ngram|model:DIR [--draft-tokens K] [--early-reject P]\n"
      "With --checkpoint DIR: runs the checkpoint as the layout config.json's model_type names\n"
      "(longcat_flash_ngram, longcat_flash, or none for the demo layout).\n"
      "Without --checkpoint: builds a small LongCat-shaped model from a fixed seed, saves it to a temporary\n"
      "folder (or --save DIR, a new or empty folder) and loads it back. Greedy unless --temperature > 0. Each\n"
      "--prompt adds a sequence (at most 16).\n"
      "--prompt-text TEXT: a byte-level model (vocab_size >= 259: byte b is token b, then BOS, EOS, PAD) continues\n"
      "TEXT (BOS first); the text is printed as it is generated, invalid UTF-8 shown as U+FFFD, until\n"
      "--max-new-tokens or the config's eos_token_id.\n"
      "--score FILE: bits per byte of the files under a byte-level model, in windows of W tokens (--context,\n"
      "default 512, at most max_position_embeddings), each an independent sequence: a file's bytes follow BOS, and\n"
      "every byte is predicted once.\n"
      "--draft: speculative decoding, K drafts per step (default 3, at most 16) verified in one forward: mtp (the\n"
      "checkpoint's MTP module), lookup (prompt lookup, no weights), ngram (the n-gram embedding alone through the\n"
      "final norm and lm_head) or model:DIR (another checkpoint as the draft model). --early-reject P cuts each\n"
      "chain before the first draft whose n-gram-embedding probability is below P. Greedy output is the same as\n"
      "without --draft; sampled output has the same distribution.");
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

/// The status of `path`, which an option (`what`) names and needs to exist; bad_input saying why otherwise.
fs::file_status existing_status(const fs::path& path, const std::string& what) {
  std::error_code failure;
  const fs::file_status status = fs::status(path, failure);
  if (status.type() == fs::file_type::not_found) {
    throw bad_input(what + ": no such file or directory");
  }
  if (failure) {
    throw bad_input(what + ": " + reason(failure));
  }
  return status;
}

/// A checkpoint folder an option (`what`) names holds config.json; bad_input saying what is missing otherwise.
void check_checkpoint_folder(const fs::path& folder, const std::string& what) {
  if (!fs::is_directory(existing_status(folder, what))) {
    throw bad_input(what + ": not a folder (a checkpoint is a folder with config.json and .safetensors files)");
  }
  std::error_code failure;
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

/// --prompt-text and --score read bytes as tokens: bad_input unless the vocabulary holds the byte tokenizer's.
void check_byte_vocabulary(const char* option, const ngemb::model_config& config, const std::string& source) {
  if (config.vocab_size() < ngemb::byte_tokenizer::vocab_size) {
    throw bad_input(std::string(option) + " needs a byte-level model: vocab_size = " +
                    std::to_string(config.vocab_size()) + " of " + source + " is below " +
                    std::to_string(ngemb::byte_tokenizer::vocab_size) + " (256 bytes, BOS, EOS, PAD)");
  }
}

/// The bytes of a --score file; bad_input naming it when it cannot be read.
std::string read_score_file(const fs::path& file) {
  const std::string what = "--score " + file.string();
  if (fs::is_directory(existing_status(file, what))) {
    throw bad_input(what + ": a folder, not a file");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw bad_input(what + ": cannot open: " + reason(std::error_code(errno, std::generic_category())));
  }
  std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) {
    throw bad_input(what + ": cannot read: " + reason(std::error_code(errno, std::generic_category())));
  }
  return bytes;
}

void print_speeds(const ngemb::generation_result& result) {
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
}

/// Token mode: the progress on stderr, then each prompt and its new token ids.
template <class Model>
ngemb::generation_result generate_tokens(const ngemb::host_policy& policy, Model& lm,
                                         const std::vector<std::vector<std::int32_t>>& prompts,
                                         ngemb::generation_options options) {
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
  print_speeds(result);
  return result;
}

/// Text mode: the prompt `text` (whose tokens are `prompt`), then the new bytes as each step produces them, through one
/// utf8_stream (a prompt that ends inside a character is completed by the generated bytes); it stops at the config's
/// EOS.
template <class Model>
ngemb::generation_result generate_text(const ngemb::host_policy& policy, Model& lm, const std::string& text,
                                       const std::vector<std::int32_t>& prompt, ngemb::generation_options options) {
  options.profile = true;
  options.stop_token = lm.config().ngram.eos_token
                           ? std::optional<std::int32_t>(static_cast<std::int32_t>(*lm.config().ngram.eos_token))
                           : std::nullopt;
  ngemb::utf8_stream display;
  std::fputs(display.push(text).c_str(), stdout);
  std::fflush(stdout);
  const auto result = ngemb::generate(
      policy, lm, {prompt}, options, [&](const ngemb::generation_progress& progress) {
        for (const ngemb::generated_token& emitted : progress.new_tokens) {
          if (emitted.token < ngemb::byte_tokenizer::vocab_size) {  // a larger vocabulary's other ids are no text
            std::fputs(display.push(ngemb::byte_tokenizer::decode({&emitted.token, 1})).c_str(), stdout);
          }
        }
        std::fflush(stdout);
      });
  std::printf("%s\n", display.finish().c_str());
  print_speeds(result);
  return result;
}

/// Score mode: one line, bits per byte over all files (nats and bytes summed over the files).
template <class Model>
void score_files(const ngemb::host_policy& policy, Model& lm, const std::vector<std::string>& files,
                 std::int64_t window) {
  double nats = 0.0;
  std::size_t bytes = 0;
  for (const std::string& file : files) {
    const std::vector<std::int32_t> tokens = ngemb::byte_tokenizer::encode(file);
    const ngemb::score_result result =
        ngemb::score(policy, lm, ngemb::view<const std::int32_t>(tokens), {.window = window});
    nats += result.nats;
    bytes += result.predicted;
  }
  std::printf("bits per byte: %.6f (%zu bytes, %zu files, %lld-token windows)\n",
              nats / (static_cast<double>(bytes) * std::log(2.0)), bytes, files.size(),
              static_cast<long long>(window));
}

/// A draft model loaded from --draft model:DIR with the drafter over it, behind one interface: the draft's layout
/// comes from its own config.json, whatever the target's.
struct owned_draft_model {
  virtual ~owned_draft_model() = default;
  virtual ngemb::drafter_ref drafter() = 0;
};

template <class Draft>
struct draft_model_of final : owned_draft_model {
  Draft model;
  ngemb::draft_model_drafter<Draft> drafting;
  draft_model_of(const ngemb::host_policy& policy, const fs::path& folder, int draft_tokens)
      : model(Draft::load(policy, folder,
                          {.max_sequences = max_prompts, .max_positions = 0, .max_draft = draft_tokens})),
        drafting(policy, model) {}
  ngemb::drafter_ref drafter() override { return drafting; }
};

std::unique_ptr<owned_draft_model> load_draft_model(const ngemb::host_policy& policy, const fs::path& folder,
                                                    int draft_tokens) {
  check_checkpoint_folder(folder, "--draft model:" + folder.string());
  const std::string type = ngemb::read_model_config(folder).model_type;
  if (type == "longcat_flash_ngram") {
    return std::make_unique<draft_model_of<ngemb::presets::longcat_flash_lite<ngemb::host_policy>::model>>(
        policy, folder, draft_tokens);
  }
  if (type == "longcat_flash") {
    return std::make_unique<draft_model_of<ngemb::presets::longcat_flash<ngemb::host_policy>::model>>(policy, folder,
                                                                                                   draft_tokens);
  }
  return std::make_unique<draft_model_of<model>>(policy, folder, draft_tokens);
}

/// The MTP drafter of a layout with an MTP part; nothing for one without (load_and_run refuses --draft mtp there).
struct no_mtp_drafter {};
template <class Target>
using mtp_drafter_of = std::conditional_t<Target::can_hold_mtp, ngemb::mtp_drafter<Target>, no_mtp_drafter>;

/// What --draft names, for the target model `Target`, with --early-reject's filter over it when asked.
template <class Target>
struct cli_drafter {
  std::optional<ngemb::prompt_lookup_drafter> lookup;
  std::optional<ngemb::ngram_embedding_drafter<Target>> ngram;
  std::optional<mtp_drafter_of<Target>> mtp;
  std::unique_ptr<owned_draft_model> draft_model;
  std::optional<ngemb::early_rejection<ngemb::drafter_ref, Target>> filter;
  ngemb::drafter_ref inner;
  ngemb::drafter_ref used;

  cli_drafter(const ngemb::host_policy& policy, Target& target, const arguments& args) {
    if (*args.draft == "lookup") {
      inner = lookup.emplace(target.vocab_size());
    } else if (*args.draft == "ngram") {
      inner = ngram.emplace(policy, target);
    } else if (*args.draft == "mtp") {
      if constexpr (Target::can_hold_mtp) {
        inner = mtp.emplace(policy, target);
      }
    } else {
      draft_model = load_draft_model(policy, *args.draft_model, args.draft_tokens);
      inner = draft_model->drafter();
    }
    used = args.early_reject ? ngemb::drafter_ref(filter.emplace(policy, target, inner, *args.early_reject)) : inner;
  }
  cli_drafter(const cli_drafter&) = delete;
  cli_drafter& operator=(const cli_drafter&) = delete;

  /// One line on what speculation did.
  void report(const ngemb::generation_result& result, const arguments& args) const {
    const ngemb::speculation_stats& stats = result.speculation;
    const std::size_t decoded = stats.generated_tokens - stats.prompts;  // the prefill emits each prompt's first
    std::printf("speculative (--draft %s, %d drafts per step): mean accepted length %.2f, target forwards per token "
                "%.3f, drafts accepted %zu of %zu, %zu tokens decoded at %.0f tokens/s",
                args.draft->c_str(), args.draft_tokens, stats.mean_accepted_length(),
                stats.target_forwards_per_token(), stats.accepted_tokens, stats.drafted_tokens, decoded,
                result.decode_seconds > 0.0 ? static_cast<double>(decoded) / result.decode_seconds : 0.0);
    if (filter) {
      const auto counts = filter->counts();
      std::printf(", early rejection below %.3g cut %llu of %llu drafts", static_cast<double>(*args.early_reject),
                  static_cast<unsigned long long>(counts.cut), static_cast<unsigned long long>(counts.proposed));
    }
    std::printf("\n");
  }
};

/// What a run does once the model is loaded: generate from token ids or text, or score files.
struct work {
  std::vector<std::vector<std::int32_t>> prompts;
  std::vector<std::string> score_files;  ///< the files' bytes
  std::int64_t window = 512;
};

/// Loads `folder` as a Model and runs `job`. Score mode prints only its result line on stdout: the load goes to
/// stderr there.
template <class Model>
int load_and_run(const ngemb::host_policy& policy, const fs::path& folder, const work& job, const arguments& args) {
  const auto load_start = std::chrono::steady_clock::now();
  if (args.draft == std::string("mtp") && !Model::can_hold_mtp) {
    throw bad_input("--draft mtp needs a model with an MTP module (model_type longcat_flash_ngram or longcat_flash); "
                    "this one's layout has none");
  }
  Model lm = Model::load(policy, folder,
                         {.max_sequences = max_prompts,
                          .max_positions = 0,
                          .max_draft = args.draft ? args.draft_tokens : 0},
                         {.mtp = args.draft == std::string("mtp")});
  std::fprintf(job.score_files.empty() ? stdout : stderr, "loaded %s in %.2f s\n", folder.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());
  if (!job.score_files.empty()) {
    score_files(policy, lm, job.score_files, job.window);
    return 0;
  }
  std::optional<cli_drafter<Model>> drafter;
  ngemb::generation_options options = args.generation;
  if (args.draft) {
    drafter.emplace(policy, lm, args);
    options.speculative = {.drafter = drafter->used, .draft_tokens = args.draft_tokens};
  }
  const ngemb::generation_result result =
      args.prompt_text ? generate_text(policy, lm, *args.prompt_text, job.prompts.front(), options)
                       : generate_tokens(policy, lm, job.prompts, options);
  if (drafter) {
    drafter->report(result, args);
  }
  return 0;
}

int run(const arguments& args) {
  const ngemb::host_policy policy{args.threads};
  constexpr std::uint64_t seed = 2026;
  // Everything the options name is checked against the config before the model is built or its weights are read.
  if (args.checkpoint) {
    check_checkpoint_folder(*args.checkpoint, "--checkpoint " + args.checkpoint->string());
  } else if (args.save) {
    check_save_folder(*args.save);
  }
  const ngemb::model_config config = args.checkpoint ? ngemb::read_model_config(*args.checkpoint) : demo_config();
  const std::string config_source = args.checkpoint ? (*args.checkpoint / "config.json").string() : "the demo model";
  work job;
  if (!args.score_files.empty()) {
    check_byte_vocabulary("--score", config, config_source);
    job.window = args.context.value_or(512);
    if (job.window > config.max_position_embeddings) {
      throw bad_input("--context " + std::to_string(job.window) + " is more than max_position_embeddings = " +
                      std::to_string(config.max_position_embeddings) + " of " + config_source);
    }
    std::size_t bytes = 0;
    for (const fs::path& file : args.score_files) {
      job.score_files.push_back(read_score_file(file));
      bytes += job.score_files.back().size();
    }
    if (bytes == 0) {
      throw bad_input("--score: the files hold no bytes to score");
    }
  } else if (args.prompt_text) {
    check_byte_vocabulary("--prompt-text", config, config_source);
    job.prompts.push_back(ngemb::byte_tokenizer::encode(*args.prompt_text));
  } else {
    job.prompts = args.prompts;
  }
  if (job.prompts.empty() && job.score_files.empty()) {  // three prompts of different lengths: a ragged prefill
    std::mt19937 engine(static_cast<std::uint32_t>(seed));
    const auto last = static_cast<std::int32_t>(config.vocab_size() - 1);
    std::uniform_int_distribution<std::int32_t> token(std::min(3, last), last);
    for (const int length : {48, 16, 32}) {
      job.prompts.emplace_back();
      for (int i = 0; i < length; ++i) {
        job.prompts.back().push_back(token(engine));
      }
    }
  }
  check_prompts(job.prompts, args.generation.max_new_tokens, config, config_source);

  std::optional<scratch_folder> scratch;
  fs::path folder;
  if (args.checkpoint) {
    folder = *args.checkpoint;
  } else {
    const auto built = std::chrono::steady_clock::now();
    const model generated = random_model(policy, config, seed);
    folder = args.save ? *args.save : scratch.emplace().path / "checkpoint";
    generated.save(policy, folder, {.max_shard_bytes = std::size_t{32} << 20});
    std::fprintf(job.score_files.empty() ? stdout : stderr,
                 "built a LongCat-shaped model from seed %llu: %d shortcut layers, H=%lld, %d routed + %d zero experts "
                 "(top %d), n-gram embedding N=%d K=%d over V=%lld\nsaved it to %s (%.1f MB) in %.2f s\n",
                 static_cast<unsigned long long>(seed), config.num_layers,
                 static_cast<long long>(config.hidden_size()), config.n_routed_experts, config.zero_expert_num,
                 config.moe_topk, config.ngram.max_order, config.ngram.splits,
                 static_cast<long long>(config.vocab_size()), folder.c_str(),
                 static_cast<double>(folder_bytes(folder)) / 1e6,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - built).count());
  }
  // A checkpoint runs as the layout its config.json names; the demo layout has no model_type.
  if (config.model_type == "longcat_flash_ngram") {
    return load_and_run<ngemb::presets::longcat_flash_lite<ngemb::host_policy>::model>(policy, folder, job, args);
  }
  if (config.model_type == "longcat_flash") {
    return load_and_run<ngemb::presets::longcat_flash<ngemb::host_policy>::model>(policy, folder, job, args);
  }
  return load_and_run<model>(policy, folder, job, args);
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
