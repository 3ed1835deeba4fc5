// Writes the seed of the checkpoint harness: a tiny model of the demo type (examples/demo_model.hpp) saved by the
// library itself, as the harness reads it: config.json, a NUL byte, model.safetensors.
//
//   cmake --build build-fuzz --target fuzz_make_checkpoint_seed
//   ./build-fuzz/tests/fuzz/fuzz_make_checkpoint_seed tests/fuzz/corpus/checkpoint/tiny_shortcut_model
//
// make_seeds.py derives the other checkpoint seeds (a pre-norm model, near-valid variants) from this one.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "demo_model.hpp"
#include "temp_folder.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT\n", argv[0]);
    return 2;
  }
  ngemb::model_config config;
  config.ngram.vocab_size = 16;
  config.ngram.hidden_size = 8;
  config.ngram.max_order = 3;
  config.ngram.splits = 2;
  config.ngram.m_base = 5;
  config.ngram.eos_token = 2;
  config.num_layers = 1;
  config.num_attention_heads = 2;
  config.num_key_value_heads = 1;
  config.head_dim = 4;
  config.ffn_hidden_size = 8;
  config.expert_ffn_hidden_size = 4;
  config.n_routed_experts = 2;
  config.zero_expert_num = 1;
  config.moe_topk = 1;
  config.routed_scaling_factor = 1.5;
  config.max_position_embeddings = 16;

  const ngemb::host_policy policy{1};
  const ngemb_test::temp_folder scratch;
  const auto folder = scratch / "model";
  ngemb_examples::random_model(policy, config, 2026).save(policy, folder);
  const auto read = [](const std::filesystem::path& path) {
    std::ifstream stream(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>());
  };
  std::ofstream out(argv[1], std::ios::binary | std::ios::trunc);
  out << read(folder / "config.json") << '\0' << read(folder / "model.safetensors");
  return out ? 0 : 1;
}
