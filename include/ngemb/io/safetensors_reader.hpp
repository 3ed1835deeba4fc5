#pragma once
// Hugging Face safetensors, read side: a memory-mapped reader for one file, and safetensors_checkpoint, the
// ngemb::checkpoint over a shard set (model.safetensors.index.json), a folder or one file. The writer is
// io/safetensors_writer.hpp.
//
// File layout: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional "__metadata__" string map), then the data
// buffer the offsets point into. Everything is validated when a file is opened, so a later lookup can only fail
// for a missing name, a wrong dtype or shape, a byte or row range outside a tensor, or misaligned data.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/detail/json_input.hpp"
#include "ngemb/io/detail/mapped_file.hpp"
#include "ngemb/io/detail/safetensors_format.hpp"

namespace ngemb {

namespace detail {

inline std::string quoted_tensor(const std::string& source, std::string_view name) {
  return source + ": tensor \"" + clipped_text(name) + "\"";
}

inline const nlohmann::json& require_entry_field(const nlohmann::json& entry, const char* field,
                                                 const std::string& where) {
  const auto found = entry.find(field);
  if (found == entry.end()) {
    throw format_error(where + ": missing field \"" + field + "\"");
  }
  return *found;
}

/// A header entry, checked against the size of the data buffer it points into.
inline tensor_info parse_tensor_entry(const std::string& name, const nlohmann::json& entry, std::size_t data_size,
                                      const std::string& source) {
  const std::string where = quoted_tensor(source, name);
  if (!entry.is_object()) {
    throw format_error(where + ": entry must be a JSON object, got " + describe_json(entry));
  }
  tensor_info info;
  info.name = name;

  const nlohmann::json& dtype = require_entry_field(entry, "dtype", where);
  if (!dtype.is_string()) {
    throw format_error(where + ": field \"dtype\" must be a string, got " + describe_json(dtype));
  }
  info.dtype = dtype.get<std::string>();
  const auto bits = safetensors_dtype_bits(info.dtype);
  if (!bits) {
    throw format_error(where + ": unknown dtype \"" + info.dtype + "\"");
  }

  const nlohmann::json& shape = require_entry_field(entry, "shape", where);
  const bool shape_ok = shape.is_array() && std::all_of(shape.begin(), shape.end(), [](const nlohmann::json& dim) {
    return dim.is_number_integer() && (!dim.is_number_unsigned() || dim.get<std::uint64_t>() <= INT64_MAX);
  });
  if (!shape_ok) {
    throw format_error(where + ": field \"shape\" must be an array of integers, got " + describe_json(shape));
  }
  info.shape = shape.get<std::vector<std::int64_t>>();
  const auto elements = checked_element_count(info.shape);
  if (!elements) {
    throw format_error(where + ": shape " + format_shape(info.shape) +
                       " has a negative dimension or more than 2^63-1 elements");
  }

  const nlohmann::json& offsets = require_entry_field(entry, "data_offsets", where);
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned() || offsets[0].get<std::uint64_t>() > offsets[1].get<std::uint64_t>()) {
    throw format_error(where + ": field \"data_offsets\" must be [begin, end] with 0 <= begin <= end, got " +
                       describe_json(offsets));
  }
  info.begin = offsets[0].get<std::size_t>();
  info.end = offsets[1].get<std::size_t>();
  std::string range = "[";  // appended to a named string: g++ 12 misreads "[" + std::string&& (-Wrestrict)
  range += std::to_string(info.begin) + ", " + std::to_string(info.end) + "]";
  if (info.end > data_size) {
    throw format_error(where + ": data_offsets " + range + " reach beyond the end of the data buffer (" +
                       std::to_string(data_size) + " bytes): the file is truncated or corrupt");
  }
  const auto bytes = checked_byte_count(*elements, *bits);
  if (!bytes) {
    throw format_error(where + ": shape " + format_shape(info.shape) + " of " + info.dtype +
                       " is not a whole number of bytes, or too large");
  }
  if (*bytes != info.end - info.begin) {
    throw format_error(where + ": data_offsets " + range + " hold " + std::to_string(info.end - info.begin) +
                       " bytes, but shape " + format_shape(info.shape) + " of " + info.dtype + " needs " +
                       std::to_string(*bytes));
  }
  return info;
}

inline std::map<std::string, std::string> parse_metadata(const nlohmann::json& value, const std::string& source) {
  if (!value.is_object()) {
    throw format_error(source + ": \"__metadata__\" must be an object of strings, got " +
                       describe_json(value));
  }
  std::map<std::string, std::string> metadata;
  for (const auto& [key, text] : value.items()) {
    if (!text.is_string()) {
      throw format_error(source + ": \"__metadata__\" must map strings to strings; \"" + key + "\" is " +
                         describe_json(text));
    }
    metadata.emplace(key, text.get<std::string>());
  }
  return metadata;
}

/// Non-empty regions must be disjoint (empty tensors occupy no bytes, wherever their offsets point).
inline void require_disjoint(const std::map<std::string, tensor_info, std::less<>>& tensors,
                             const std::string& source) {
  std::vector<const tensor_info*> regions;
  for (const auto& [name, info] : tensors) {
    if (info.begin != info.end) {
      regions.push_back(&info);
    }
  }
  std::sort(regions.begin(), regions.end(), [](const tensor_info* lhs, const tensor_info* rhs) {
    return lhs->begin < rhs->begin;
  });
  const tensor_info* furthest = nullptr;  // among the regions seen so far, the one reaching furthest
  for (const tensor_info* region : regions) {
    if (furthest != nullptr && region->begin < furthest->end) {
      throw format_error(source + ": tensors \"" + furthest->name + "\" [" + std::to_string(furthest->begin) +
                         ", " + std::to_string(furthest->end) + "] and \"" + region->name + "\" [" +
                         std::to_string(region->begin) + ", " + std::to_string(region->end) + "] overlap");
    }
    if (furthest == nullptr || region->end > furthest->end) {
      furthest = region;
    }
  }
}

}  // namespace detail

