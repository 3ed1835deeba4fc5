// device_quickstart: ngemb on a CUDA stream. Hashes a ragged batch into n-gram ids, embeds it, and runs a small
// LongCat-shaped model over it, every part in device memory and every operation queued on one stream of the
// caller's. Both are loaded from a checkpoint folder: the one given, or else the demo model (examples/demo_model.hpp,
// random weights) saved to a temporary folder. Build it with the ngemb::cuda target; without a GPU it says so and
// exits 77 (ctest: skipped).
//
//   device_quickstart [CHECKPOINT]
#include <cuda_runtime_api.h>
#include <stdlib.h>  // mkdtemp (POSIX)

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "demo_model.hpp"
#include "ngemb/ngemb.hpp"
#include "ngemb/policy/device_policy.cuh"

namespace {

using device_model = ngemb_examples::demo_model<ngemb::device_policy>;

// [readme:device]
/// Ids and embeddings of a ragged batch on the caller's stream: tables, inputs and outputs in device memory.
std::vector<float> hash_and_embed(const ngemb::device_policy& policy, const std::filesystem::path& checkpoint,
                                  const std::vector<std::int32_t>& tokens, const std::vector<std::int64_t>& offsets) {
  const auto device_tokens = ngemb::upload(policy, ngemb::view<const std::int32_t>(tokens));
  const auto device_offsets = ngemb::upload(policy, ngemb::view<const std::int64_t>(offsets));
  const ngemb::ragged_view<const std::int32_t> batch(device_tokens.as_view(), device_offsets.as_view());

  const ngemb::longcat_hash hasher(ngemb::read_ngram_config(checkpoint));
  ngemb::device_buffer<std::int64_t> ids(policy, tokens.size() * hasher.num_tables());
  ngemb::hash_tokens(policy, hasher, batch, ids.as_view());  // K*(N-1) ids per token, table order

  using embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<ngemb::bf16, ngemb::device_policy>>;
  auto embed = embedding::load(policy, checkpoint);  // tables and projections copied to the device
  ngemb::device_buffer<float> out(policy, tokens.size() * embed.output_width());
  embed.forward(policy, batch, out.as_view());  // [tokens x H]

  std::vector<float> host(out.size());
  ngemb::copy_to_host(policy, ngemb::view<const float>(out.as_view()), ngemb::view<float>(host));  // synchronises
  return host;
}
// [readme:end]

/// A new empty folder for the demo checkpoint (mkdtemp: never a name planted beforehand).
std::filesystem::path temporary_folder() {
  std::string pattern = (std::filesystem::temp_directory_path() / "ngemb_device_quickstart_XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    throw ngemb::io_error("cannot create " + pattern + ": " + std::generic_category().message(errno));
  }
  return pattern;
}

/// One prefill of every sequence through the whole model; returns each sequence's most likely next token.
std::vector<std::int32_t> next_tokens(const ngemb::device_policy& policy, device_model& model,
                                      const std::vector<std::int32_t>& tokens,
                                      const std::vector<std::int64_t>& offsets) {
  const std::size_t sequences = offsets.size() - 1;
  std::vector<device_model::sequence_id> ids;
  for (std::size_t s = 0; s < sequences; ++s) {
    ids.push_back(model.start_sequence());
  }
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size());
  ngemb::device_buffer<float> logits(policy, sequences * vocab);
  model.forward(policy, ngemb::view<const device_model::sequence_id>(ids),
                ngemb::ragged_view<const std::int32_t>(tokens, offsets), logits.as_view(),
                {.logits = ngemb::logits_for::last_token});
  std::vector<float> host(logits.size());
  ngemb::copy_to_host(policy, ngemb::view<const float>(logits.as_view()), ngemb::view<float>(host));
  std::vector<std::int32_t> next;
  for (std::size_t s = 0; s < sequences; ++s) {
    const auto row = host.begin() + static_cast<std::ptrdiff_t>(s * vocab);
    next.push_back(static_cast<std::int32_t>(std::max_element(row, row + static_cast<std::ptrdiff_t>(vocab)) - row));
    model.end_sequence(ids[s]);
  }
  return next;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2) {
    std::fprintf(stderr, "usage: device_quickstart [CHECKPOINT]\n");
    return 2;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("device_quickstart: no CUDA device; it needs a GPU to run (it was built, so the code compiles)\n");
    return 77;
  }
  cudaStream_t stream = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess) {
    std::fprintf(stderr, "device_quickstart: cannot create a CUDA stream\n");
    return 1;
  }
  int status = 0;
  std::filesystem::path demo_folder;
  try {
    std::filesystem::path checkpoint;
    if (argc == 2) {
      checkpoint = argv[1];
    } else {
      demo_folder = temporary_folder();
      checkpoint = demo_folder;
      const ngemb::host_policy host{};
      ngemb_examples::random_model(host, ngemb_examples::demo_config(), /*seed=*/1).save(host, checkpoint);
    }
    const ngemb::device_policy policy{stream};

    // A ragged batch: tokens of all sequences back to back, sequence s at [offsets[s], offsets[s+1]).
    const std::vector<std::int32_t> tokens = {15, 2, 907, 31, 77, 5, 6};
    const std::vector<std::int64_t> offsets = {0, 3, 5, 7};
    const std::vector<float> embeddings = hash_and_embed(policy, checkpoint, tokens, offsets);
    const std::size_t hidden = embeddings.size() / tokens.size();
    std::printf("embedded %zu tokens of %zu sequences: [%zu x %zu], e[0][0..2] = %.4f %.4f %.4f\n", tokens.size(),
                offsets.size() - 1, tokens.size(), hidden, embeddings[0], embeddings[1], embeddings[2]);

    device_model model = device_model::load(policy, checkpoint, {.max_sequences = 4, .max_positions = 64});
    const std::vector<std::int32_t> next = next_tokens(policy, model, tokens, offsets);
    for (std::size_t s = 0; s < next.size(); ++s) {
      std::printf("sequence %zu: next token %d\n", s, next[s]);
    }
  } catch (const std::exception& failure) {
    std::fprintf(stderr, "device_quickstart: %s\n", failure.what());
    status = 1;
  }
  if (!demo_folder.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(demo_folder, ignored);
  }
  cudaStreamDestroy(stream);
  return status;
}
