// libFuzzer harness: the shard index of a checkpoint (model.safetensors.index.json, io/safetensors_reader.hpp). The input
// is the index text; the checkpoint folder around it is fixed and valid: two shards, a shard in a subfolder, and a
// decoy shard outside the folder. An accepted index must map exactly its weight_map's names, each to the shard it
// names, inside the folder, with the bytes written there.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_common.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"

namespace {

using ngemb_fuzz::expect;
using ngemb_fuzz::library_accepts;

/// One tensor of the fixed shards: its shard (relative to the checkpoint folder) and its values.
struct known_tensor {
  std::string shard;
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

/// "a" is in both numbered shards with different values, so reading it shows which shard the index chose.
const std::vector<known_tensor>& known_tensors() {
  static const std::vector<known_tensor> tensors = {
      {"model-00001-of-00002.safetensors", "a", "F32", {2}, {1.0f, 2.0f}},
      {"model-00001-of-00002.safetensors", "b", "BF16", {2, 2}, {0.5f, -1.0f, 3.0f, 0.0f}},
      {"model-00002-of-00002.safetensors", "a", "F32", {2}, {-3.0f, 4.0f}},
      {"model-00002-of-00002.safetensors", "c", "F16", {3}, {1.0f, 0.25f, -2.0f}},
      {"model-00002-of-00002.safetensors", "empty", "F32", {0, 3}, {}},
      {"sub/inner.safetensors", "e", "F32", {1}, {7.0f}},
      {"../outside.safetensors", "secret", "F32", {1}, {-99.0f}},
  };
  return tensors;
}

/// The fixed files, written once per process.
struct fixture {
  ngemb_fuzz::scratch_folder scratch{"shard_index"};
  std::filesystem::path folder = scratch / "checkpoint";

  fixture() {
    std::filesystem::create_directories(folder / "sub");
    std::map<std::string, std::vector<ngemb::tensor_to_write>> shards;
    static std::vector<std::vector<std::byte>> storage;  // the bytes stay alive while the shards are written
    for (const known_tensor& tensor : known_tensors()) {
      std::vector<std::byte> bytes;
      for (const float value : tensor.values) {
        if (tensor.dtype == "F32") {
          const auto* raw = reinterpret_cast<const std::byte*>(&value);
          bytes.insert(bytes.end(), raw, raw + 4);
        } else {
          const std::uint16_t bits =
              tensor.dtype == "BF16" ? ngemb::bf16(value).bits : ngemb::fp16(value).bits;
          const auto* raw = reinterpret_cast<const std::byte*>(&bits);
          bytes.insert(bytes.end(), raw, raw + 2);
        }
      }
      storage.push_back(std::move(bytes));
      shards[tensor.shard].push_back({tensor.name, tensor.dtype, tensor.shape, storage.back()});
    }
    for (const auto& [shard, tensors] : shards) {
      ngemb::write_safetensors((folder / shard).lexically_normal(), tensors);
    }
  }
};

/// The shard the index names for `name`, resolved against the folder; nullopt when the index text does not say.
std::optional<std::filesystem::path> shard_named(const nlohmann::json& index, const std::string& name,
                                                 const std::filesystem::path& folder) {
  const auto map = index.find("weight_map");
  if (map == index.end() || !map->is_object()) {
    return std::nullopt;
  }
  const auto entry = map->find(name);
  if (entry == map->end() || !entry->is_string()) {
    return std::nullopt;
  }
  return (folder / entry->get<std::string>()).lexically_normal();
}

void check_checkpoint(const ngemb::safetensors_checkpoint& checkpoint, const std::uint8_t* data, std::size_t size,
                      const std::filesystem::path& folder) {
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(data, data + size);
  } catch (const std::exception& failure) {
    ngemb_fuzz::fail(std::string("the checkpoint accepted an index that does not parse: ") + failure.what());
  }
  std::vector<std::string> listed;
  for (const auto& [name, shard] : index.at("weight_map").items()) {
    listed.push_back(name);
  }
  std::sort(listed.begin(), listed.end());
  listed.erase(std::unique(listed.begin(), listed.end()), listed.end());
  expect(checkpoint.names() == listed, "the checkpoint's names differ from the index's weight_map");

  const std::filesystem::path root = folder.lexically_normal();
  for (const std::string& name : checkpoint.names()) {
    const std::filesystem::path file = checkpoint.file_of(name).path().lexically_normal();
    const std::filesystem::path relative = file.lexically_relative(root);
    expect(!relative.empty() && *relative.begin() != "..",
           "tensor \"" + name + "\" was read from " + file.string() + ", outside the checkpoint folder");
    const auto named = shard_named(index, name, folder);
    expect(named && *named == file, "tensor \"" + name + "\" was read from " + file.string() +
                                        ", not from the shard the index names");
    bool found = false;
    for (const known_tensor& tensor : known_tensors()) {
      if (tensor.name != name || (folder / tensor.shard).lexically_normal() != file) {
        continue;
      }
      found = true;
      std::vector<float> values;
      expect(library_accepts([&] { values = ngemb::read_tensor_as<float>(checkpoint, name, tensor.shape); }),
             "tensor \"" + name + "\" of a valid shard cannot be read");
      expect(values == tensor.values, "tensor \"" + name + "\" reads other values than " + tensor.shard + " holds");
    }
    expect(found, "tensor \"" + name + "\" is not a tensor of " + file.string());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fixture files;
  const std::filesystem::path index = files.folder / "model.safetensors.index.json";
  ngemb_fuzz::write_file(index, data, size);

  // The folder (which finds the index) and the index path itself must agree.
  std::optional<ngemb::safetensors_checkpoint> by_folder;
  std::optional<ngemb::safetensors_checkpoint> by_index;
  const bool folder_accepted = library_accepts([&] { by_folder.emplace(files.folder); });
  const bool index_accepted = library_accepts([&] { by_index.emplace(index); });
  expect(folder_accepted == index_accepted, "opening the folder and opening its index disagree");
  if (folder_accepted) {
    check_checkpoint(*by_folder, data, size, files.folder);
    check_checkpoint(*by_index, data, size, files.folder);
  }
  return 0;
}