/// How a safetensors file's bytes are reached.
enum class checkpoint_mapping {
  /// Each file mapped whole when it is opened.
  whole_files,
  /// The header read with pread, nothing mapped at open; each byte range asked for (a tensor, some rows of one) is
  /// mapped from its page boundary when first asked for and stays mapped. A rank that reads only its shard of a
  /// 60 GB table set maps only that shard.
  on_demand,
};

/// One safetensors file, read-only. Tensors are views into its mappings: they stay valid while this object (or the
/// object it was moved into) lives.
class safetensors_file {
 public:
  /// Opens the file and validates the whole header, mapping the file whole or nothing yet (see checkpoint_mapping).
  /// Throws io_error when the file cannot be opened, read or mapped, and format_error (naming the file and the
  /// tensor) for any malformed content, in either mode.
  explicit safetensors_file(const std::filesystem::path& path,
                            checkpoint_mapping mapping = checkpoint_mapping::whole_files)
      : path_(path) {
    if (mapping == checkpoint_mapping::whole_files) {
      whole_ = detail::mapped_file(path);
    } else {
      ranges_ = std::make_unique<detail::mapped_ranges>(path);
    }
    parse();
  }

  safetensors_file(safetensors_file&&) = default;
  safetensors_file& operator=(safetensors_file&&) = default;
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;
  ~safetensors_file() = default;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

  /// Throws format_error "<file>: no tensor "x"" when absent.
  [[nodiscard]] const tensor_info& info(std::string_view name) const {
    const auto found = tensors_.find(name);
    if (found == tensors_.end()) {
      throw format_error(path_.string() + ": no tensor \"" + std::string(name) + "\"");
    }
    return found->second;
  }

  /// Tensor names, sorted.
  [[nodiscard]] std::vector<std::string> names() const {
    std::vector<std::string> result;
    result.reserve(tensors_.size());
    for (const auto& entry : tensors_) {
      result.push_back(entry.first);
    }
    return result;
  }

  [[nodiscard]] const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The raw bytes of a tensor, of any dtype.
  [[nodiscard]] std::span<const std::byte> bytes(std::string_view name) const { return bytes_of(info(name)); }

