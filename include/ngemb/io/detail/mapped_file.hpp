#pragma once
// Files mapped read-only into memory: a whole file, or only the page-aligned ranges a reader asks for. This is the
// only place the safetensors reader talks to the OS (POSIX open/fstat/pread/mmap); a Windows port replaces this
// file alone.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include "ngemb/core/error.hpp"

namespace ngemb::detail {

/// The granularity of mmap offsets.
inline std::size_t page_size() {
  static const auto size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

/// A regular file open for reading, with its size as fstat saw it at open.
class open_file {
 public:
  /// Throws io_error naming the path and the OS reason, and for anything but a regular file (a FIFO or a device
  /// would block or never end; a folder has no bytes).
  explicit open_file(const std::filesystem::path& path) : path_(path) {
    if (path.native().find('\0') != std::string::npos) {  // the OS would open the name cut at the NUL
      throw io_error("cannot open a path that contains a NUL byte: " +
                     path.string().substr(0, path.native().find('\0')));
    }
    // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer forever. It has no effect on the reads
    // of a regular file, the only kind accepted.
    descriptor_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (descriptor_ < 0) {
      fail("cannot open");
    }
    struct stat status{};
    if (::fstat(descriptor_, &status) != 0) {
      const int reason = errno;
      close();
      fail("cannot stat", reason);
    }
    if (!S_ISREG(status.st_mode)) {
      close();
      throw io_error("cannot read " + path.string() + ": not a regular file (" + kind_of(status.st_mode) + ")");
    }
    size_ = static_cast<std::size_t>(status.st_size);
  }

  open_file(open_file&& other) noexcept
      : path_(std::move(other.path_)), descriptor_(std::exchange(other.descriptor_, -1)),
        size_(std::exchange(other.size_, 0)) {}
  open_file& operator=(open_file&& other) noexcept {
    if (this != &other) {
      close();
      path_ = std::move(other.path_);
      descriptor_ = std::exchange(other.descriptor_, -1);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  open_file(const open_file&) = delete;
  open_file& operator=(const open_file&) = delete;
  ~open_file() { close(); }

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] int descriptor() const { return descriptor_; }
  [[nodiscard]] std::size_t size() const { return size_; }

  /// Reads exactly `destination.size()` bytes at `offset`; io_error naming the path when the file ends first (it
  /// shrank since it was opened) or the read fails.
  void read_at(std::size_t offset, std::span<std::byte> destination) const {
    std::size_t done = 0;
    while (done < destination.size()) {
      const ::ssize_t got = ::pread(descriptor_, destination.data() + done, destination.size() - done,
                                    static_cast<::off_t>(offset + done));
      if (got < 0 && errno == EINTR) {
        continue;
      }
      if (got < 0) {
        fail("cannot read");
      }
      if (got == 0) {
        throw io_error("cannot read " + path_.string() + ": it ends at byte " + std::to_string(offset + done) +
                       ", before byte " + std::to_string(offset + destination.size()));
      }
      done += static_cast<std::size_t>(got);
    }
  }

  [[noreturn]] void fail(const char* what, int reason = errno) const {
    throw io_error(std::string(what) + " " + path_.string() + ": " + std::generic_category().message(reason));
  }

 private:
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

  void close() noexcept {
    if (descriptor_ >= 0) {
      ::close(descriptor_);
      descriptor_ = -1;
    }
  }

  std::filesystem::path path_;
  int descriptor_ = -1;
  std::size_t size_ = 0;
};

/// A range of a file mapped with PROT_READ, MAP_PRIVATE: the whole file, or [offset, offset + length) of an open
/// file, mapped from the page boundary at or below `offset` (mmap offsets must be page-aligned) to the range's end.
class mapped_file {
 public:
  mapped_file() = default;  // maps nothing
  /// Maps the whole of `path`. Throws io_error naming the path and the OS reason (see open_file).
  explicit mapped_file(const std::filesystem::path& path) {
    const open_file file(path);
    map(file, 0, file.size());
  }

  /// Maps [offset, offset + length) of `file`, which the caller has checked lies inside it.
  mapped_file(const open_file& file, std::size_t offset, std::size_t length) { map(file, offset, length); }

  mapped_file(mapped_file&& other) noexcept
      : mapping_(std::exchange(other.mapping_, nullptr)), mapping_size_(std::exchange(other.mapping_size_, 0)),
        skipped_(std::exchange(other.skipped_, 0)) {}
  mapped_file& operator=(mapped_file&& other) noexcept {
    if (this != &other) {
      unmap();
      mapping_ = std::exchange(other.mapping_, nullptr);
      mapping_size_ = std::exchange(other.mapping_size_, 0);
      skipped_ = std::exchange(other.skipped_, 0);
    }
    return *this;
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() { unmap(); }

  /// The requested range.
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    if (mapping_ == nullptr) {
      return {};
    }
    return {mapping_ + skipped_, mapping_size_ - skipped_};
  }
  /// The length handed to mmap: the requested range plus the bytes before it down to a page boundary.
  [[nodiscard]] std::size_t mapped_bytes() const noexcept { return mapping_size_; }

 private:
  void map(const open_file& file, std::size_t offset, std::size_t length) {
    if (length == 0) {  // mmap rejects a zero length; an empty range simply has no bytes
      return;
    }
    skipped_ = offset % page_size();
    mapping_size_ = skipped_ + length;
    void* const address = ::mmap(nullptr, mapping_size_, PROT_READ, MAP_PRIVATE, file.descriptor(),
                                 static_cast<::off_t>(offset - skipped_));
    if (address == MAP_FAILED) {
      const int reason = errno;
      mapping_size_ = 0;
      file.fail("cannot map", reason);
    }
    mapping_ = static_cast<const std::byte*>(address);
    // N-gram tables are gathered row by row at hashed, i.e. random, positions: read-ahead would only waste
    // page cache. Advice only, so a failure changes nothing.
    (void)::madvise(address, mapping_size_, MADV_RANDOM);
  }

  void unmap() noexcept {
    if (mapping_ != nullptr) {
      ::munmap(const_cast<std::byte*>(mapping_), mapping_size_);  // NOLINT: munmap takes void*, pages stay read-only
    }
  }

  const std::byte* mapping_ = nullptr;
  std::size_t mapping_size_ = 0;
  std::size_t skipped_ = 0;  // bytes mapped before the requested range, to reach a page boundary
};

/// An open file whose ranges are mapped when first asked for and stay mapped while this object lives, so the
/// spans it hands out stay valid. Safe to call from several threads (parts may load on threads).
class mapped_ranges {
 public:
  explicit mapped_ranges(const std::filesystem::path& path) : file_(path) {}

  [[nodiscard]] const open_file& file() const { return file_; }

  /// Bytes [offset, offset + length) of the file, which the caller has checked lies inside it. A range asked for
  /// before is served by its mapping; any other range is mapped anew.
  [[nodiscard]] std::span<const std::byte> bytes(std::size_t offset, std::size_t length) {
    if (length == 0) {
      return {};
    }
    const std::scoped_lock lock(mutex_);
    auto found = mappings_.find({offset, length});
    if (found == mappings_.end()) {
      found = mappings_.emplace(std::pair{offset, length}, mapped_file(file_, offset, length)).first;
    }
    return found->second.bytes();
  }

  /// What is mapped now, page rounding at the start of each range included.
  [[nodiscard]] std::size_t mapped_bytes() const {
    const std::scoped_lock lock(mutex_);
    std::size_t total = 0;
    for (const auto& entry : mappings_) {
      total += entry.second.mapped_bytes();
    }
    return total;
  }

 private:
  open_file file_;
  mutable std::mutex mutex_;
  std::map<std::pair<std::size_t, std::size_t>, mapped_file> mappings_;  // (offset, length) -> its mapping
};

/// The whole text of a regular file of at most `max_bytes` (config.json, a shard index): io_error naming the path
/// otherwise, so a FIFO, a device or a multi-gigabyte file given as config.json fails at once.
inline std::string read_text_file(const std::filesystem::path& path, std::size_t max_bytes) {
  const open_file file(path);
  if (file.size() > max_bytes) {
    throw io_error(path.string() + ": " + std::to_string(file.size()) + " bytes is more than the " +
                   std::to_string(max_bytes) + " a file of this kind may hold");
  }
  std::string text(file.size(), '\0');
  file.read_at(0, std::as_writable_bytes(std::span<char>(text)));
  return text;
}

}  // namespace ngemb::detail
