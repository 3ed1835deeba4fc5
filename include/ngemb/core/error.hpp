#pragma once
#include <stdexcept>
#include <string>

namespace ngemb {

/// Base of every exception ngemb throws; catch this to handle all library errors.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A value is outside its valid domain (token id >= V, N < 2, unknown slot, ...).
class invalid_argument : public error {
 public:
  using error::error;
};

/// Sizes of arguments disagree (ragged offsets vs. token count, output span too small, ...).
class shape_mismatch : public error {
 public:
  using error::error;
};

/// A file could not be opened, read or mapped.
class io_error : public error {
 public:
  using error::error;
};

/// A file was read but its content is malformed (bad JSON, missing field, wrong dtype, truncated data).
class format_error : public error {
 public:
  using error::error;
};

/// A CUDA runtime call failed; holds the call text and the runtime's message. Declared here, without CUDA
/// headers, so host-only code can catch it.
class cuda_error : public error {
 public:
  cuda_error(int code, const std::string& call, const std::string& message)
      : error(call + " failed: " + message + " (cudaError " + std::to_string(code) + ")"), code_(code) {}
  [[nodiscard]] int code() const noexcept { return code_; }

 private:
  int code_;
};

}  // namespace ngemb
