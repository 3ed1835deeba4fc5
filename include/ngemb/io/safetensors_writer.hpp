#pragma once
// Hugging Face safetensors, write side: one file (write_safetensors) or a sharded checkpoint folder with its
// model.safetensors.index.json (write_safetensors_checkpoint), laid out as the reference writer does. The
// reader is io/safetensors_reader.hpp.
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ngemb/core/error.hpp"
#include "ngemb/io/detail/json_input.hpp"
#include "ngemb/io/detail/safetensors_format.hpp"
#include "ngemb/io/tensor_to_write.hpp"

namespace ngemb {

namespace detail {

/// Checks what a writer is given; returns the byte size of each tensor.
inline std::vector<std::size_t> check_tensors_to_write(const char* operation,
                                                       std::span<const tensor_to_write> tensors) {
  std::set<std::string_view> seen;
  std::vector<std::size_t> sizes;
  sizes.reserve(tensors.size());
  for (const tensor_to_write& tensor : tensors) {
    const std::string where = std::string(operation) + ": tensor \"" + clipped_text(tensor.name) + "\"";
    try {
      (void)nlohmann::json(tensor.name).dump();  // the header's own rule: JSON strings must be valid UTF-8
    } catch (const nlohmann::json::exception&) {
      throw invalid_argument(where + ": the name is not valid UTF-8");
    }
    if (tensor.name == "__metadata__") {
      throw invalid_argument(where + ": the name is reserved for the metadata");
    }
    if (!seen.insert(tensor.name).second) {
      throw invalid_argument(where + " appears twice");
    }
    const auto bits = safetensors_dtype_bits(tensor.dtype);
    if (!bits) {
      throw invalid_argument(where + ": unknown dtype \"" + tensor.dtype + "\"");
    }
    const auto elements = checked_element_count(tensor.shape);
    const auto bytes = elements ? checked_byte_count(*elements, *bits) : std::nullopt;
    if (!bytes) {
      throw invalid_argument(where + ": shape " + format_shape(tensor.shape) + " of " + tensor.dtype +
                             " has no valid byte size");
    }
    if (*bytes != tensor.data.size()) {
      throw shape_mismatch(where + ": shape " + format_shape(tensor.shape) + " of " + tensor.dtype + " needs " +
                           std::to_string(*bytes) + " bytes, got " + std::to_string(tensor.data.size()));
    }
    sizes.push_back(*bytes);
  }
  return sizes;
}

/// Writes to "<path>.partial" and renames it over `path`, so a reader that still maps the old file keeps its
/// pages (overwriting in place would make them vanish under it) and a failed write leaves no half file.
template <class Write>
void write_file_atomically(const std::filesystem::path& path, Write&& write) {
  std::filesystem::path partial = path;
  partial += ".partial";
  std::ofstream stream(partial, std::ios::binary | std::ios::trunc);
  if (!stream) {
    throw io_error("cannot open " + partial.string() + " for writing: " + std::generic_category().message(errno));
  }
  std::forward<Write>(write)(static_cast<std::ostream&>(stream));
  stream.close();
  std::error_code failure;
  if (!stream) {
    const int reason = errno;
    std::filesystem::remove(partial, failure);
    throw io_error("cannot write " + partial.string() + ": " + std::generic_category().message(reason));
  }
  std::filesystem::rename(partial, path, failure);
  if (failure) {
    std::filesystem::remove(partial, failure);
    throw io_error("cannot rename " + partial.string() + " to " + path.string() + ": " + failure.message());
  }
}

}  // namespace detail

/// Writes one safetensors file as the Hugging Face library does: compact JSON header, "__metadata__" first (when
/// not empty), padded with spaces to a multiple of 8 bytes, data back to back with no gaps. Tensors are laid out
/// by decreasing element size (in the given order within one size), as the reference writer does: the data
/// buffer starts 8-aligned, so every tensor is then aligned for its dtype.
/// Throws invalid_argument for duplicate names or unknown dtypes, shape_mismatch when a tensor's byte count
/// disagrees with its shape and dtype, io_error when the file cannot be written.
inline void write_safetensors(const std::filesystem::path& path, std::span<const tensor_to_write> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  const std::vector<std::size_t> sizes = detail::check_tensors_to_write("write_safetensors", tensors);
  std::vector<std::size_t> order(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) {
    order[i] = i;
  }
  std::stable_sort(order.begin(), order.end(), [&](std::size_t lhs, std::size_t rhs) {
    return *detail::safetensors_dtype_bits(tensors[lhs].dtype) > *detail::safetensors_dtype_bits(tensors[rhs].dtype);
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    header["__metadata__"] = metadata;
  }
  std::size_t offset = 0;
  for (const std::size_t i : order) {
    header[tensors[i].name] = {{"dtype", tensors[i].dtype},
                               {"shape", tensors[i].shape},
                               {"data_offsets", nlohmann::ordered_json::array({offset, offset + sizes[i]})}};
    offset += sizes[i];
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {  // names were checked: only metadata can be left
    throw invalid_argument("write_safetensors: metadata holds text that is not valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  detail::write_file_atomically(path, [&](std::ostream& stream) {
    stream.write(detail::store_u64_le(text.size()).data(), 8);
    stream.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const std::size_t i : order) {
      stream.write(reinterpret_cast<const char*>(tensors[i].data.data()),
                   static_cast<std::streamsize>(tensors[i].data.size()));
    }
  });
}

/// Writes a checkpoint folder. Tensors are packed in the given order into shards of at most `max_shard_bytes` of
/// data (a bigger tensor gets a shard of its own), named model-00001-of-0000K.safetensors, plus
/// model.safetensors.index.json {"metadata": {"total_size": n}, "weight_map": {name: shard}}. With one shard it
/// writes just model.safetensors, and removes a stale index that would otherwise shadow it.
inline void write_safetensors_checkpoint(const std::filesystem::path& folder,
                                         std::span<const tensor_to_write> tensors, std::size_t max_shard_bytes) {
  namespace fs = std::filesystem;
  if (max_shard_bytes == 0) {
    throw invalid_argument("write_safetensors_checkpoint: max_shard_bytes must be > 0");
  }
  const std::vector<std::size_t> sizes = detail::check_tensors_to_write("write_safetensors_checkpoint", tensors);
  std::vector<std::vector<tensor_to_write>> shards(1);
  std::size_t shard_bytes = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (!shards.back().empty() && shard_bytes + sizes[i] > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(tensors[i]);
    shard_bytes += sizes[i];
  }

  std::error_code failure;
  fs::create_directories(folder, failure);
  if (failure) {
    throw io_error("cannot create " + folder.string() + ": " + failure.message());
  }
  const fs::path index_path = folder / "model.safetensors.index.json";
  if (shards.size() == 1) {
    write_safetensors(folder / "model.safetensors", shards.front());
    fs::remove(index_path, failure);
    if (failure) {
      throw io_error("cannot remove " + index_path.string() + ": " + failure.message());
    }
    return;
  }

  const auto five_digits = [](std::size_t number) {
    const std::string digits = std::to_string(number);
    return std::string(digits.size() < 5 ? 5 - digits.size() : 0, '0') + digits;
  };
  nlohmann::json weight_map = nlohmann::json::object();
  std::size_t total_size = 0;
  for (std::size_t shard = 0; shard < shards.size(); ++shard) {
    const std::string file_name =
        "model-" + five_digits(shard + 1) + "-of-" + five_digits(shards.size()) + ".safetensors";
    write_safetensors(folder / file_name, shards[shard]);
    for (const tensor_to_write& tensor : shards[shard]) {
      weight_map[tensor.name] = file_name;
      total_size += tensor.data.size();
    }
  }
  // The index goes last, so it never names a shard that is not written yet.
  const nlohmann::json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  detail::write_file_atomically(index_path, [&](std::ostream& stream) { stream << index.dump(2) << '\n'; });
}

}  // namespace ngemb