  /// Bytes [begin, end) of a tensor's data; format_error naming the file, the tensor, the range and the tensor's
  /// size unless begin <= end <= its size. On demand, only the pages holding them are mapped.
  [[nodiscard]] std::span<const std::byte> bytes(std::string_view name, std::size_t begin, std::size_t end) const {
    const tensor_info& found = info(name);
    detail::require_byte_range(detail::quoted_tensor(path_.string(), name), begin, end, found.end - found.begin);
    return data_range(found.begin + begin, found.begin + end);
  }

  /// Bytes mapped now: the file's size when mapped whole; on demand, the ranges asked for so far, each from its
  /// page boundary (the header is read, not mapped).
  [[nodiscard]] std::size_t mapped_bytes() const {
    return ranges_ ? ranges_->mapped_bytes() : whole_.mapped_bytes();
  }

  /// A typed view; the file's dtype must be T's (format_error naming both otherwise), and the data must be
  /// aligned for T, which a conforming writer guarantees but a file cannot be trusted to.
  template <storage_type T>
  [[nodiscard]] view<const T> tensor(std::string_view name) const {
    const tensor_info& found = info(name);
    constexpr std::string_view expected = name_of(dtype_of<T>);
    if (found.dtype != expected) {
      throw format_error(detail::quoted_tensor(path_.string(), name) + " has dtype " + found.dtype + ", expected " +
                         std::string(expected));
    }
    const std::span<const std::byte> raw = bytes_of(found);
    if (raw.empty()) {
      return {};
    }
    if (reinterpret_cast<std::uintptr_t>(raw.data()) % alignof(T) != 0) {
      throw format_error(detail::quoted_tensor(path_.string(), name) + " at file offset " +
                         std::to_string(data_offset_ + found.begin) + " is not aligned for " +
                         std::string(expected) + " (" + std::to_string(alignof(T)) + " bytes)");
    }
    return {reinterpret_cast<const T*>(raw.data()), raw.size() / sizeof(T)};
  }

  /// As above, and the shape must equal `expected_shape` (format_error "... has shape [a, b], expected [c, d]").
  template <storage_type T>
  [[nodiscard]] view<const T> tensor(std::string_view name, std::span<const std::int64_t> expected_shape) const {
    const tensor_info& found = info(name);
    if (!std::equal(found.shape.begin(), found.shape.end(), expected_shape.begin(), expected_shape.end())) {
      throw format_error(detail::quoted_tensor(path_.string(), name) + " has shape " +
                         detail::format_shape(found.shape) + ", expected " + detail::format_shape(expected_shape));
    }
    return tensor<T>(name);
  }

 private:
  void parse() {
    const std::size_t file_size = ranges_ ? ranges_->file().size() : whole_.bytes().size();
    const std::string source = path_.string();
    if (file_size < 8) {
      throw format_error(source + ": " + std::to_string(file_size) +
                         " bytes is too short for a safetensors file, which starts with an 8-byte header length");
    }
    std::string header_storage;  // on demand the header is read into it, never mapped
    const std::uint64_t header_size =
        detail::load_u64_le(reinterpret_cast<const std::byte*>(file_bytes(0, 8, header_storage).data()));
    if (header_size > detail::max_safetensors_header_bytes) {
      throw format_error(source + ": header length " + std::to_string(header_size) + " exceeds the limit of " +
                         std::to_string(detail::max_safetensors_header_bytes) + " bytes");
    }
    if (header_size > file_size - 8) {
      throw format_error(source + ": truncated: the header length is " + std::to_string(header_size) +
                         " but only " + std::to_string(file_size - 8) + " bytes follow");
    }
    data_offset_ = 8 + static_cast<std::size_t>(header_size);
    const std::string_view text = file_bytes(8, static_cast<std::size_t>(header_size), header_storage);
    const nlohmann::json header = detail::parse_json(text, source + ": header");
    if (!header.is_object()) {
      throw format_error(source + ": header must be a JSON object, got " + std::string(header.type_name()));
    }
    const std::size_t data_size = file_size - data_offset_;
    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        metadata_ = detail::parse_metadata(value, source);
      } else {
        tensors_.emplace(key, detail::parse_tensor_entry(key, value, data_size, source));
      }
    }
    detail::require_disjoint(tensors_, source);
  }

  /// Bytes [offset, offset + length) of the file, which the caller has checked it holds: a view of the whole
  /// mapping, or read with pread into `storage` on demand.
  [[nodiscard]] std::string_view file_bytes(std::size_t offset, std::size_t length, std::string& storage) const {
    if (!ranges_) {
      return {reinterpret_cast<const char*>(whole_.bytes().data()) + offset, length};
    }
    storage.resize(length);
    ranges_->file().read_at(offset, std::as_writable_bytes(std::span<char>(storage)));
    return storage;
  }

  /// Bytes [begin, end) of the data buffer, which the header has been checked to hold.
  [[nodiscard]] std::span<const std::byte> data_range(std::size_t begin, std::size_t end) const {
    if (ranges_) {
      return ranges_->bytes(data_offset_ + begin, end - begin);
    }
    return whole_.bytes().subspan(data_offset_ + begin, end - begin);
  }

  [[nodiscard]] std::span<const std::byte> bytes_of(const tensor_info& found) const {
    return data_range(found.begin, found.end);
  }

  std::filesystem::path path_;
  detail::mapped_file whole_;                      // whole_files: the whole file
  std::unique_ptr<detail::mapped_ranges> ranges_;  // on_demand: the open file and the ranges mapped so far
  std::size_t data_offset_ = 0;  // 8 + header length: where the data buffer starts
  std::map<std::string, tensor_info, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// A checkpoint: one or more safetensors files seen as one set of tensors. Each file is mapped whole once, or on
