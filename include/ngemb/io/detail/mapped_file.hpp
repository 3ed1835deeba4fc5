#pragma once
// A whole file mapped read-only into memory. This is the only place the safetensors reader talks to the OS
// (POSIX open/fstat/mmap); a Windows port replaces this class alone.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include "ngemb/core/error.hpp"

namespace ngemb::detail {

class mapped_file {
 public:
  /// Maps `path` with PROT_READ, MAP_PRIVATE. Throws io_error naming the path and the OS reason, and for anything
  /// but a regular file (a FIFO or a device would block or never end; a folder has no bytes).
  explicit mapped_file(const std::filesystem::path& path) {
    if (path.native().find('\0') != std::string::npos) {  // the OS would open the name cut at the NUL
      throw io_error("cannot open a path that contains a NUL byte: " +
                     path.string().substr(0, path.native().find('\0')));
    }
    // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer forever. It has no effect on the reads
    // of a regular file, the only kind mapped.
    const int descriptor = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (descriptor < 0) {
      fail("cannot open", path);
    }
    struct stat status{};
    if (::fstat(descriptor, &status) != 0) {
      const int reason = errno;
      ::close(descriptor);
      fail("cannot stat", path, reason);
    }
    if (!S_ISREG(status.st_mode)) {
      ::close(descriptor);
      throw io_error("cannot read " + path.string() + ": not a regular file (" + kind_of(status.st_mode) + ")");
    }
    size_ = static_cast<std::size_t>(status.st_size);
    if (size_ > 0) {  // mmap rejects a zero length; an empty file simply has no bytes
      void* const address = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, descriptor, 0);
      const int reason = errno;
      ::close(descriptor);  // the mapping keeps its own reference to the file
      if (address == MAP_FAILED) {
        fail("cannot map", path, reason);
      }
      data_ = static_cast<const std::byte*>(address);
      // N-gram tables are gathered row by row at hashed, i.e. random, positions: read-ahead would only waste
      // page cache. Advice only, so a failure changes nothing.
      (void)::madvise(address, size_, MADV_RANDOM);
    } else {
      ::close(descriptor);
    }
  }

  mapped_file(mapped_file&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  mapped_file& operator=(mapped_file&& other) noexcept {
    if (this != &other) {
      unmap();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() { unmap(); }

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

 private:
  [[noreturn]] static void fail(const char* what, const std::filesystem::path& path, int reason = errno) {
    throw io_error(std::string(what) + " " + path.string() + ": " + std::generic_category().message(reason));
  }

  static std::string kind_of(mode_t mode) {
    if (S_ISDIR(mode)) {
      return "a folder";
    }
    if (S_ISFIFO(mode)) {
      return "a FIFO";
    }
    if (S_ISSOCK(mode)) {
      return "a socket";
    }
    if (S_ISCHR(mode) || S_ISBLK(mode)) {
      return "a device";
    }
    return "not a plain file";
  }

  void unmap() noexcept {
    if (data_ != nullptr) {
      ::munmap(const_cast<std::byte*>(data_), size_);  // NOLINT: munmap takes void*, the pages stay read-only
    }
  }

  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

/// The whole text of a regular file of at most `max_bytes` (config.json, a shard index): io_error naming the path
/// otherwise, so a FIFO, a device or a multi-gigabyte file given as config.json fails at once.
inline std::string read_text_file(const std::filesystem::path& path, std::size_t max_bytes) {
  const mapped_file file(path);
  const std::span<const std::byte> bytes = file.bytes();
  if (bytes.size() > max_bytes) {
    throw io_error(path.string() + ": " + std::to_string(bytes.size()) + " bytes is more than the " +
                   std::to_string(max_bytes) + " a file of this kind may hold");
  }
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace ngemb::detail
