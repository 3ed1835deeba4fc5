#pragma once
#include <cstddef>
#include <cstdint>
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

/// A token id outside [0, V), with where it was found, so a caller can map it back to its own input
/// (a line, a request).
class token_out_of_range : public invalid_argument {
 public:
  token_out_of_range(const std::string& message, std::size_t sequence, std::int64_t position, std::int64_t value)
      : invalid_argument(message), sequence_(sequence), position_(position), value_(value) {}
  /// The sequence of the ragged batch, and the position inside it.
  [[nodiscard]] std::size_t sequence() const noexcept { return sequence_; }
  [[nodiscard]] std::int64_t position() const noexcept { return position_; }
  [[nodiscard]] std::int64_t value() const noexcept { return value_; }

 private:
  std::size_t sequence_;
  std::int64_t position_;
  std::int64_t value_;
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

/// Memory for a size that passed every check could not be allocated; the message names what and how many bytes.
class out_of_memory : public error {
 public:
  using error::error;
};

/// A collective between ranks failed or did not finish within the communicator's timeout (a peer exited, stalled
/// or called another collective); the message names the collective, this rank and the wait. After it the
/// communicator is unusable: the ranks must tear down (and may rebuild) their communication.
class communication_error : public error {
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