/// demand range by range (see checkpoint_mapping).
class safetensors_checkpoint final : public checkpoint {
 public:
  /// `path` is a folder (its model.safetensors.index.json if present, else its model.safetensors, else every
  /// *.safetensors in it), an index .json file, or one .safetensors file. Every file is opened and its header
  /// validated now, in either mode.
  explicit safetensors_checkpoint(const std::filesystem::path& path,
                                  checkpoint_mapping mapping = checkpoint_mapping::whole_files)
      : mapping_(mapping) {
    namespace fs = std::filesystem;
    std::error_code failure;  // a failed probe reads as "absent"; opening the file then reports the reason
    if (!fs::is_directory(path, failure)) {
      folder_ = path.parent_path();
      if (path.extension() == ".json") {
        load_index(path);
      } else {
        load_files({path}, path.string());
      }
      return;
    }
    folder_ = path;
    if (const fs::path index = path / "model.safetensors.index.json"; fs::exists(index, failure)) {
      load_index(index);
    } else if (const fs::path single = path / "model.safetensors"; fs::exists(single, failure)) {
      load_files({single}, path.string());
    } else {
      std::vector<fs::path> files;
      for (fs::directory_iterator entry(path, failure), last; !failure && entry != last; entry.increment(failure)) {
        if (entry->path().extension() == ".safetensors") {
          files.push_back(entry->path());
        }
      }
      if (failure) {
        throw io_error("cannot list " + path.string() + ": " + failure.message());
      }
      if (files.empty()) {
        throw io_error(path.string() + ": no model.safetensors.index.json and no .safetensors files");
      }
      std::sort(files.begin(), files.end());
      load_files(files, path.string());
    }
  }

  [[nodiscard]] const std::filesystem::path& folder() const { return folder_; }
  [[nodiscard]] bool contains(std::string_view name) const override { return owner_.find(name) != owner_.end(); }

  /// The file holding `name`; format_error naming the checkpoint (its index, folder or file) when absent.
  [[nodiscard]] const safetensors_file& file_of(std::string_view name) const {
    const auto found = owner_.find(name);
    if (found == owner_.end()) {
      throw format_error(source_ + ": no tensor \"" + std::string(name) + "\"");
    }
    return files_[found->second];
  }

  [[nodiscard]] const tensor_info& info(std::string_view name) const override { return file_of(name).info(name); }
  [[nodiscard]] std::span<const std::byte> bytes(std::string_view name) const override {
    return file_of(name).bytes(name);
  }
  /// Maps only the pages holding the range when on demand.
  [[nodiscard]] std::span<const std::byte> bytes(std::string_view name, std::size_t begin,
                                                 std::size_t end) const override {
    return file_of(name).bytes(name, begin, end);
  }
  [[nodiscard]] std::string location_of(std::string_view name) const override {
    return file_of(name).path().string();
  }

