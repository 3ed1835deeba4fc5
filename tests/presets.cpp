// The presets (include/ngemb/presets/) against transformers itself: tiny LongcatFlashForCausalLM checkpoints saved
// by save_pretrained (tests/reference/longcat_flash_reference.py) load unchanged as presets::longcat_flash (plain
// embedding) and presets::longcat_flash_lite (n-gram embedding) and give transformers' logits through prefill,
// chunked prefill and decode, and its greedy tokens; a broken copy of such a checkpoint is a typed error naming
// the tensor or field.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "longcat_flash_golden.hpp"
#include "tiny_longcat_golden.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/model/score.hpp"
#include "ngemb/presets/longcat.hpp"
#include "ngemb/text/byte_tokenizer.hpp"
#include "temp_folder.hpp"

namespace {

// The goldens hold fp32 weights throughout.
using plain_lm = ngemb::presets::longcat_flash<ngemb::host_policy, float>::model;
using ngram_lm = ngemb::presets::longcat_flash_lite<ngemb::host_policy, float>::model;
// The shipped model as users run it: bf16 tables and experts (its file holds bf16 throughout).
using shipped_lm = ngemb::presets::longcat_flash_lite<ngemb::host_policy>::model;
static_assert(ngemb::causal_model<plain_lm> && ngemb::causal_model<ngram_lm>);
using ngemb_test::check_against_transformers;
using ngemb_test::longcat_flash_dir;
using ngemb_test::temp_folder;
const ngemb::host_policy host;

/// `source`'s tensors (raw bytes) without `drop`, with `replace` applied (a name the source lacks is added), into
/// `folder`, and its config.json changed by `edit`.
void copy_checkpoint(const std::filesystem::path& source, const std::filesystem::path& folder,
                     const std::set<std::string>& drop, const std::vector<ngemb::tensor_to_write>& replace = {},
                     const std::function<void(nlohmann::json&)>& edit = {}) {
  const ngemb::safetensors_checkpoint checkpoint(source);
  std::vector<ngemb::tensor_to_write> tensors;
  for (const std::string& name : checkpoint.names()) {
    const auto replaced = std::find_if(replace.begin(), replace.end(),
                                       [&](const ngemb::tensor_to_write& tensor) { return tensor.name == name; });
    if (replaced != replace.end()) {
      tensors.push_back(*replaced);
    } else if (!drop.contains(name)) {
      const ngemb::tensor_info& info = checkpoint.info(name);
      tensors.push_back({name, info.dtype, info.shape, checkpoint.file_of(name).bytes(name)});
    }
  }
  for (const ngemb::tensor_to_write& tensor : replace) {
    if (!checkpoint.contains(tensor.name)) {
      tensors.push_back(tensor);
    }
  }
  ngemb::write_safetensors_checkpoint(folder, tensors, std::size_t{1} << 20);
  std::ifstream in(source / "config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  if (edit) {
    edit(config);
  }
  std::ofstream(folder / "config.json", std::ios::trunc) << config.dump(2);
}

}  // namespace

TEST_CASE("presets::longcat_flash matches transformers: q LoRA and default RoPE, zero experts") {
  check_against_transformers<plain_lm>(host, "plain");
}

TEST_CASE("presets::longcat_flash matches transformers: q_lora_rank null (a single q_proj)") {
  check_against_transformers<plain_lm>(host, "q_proj");
}

TEST_CASE("presets::longcat_flash matches transformers: YaRN in rope_parameters, norm_topk_prob") {
  check_against_transformers<plain_lm>(host, "yarn");
}

TEST_CASE("presets::longcat_flash matches transformers: YaRN in the old rope_scaling spelling") {
  check_against_transformers<plain_lm>(host, "yarn_rope_scaling");
}

TEST_CASE("presets::longcat_flash matches transformers: attention and router biases") {
  check_against_transformers<plain_lm>(host, "attention_bias");
}

TEST_CASE("presets::longcat_flash_lite matches transformers fed the n-gram embedding: N=3, K=2") {
  check_against_transformers<ngram_lm>(host, "ngram_n3k2");
}

