#pragma once
// Shared by the libFuzzer harnesses: the outcome rule (an ngemb::error is an accepted answer to bad input; any
// other exception escapes, std::terminate aborts, and libFuzzer saves the input), a checked expectation that
// aborts with a message, and a private scratch folder for harnesses that must hand the library a file.

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
#include "temp_folder.hpp"

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

/// A folder of its own under the temporary directory (mkdtemp: unique per process, so -fork/-jobs workers never
/// share one, and never a name planted in advance), removed when the process exits normally.
class scratch_folder : public ngemb_test::temp_folder {
 public:
  explicit scratch_folder(const std::string& /*harness*/) {}
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
