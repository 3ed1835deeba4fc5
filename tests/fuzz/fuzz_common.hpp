#pragma once
// Shared by the libFuzzer harnesses: the outcome rule (an ngemb::error is an accepted answer to bad input; any
// other exception escapes, std::terminate aborts, and libFuzzer saves the input), a checked expectation that
// aborts with a message, and a private scratch folder for harnesses that must hand the library a file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#include "ngemb/core/error.hpp"

namespace ngemb_fuzz {

/// Runs `body`; true when it returned, false when it threw an ngemb::error. Anything else propagates.
template <class Body>
bool library_accepts(Body&& body) {
  try {
    body();
    return true;
  } catch (const ngemb::error&) {
    return false;
  }
}

/// A broken expectation is a finding: print it and abort, so libFuzzer keeps the input.
[[noreturn]] inline void fail(const std::string& message) {
  std::fprintf(stderr, "ngemb fuzz finding: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

inline void expect(bool condition, const std::string& message) {
  if (!condition) {
    fail(message);
  }
}

/// A folder of its own under the temporary directory (one per process, so -fork/-jobs workers never share one),
/// removed when the process exits normally.
class scratch_folder {
 public:
  explicit scratch_folder(const std::string& harness)
      : path_(std::filesystem::temp_directory_path() /
              ("ngemb_fuzz_" + harness + "_" + std::to_string(::getpid()))) {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
    std::filesystem::create_directories(path_);
  }
  scratch_folder(const scratch_folder&) = delete;
  scratch_folder& operator=(const scratch_folder&) = delete;
  ~scratch_folder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// Replaces `path` with exactly these bytes.
inline void write_file(const std::filesystem::path& path, const void* data, std::size_t size) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  stream.close();
  expect(static_cast<bool>(stream), "harness: cannot write " + path.string());
}

inline void write_file(const std::filesystem::path& path, std::string_view text) {
  write_file(path, text.data(), text.size());
}

}  // namespace ngemb_fuzz
