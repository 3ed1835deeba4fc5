#pragma once
// What an on-demand safetensors_checkpoint maps for a byte range of a tensor, computed from the file itself, so the
// tests of io/ and store/ can count mapped_bytes() exactly.
#include <unistd.h>  // sysconf

#include <array>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <string>

#include "ngemb/io/detail/safetensors_format.hpp"
#include "ngemb/io/safetensors_reader.hpp"

namespace ngemb_test {

/// Where the data buffer of a safetensors file starts: 8 + its little-endian header length.
inline std::size_t data_start(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  std::array<std::byte, 8> length{};
  stream.read(reinterpret_cast<char*>(length.data()), 8);
  return 8 + static_cast<std::size_t>(ngemb::detail::load_u64_le(length.data()));
}

/// Bytes mapped for bytes [begin, end) of a tensor: from the page boundary at or below the range's first file byte
/// to its end; nothing for an empty range.
inline std::size_t mapping_cost(const ngemb::safetensors_checkpoint& checkpoint, const std::string& name,
                                std::size_t begin, std::size_t end) {
  if (begin == end) {
    return 0;
  }
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t start = data_start(checkpoint.file_of(name).path()) + checkpoint.info(name).begin;
  return start + end - (start + begin) / page * page;
}

}  // namespace ngemb_test