  /// Tensor names over all files, sorted.
  [[nodiscard]] std::vector<std::string> names() const override {
    std::vector<std::string> result;
    result.reserve(owner_.size());
    for (const auto& entry : owner_) {
      result.push_back(entry.first);
    }
    return result;
  }

  [[nodiscard]] checkpoint_mapping mapping() const { return mapping_; }
  /// Bytes mapped now over all files (see safetensors_file::mapped_bytes).
  [[nodiscard]] std::size_t mapped_bytes() const {
    std::size_t total = 0;
    for (const safetensors_file& file : files_) {
      total += file.mapped_bytes();
    }
    return total;
  }

 private:
  /// Without an index every tensor of every file belongs to the checkpoint, each name in one file only.
  void load_files(const std::vector<std::filesystem::path>& paths, std::string source) {
    source_ = std::move(source);
    for (const std::filesystem::path& path : paths) {
      files_.emplace_back(path, mapping_);
      for (const std::string& name : files_.back().names()) {
        const auto [where, inserted] = owner_.emplace(name, files_.size() - 1);
        if (!inserted) {
          throw format_error(source_ + ": tensor \"" + name + "\" is in both " +
                             files_[where->second].path().string() + " and " + path.string());
        }
      }
    }
  }

  /// The index's weight_map decides which file holds each tensor; tensors a shard holds beyond it are ignored,
  /// as the Hugging Face loaders do.
  void load_index(const std::filesystem::path& index_path) {
    source_ = index_path.string();
    const nlohmann::json index =
        detail::parse_json(detail::read_text_file(index_path, detail::max_safetensors_header_bytes), source_);
    const auto weight_map = index.is_object() ? index.find("weight_map") : index.end();
    if (!index.is_object() || weight_map == index.end() || !weight_map->is_object()) {
      throw format_error(source_ + ": missing object \"weight_map\"");
    }
    std::map<std::string, std::size_t> opened;  // shard name -> position in files_
    for (const auto& [name, shard] : weight_map->items()) {
      if (!shard.is_string()) {
        throw format_error(detail::quoted_tensor(source_, name) + ": the shard must be a file name string, got " +
                           detail::describe_json(shard));
      }
      const std::string shard_name = shard.get<std::string>();
      auto found = opened.find(shard_name);
      if (found == opened.end()) {
        found = opened.emplace(shard_name, files_.size()).first;
        open_shard(shard_name);
      }
      const safetensors_file& file = files_[found->second];
      if (!file.contains(name)) {
        throw format_error(detail::quoted_tensor(source_, name) + " is listed in shard " + file.path().string() +
                           ", which does not contain it");
      }
      owner_.emplace(name, found->second);
    }
  }

  void open_shard(const std::string& shard_name) {
    const std::filesystem::path relative(shard_name);
    // An index is data, possibly downloaded: it must not reach files outside the checkpoint folder.
    // A NUL byte would end the name the OS sees early, so "a.safetensors\0x" would open another file.
    if (shard_name.find('\0') != std::string::npos) {
      throw format_error(source_ + ": shard \"" + detail::clipped_text(shard_name) + "\" contains a NUL byte");
    }
    const bool escapes = relative.empty() || relative.has_root_path() ||
                         std::any_of(relative.begin(), relative.end(),
                                     [](const std::filesystem::path& part) { return part == ".."; });
    if (escapes) {
      throw format_error(source_ + ": shard \"" + shard_name +
                         "\" must be a relative path inside the checkpoint folder");
    }
    try {
      files_.emplace_back(folder_ / relative, mapping_);
    } catch (const io_error& failure) {
      throw io_error(source_ + ": shard \"" + shard_name + "\": " + failure.what());
    }
  }

  checkpoint_mapping mapping_;
  std::filesystem::path folder_;
  std::string source_;  // what error messages name: the index, the folder or the single file
  std::vector<safetensors_file> files_;
  std::map<std::string, std::size_t, std::less<>> owner_;  // tensor name -> position in files_
};

}  // namespace ngemb