TEST_CASE("presets::longcat_flash_lite matches transformers fed the n-gram embedding: N=4, K=3, YaRN") {
  check_against_transformers<ngram_lm>(host, "ngram_n4k3");
}

TEST_CASE("presets::longcat_flash_lite runs the shipped tiny-longcat as PyTorch does: logits and greedy bytes") {
  ngemb_test::check_tiny_longcat<shipped_lm>(host);
}

TEST_CASE("presets::longcat_flash_lite with bf16 W_cat, dense FFNs and lm_head runs tiny-longcat as PyTorch does") {
  // Its file holds bf16 throughout, so bf16 dense weights lose nothing: the same goldens, the same tolerance.
  ngemb_test::check_tiny_longcat<ngemb::presets::longcat_flash_lite<ngemb::host_policy, ngemb::bf16, ngemb::bf16>::model>(host);
}

TEST_CASE("presets::longcat_flash_lite loads tiny-longcat's MTP module when asked") {
  CHECK_FALSE(shipped_lm::load(host, ngemb_test::tiny_longcat_model).has_mtp());
  CHECK(shipped_lm::load(host, ngemb_test::tiny_longcat_model, {}, {.mtp = true}).has_mtp());
}

// ~294k tokens: seconds optimised, far too long unoptimised under the sanitizers (the logits test above covers the
// same forward there).
TEST_CASE("presets: tiny-longcat's validation bits per byte equal the training script's" *
          doctest::skip(NGEMB_TEST_SANITIZED != 0)) {
  std::ifstream metrics_file(ngemb_test::tiny_longcat_model / "metrics.json");
  const double expected = nlohmann::json::parse(metrics_file).at("validation_bpb").get<double>();
  std::ifstream text_file(ngemb_test::tiny_longcat_goldens / "validation.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(text_file)), std::istreambuf_iterator<char>());
  REQUIRE(text.size() > 100000);
  auto model = shipped_lm::load(host, ngemb_test::tiny_longcat_model);
  const auto tokens = ngemb::byte_tokenizer::encode(text);
  const ngemb::score_result result = ngemb::score(host, model, ngemb::view<const std::int32_t>(tokens));
  REQUIRE(result.predicted == text.size());
  const double bits_per_byte = result.nats / (static_cast<double>(result.predicted) * std::log(2.0));
  INFO("ngemb " << bits_per_byte << ", train_tiny.py " << expected);
  CHECK(std::abs(bits_per_byte - expected) <= 0.01);
}

TEST_CASE("presets: the goldens are the cases the reference script writes") {
  std::set<std::string> folders;
  for (const auto& entry : std::filesystem::directory_iterator(longcat_flash_dir)) {
    folders.insert(entry.path().filename().string());
  }
  std::set<std::string> cases(ngemb_test::plain_longcat_cases.begin(), ngemb_test::plain_longcat_cases.end());
  cases.insert(ngemb_test::ngram_longcat_cases.begin(), ngemb_test::ngram_longcat_cases.end());
  CHECK(folders == cases);
}

TEST_CASE("presets: a broken LongCat checkpoint is a typed error naming the tensor or field") {
  const auto plain = longcat_flash_dir / "plain";
  const auto q_proj = longcat_flash_dir / "q_proj";
  const temp_folder folder;
  const auto load_plain = [&] { static_cast<void>(plain_lm::load(host, folder.path())); };

  SUBCASE("a missing MLA tensor") {
    for (const std::string name : {"model.layers.1.self_attn.0.kv_b_proj.weight",
                                   "model.layers.0.self_attn.1.kv_a_layernorm.weight",
                                   "model.layers.0.self_attn.0.q_a_layernorm.weight"}) {
      CAPTURE(name);
      const temp_folder copy;
      copy_checkpoint(plain, copy.path(), {name});
      CHECK_THROWS_WITH_AS(plain_lm::load(host, copy.path()), doctest::Contains(name.c_str()), ngemb::format_error);
    }
    const std::string missing = "model.layers.1.self_attn.1.q_proj.weight";
    copy_checkpoint(q_proj, folder.path(), {missing});
    CHECK_THROWS_WITH_AS(load_plain(), doctest::Contains(missing.c_str()), ngemb::format_error);
  }
  SUBCASE("an MLA tensor of the wrong shape") {
    // q_b_proj is [heads * qk_head_dim, q_lora_rank] = [56, 10]; one column more
    const std::string name = "model.layers.0.self_attn.1.q_b_proj.weight";
    const std::vector<float> values(56 * 11, 0.25f);
    copy_checkpoint(plain, folder.path(), {},
                    {ngemb::tensor_to_write::of(name, {56, 11}, ngemb::view<const float>(values))});
    CHECK_THROWS_WITH_AS(load_plain(), doctest::Contains(name.c_str()), ngemb::format_error);
  }
  SUBCASE("kv_b_proj sized for another v_head_dim") {
    const std::string name = "model.layers.1.self_attn.1.kv_b_proj.weight";  // [heads * (nope + v), kv_lora]
    const std::vector<float> values(4 * (6 + 5) * 12, 0.25f);
    copy_checkpoint(plain, folder.path(), {},
                    {ngemb::tensor_to_write::of(name, {44, 12}, ngemb::view<const float>(values))});
    CHECK_THROWS_WITH_AS(load_plain(), doctest::Contains(name.c_str()), ngemb::format_error);
  }
  SUBCASE("a q LoRA checkpoint whose config says q_lora_rank null") {
    // Either the missing q_proj or the then unexpected q_a_proj/q_b_proj/q_a_layernorm tensors are named.
    copy_checkpoint(plain, folder.path(), {}, {}, [](nlohmann::json& config) { config["q_lora_rank"] = nullptr; });
    CHECK_THROWS_WITH_AS(load_plain(), doctest::Contains("model.layers.0.self_attn.0.q_"), ngemb::format_error);
  }
  SUBCASE("a config without kv_lora_rank takes transformers' default (512), which the checkpoint contradicts") {
    copy_checkpoint(plain, folder.path(), {}, {}, [](nlohmann::json& config) { config.erase("kv_lora_rank"); });
    CHECK_THROWS_WITH_AS(load_plain(),
                         doctest::Contains("kv_a_proj_with_mqa.weight\" has shape [20, 32], expected [520, 32]"),
                         ngemb::format_error);
  }
  SUBCASE("a config with a kv_lora_rank of the wrong type") {
    copy_checkpoint(plain, folder.path(), {}, {}, [](nlohmann::json& config) { config["kv_lora_rank"] = "wide"; });
    CHECK_THROWS_WITH_AS(load_plain(), doctest::Contains("kv_lora_rank"), ngemb::format_error);
  }
  SUBCASE("an unsupported zero-expert type") {
    copy_checkpoint(plain, folder.path(), {}, {},
                    [](nlohmann::json& config) { config["zero_expert_type"] = "constant"; });
    CHECK_THROWS_WITH_AS(load_plain(), doctest::Contains("zero_expert_type"), ngemb::error);
  }
  SUBCASE("an unsupported RoPE type") {
    copy_checkpoint(plain, folder.path(), {}, {},
                    [](nlohmann::json& config) { config["rope_parameters"]["rope_type"] = "longrope"; });
    CHECK_THROWS_WITH_AS(load_plain(), doctest::Contains("rope_type"), ngemb::error);
  }
  SUBCASE("an n-gram checkpoint without its sub-tables") {
    const std::string name = "model.ngram_embeddings.embedders.3.weight";
    copy_checkpoint(longcat_flash_dir / "ngram_n3k2", folder.path(), {name});
    CHECK_THROWS_WITH_AS(static_cast<void>(ngram_lm::load(host, folder.path())), doctest::Contains(name.c_str()),
                         ngemb::format_error);
  }
  SUBCASE("the plain preset refuses an n-gram checkpoint, the n-gram preset a plain one") {
    CHECK_THROWS_AS(static_cast<void>(plain_lm::load(host, longcat_flash_dir / "ngram_n3k2")), ngemb::error);
    CHECK_THROWS_AS(static_cast<void>(ngram_lm::load(host, plain)), ngemb::error);
  }
}

TEST_CASE("presets::longcat_flash_lite holds LongCat's MTP module with MLA: ignored by default, loaded, saved") {
  // The goldens carry no MTP (transformers has none): give the n-gram case one under the released names, with the
  // first layer's MLA, norms and dense FFN as its weights and a random eh_proj, so every MLA tensor name is used.
  const std::filesystem::path source = longcat_flash_dir / "ngram_n4k3";
  const ngemb::safetensors_checkpoint checkpoint(source);
  const ngemb::model_config config = ngemb::read_model_config(source);
  const std::int64_t hidden = config.hidden_size();
  std::vector<ngemb::tensor_to_write> mtp;
  const auto copy_as = [&](const std::string& from, const std::string& to) {
    const ngemb::tensor_info& info = checkpoint.info(from);
    mtp.push_back({to, info.dtype, info.shape, checkpoint.file_of(from).bytes(from)});
  };
  const std::string layer = "model.layers.0.";
  const std::string module = "model.mtp.layers.0.";
  copy_as("model.embed_tokens.weight", "model.mtp.embed_tokens.weight");
  copy_as(layer + "input_layernorm.0.weight", module + "enorm.m.weight");
  copy_as(layer + "input_layernorm.1.weight", module + "hnorm.m.weight");
  copy_as(layer + "post_attention_layernorm.0.weight", module + "input_layernorm.weight");
  copy_as(layer + "post_attention_layernorm.1.weight", module + "post_attention_layernorm.weight");
  copy_as("model.norm.weight", "model.mtp.norm.weight");
  for (const std::string& name : checkpoint.names()) {
    if (name.starts_with(layer + "self_attn.0.")) {
      copy_as(name, module + "self_attn." + name.substr((layer + "self_attn.0.").size()));
    } else if (name.starts_with(layer + "mlps.0.")) {
      copy_as(name, module + "transformer_layer.mlp." + name.substr((layer + "mlps.0.").size()));
    }
  }
  std::vector<float> eh_proj(static_cast<std::size_t>(hidden * 2 * hidden));
  for (std::size_t i = 0; i < eh_proj.size(); ++i) {
    eh_proj[i] = 0.05f * static_cast<float>(static_cast<int>(i * 2654435761u % 201) - 100) / 100.0f;
  }
  mtp.push_back(ngemb::tensor_to_write::of(module + "eh_proj.weight", {hidden, 2 * hidden},
                                           ngemb::view<const float>(eh_proj)));
  const temp_folder with_mtp;
  copy_checkpoint(source, with_mtp.path(), {}, mtp);

  const ngram_lm ignored = ngram_lm::load(host, with_mtp.path());
  CHECK_FALSE(ignored.has_mtp());
  const ngram_lm loaded = ngram_lm::load(host, with_mtp.path(), {}, {.mtp = true});
  REQUIRE(loaded.has_mtp());
  const temp_folder saved;
  loaded.save(host, saved.path() / "model", {.max_shard_bytes = std::size_t{1} << 20});
  const ngemb::safetensors_checkpoint written(saved.path() / "model");
  for (const ngemb::tensor_to_write& tensor : mtp) {
    INFO(tensor.name);
    REQUIRE(written.contains(tensor.name));
    const auto bytes = written.file_of(tensor.name).bytes(tensor.name);
    CHECK(std::equal(bytes.begin(), bytes.end(), tensor.data.begin(), tensor.data.end()));
  }
  CHECK(ngram_lm::load(host, saved.path() / "model", {}, {.mtp = true}).has_mtp());

  SUBCASE("a missing MTP MLA tensor is named when the MTP is asked for") {
    const temp_folder broken;
    copy_checkpoint(with_mtp.path(), broken.path(), {module + "self_attn.kv_b_proj.weight"});
    CHECK_NOTHROW((void)ngram_lm::load(host, broken.path()));
    CHECK_THROWS_WITH_AS((void)ngram_lm::load(host, broken.path(), {}, {.mtp = true}),
                         doctest::Contains("model.mtp.layers.0.self_attn.kv_b_proj.weight"), ngemb::format_error);
  }
}
