// libFuzzer harness: the safetensors file reader (io/safetensors_reader.hpp) and the typed readers (io/read_tensor.hpp).
// The input is a whole .safetensors file. Every tensor the reader accepts is read in every way the library
// offers (raw bytes, zero-copy typed views, conversion into float/double/bf16/fp16), and checked against the
// input bytes: an accepted tensor must lie inside the file and read back the bytes the header points at. The same
// file opened with on-demand mapping must be accepted or refused alike and serve the same bytes, whole and in ranges.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "fuzz_common.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/safetensors_reader.hpp"

namespace {

using ngemb_fuzz::expect;
using ngemb_fuzz::library_accepts;

std::uint64_t header_length(const std::uint8_t* data) {
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) {
    value = (value << 8) | data[i];
  }
  return value;
}

bool same_bits(float lhs, float rhs) { return std::memcmp(&lhs, &rhs, sizeof(float)) == 0; }

template <ngemb::storage_type T>
std::uint32_t bits_of(T value) {
  if constexpr (std::is_same_v<T, float>) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, &value, sizeof(bits));
    return bits;
  } else {
    return value.bits;
  }
}

/// The zero-copy view of type T: allowed exactly when the dtype is T's and the data is aligned for T (the mapping
/// is page-aligned, so the file offset decides); then it must hold the tensor's bytes.
template <ngemb::storage_type T>
void check_typed_view(const ngemb::safetensors_checkpoint& checkpoint, const std::string& name,
                      const ngemb::tensor_info& info, std::span<const std::uint8_t> expected_bytes,
                      std::size_t file_offset) {
  const bool dtype_matches = info.dtype == ngemb::name_of(ngemb::dtype_of<T>);
  const bool aligned = expected_bytes.empty() || file_offset % alignof(T) == 0;
  ngemb::view<const T> values;
  const bool accepted = library_accepts([&] { values = checkpoint.tensor<T>(name); });
  expect(accepted == (dtype_matches && aligned),
         "tensor<" + std::string(ngemb::name_of(ngemb::dtype_of<T>)) + ">(\"" + name + "\") of dtype " + info.dtype +
             (accepted ? " was accepted" : " was refused") + " (file offset " + std::to_string(file_offset) + ")");
  if (!accepted) {
    return;
  }
  expect(values.size() * sizeof(T) == expected_bytes.size(), "typed view of \"" + name + "\" has the wrong size");
  expect(values.empty() || std::memcmp(values.data(), expected_bytes.data(), expected_bytes.size()) == 0,
         "typed view of \"" + name + "\" differs from the file's bytes");
  // With the right shape it is the same view; with any other shape it is refused.
  ngemb::view<const T> shaped;
  expect(library_accepts([&] { shaped = checkpoint.tensor<T>(name, info.shape); }) && shaped.data() == values.data(),
         "tensor<T>(name, its own shape) refused or differs");
  std::vector<std::int64_t> other_shape = info.shape;
  other_shape.push_back(1);
  expect(!library_accepts([&] { (void)checkpoint.tensor<T>(name, other_shape); }),
         "tensor<T>(name, wrong shape) accepted");
}

/// read_tensor_as<T>: accepted exactly for the float dtypes (for fp8_e4m3, exactly for F8_E4M3, read as stored:
/// its values mean nothing without their scale); the values equal the stored ones converted.
template <ngemb::readable_element T>
std::vector<T> check_conversion(const ngemb::safetensors_checkpoint& checkpoint, const std::string& name,
                                const ngemb::tensor_info& info) {
  const bool readable = std::is_same_v<T, ngemb::fp8_e4m3>
                            ? info.dtype == "F8_E4M3"
                            : info.dtype == "F32" || info.dtype == "BF16" || info.dtype == "F16";
  std::vector<T> values;
  const bool accepted = library_accepts([&] { values = ngemb::read_tensor_as<T>(checkpoint, name, info.shape); });
  expect(accepted == readable, "read_tensor_as(\"" + name + "\") of dtype " + info.dtype +
                                   (accepted ? " was accepted" : " was refused"));
  if (accepted) {
    expect(values.size() == static_cast<std::size_t>(info.num_elements()),
           "read_tensor_as(\"" + name + "\") returned the wrong number of values");
    std::vector<std::int64_t> other_shape = info.shape;
    other_shape.push_back(2);
    std::vector<T> ignored(values.size());
    expect(!library_accepts([&] {
             ngemb::read_tensor_into<T>(checkpoint, name, other_shape, std::span<T>(ignored));
           }),
           "read_tensor_into with a wrong shape accepted");
    if (!ignored.empty()) {
      ignored.pop_back();
      expect(!library_accepts([&] {
               ngemb::read_tensor_into<T>(checkpoint, name, info.shape, std::span<T>(ignored));
             }),
             "read_tensor_into with a short destination accepted");
    }
  }
  return values;
}

void check_tensor(const ngemb::safetensors_checkpoint& checkpoint, const std::string& name, const std::uint8_t* data,
                  std::size_t size) {
  const ngemb::tensor_info& info = checkpoint.info(name);
  const std::uint64_t data_start = 8 + header_length(data);  // the reader accepted the file: the header fits
  expect(info.begin <= info.end && info.end <= size - data_start,
         "accepted tensor \"" + name + "\" [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
             ") reaches outside the " + std::to_string(size) + "-byte file");
  const std::span<const std::uint8_t> expected(data + data_start + info.begin, info.end - info.begin);
  const std::span<const std::byte> raw = checkpoint.file_of(name).bytes(name);
  expect(raw.size() == expected.size() && (raw.empty() || std::memcmp(raw.data(), expected.data(), raw.size()) == 0),
         "bytes(\"" + name + "\") differ from the file's bytes");
  expect(checkpoint.file_of(name).contains(name) && checkpoint.contains(name), "contains(\"" + name + "\") is false");

  const std::size_t file_offset = data_start + info.begin;
  check_typed_view<float>(checkpoint, name, info, expected, file_offset);
  check_typed_view<ngemb::bf16>(checkpoint, name, info, expected, file_offset);
  check_typed_view<ngemb::fp16>(checkpoint, name, info, expected, file_offset);
  check_typed_view<ngemb::fp8_e4m3>(checkpoint, name, info, expected, file_offset);

  const std::vector<ngemb::fp8_e4m3> as_fp8 = check_conversion<ngemb::fp8_e4m3>(checkpoint, name, info);
  expect(as_fp8.empty() || std::memcmp(as_fp8.data(), expected.data(), as_fp8.size()) == 0,
         "F8_E4M3 tensor \"" + name + "\" did not read back as stored");

  const std::vector<float> as_float = check_conversion<float>(checkpoint, name, info);
  const std::vector<double> as_double = check_conversion<double>(checkpoint, name, info);
  const std::vector<ngemb::bf16> as_bf16 = check_conversion<ngemb::bf16>(checkpoint, name, info);
  const std::vector<ngemb::fp16> as_fp16 = check_conversion<ngemb::fp16>(checkpoint, name, info);
  // Widening to double is exact, so double and float agree bit for bit (NaNs as NaNs); F32 reads back its bits.
  for (std::size_t i = 0; i < as_float.size(); ++i) {
    const double wide = as_double[i];
    expect(wide != wide ? as_float[i] != as_float[i] : same_bits(static_cast<float>(wide), as_float[i]),
           "read_tensor_as<double> and <float> disagree at element " + std::to_string(i) + " of \"" + name + "\"");
    if (info.dtype == "F32") {
      std::uint32_t stored = 0;
      std::memcpy(&stored, expected.data() + 4 * i, 4);
      expect(bits_of(as_float[i]) == stored, "F32 element " + std::to_string(i) + " of \"" + name + "\" changed");
    }
    if (info.dtype == "BF16") {
      std::uint16_t stored = 0;
      std::memcpy(&stored, expected.data() + 2 * i, 2);
      expect(as_bf16[i].bits == stored, "BF16 element " + std::to_string(i) + " of \"" + name + "\" changed");
    }
    if (info.dtype == "F16") {
      std::uint16_t stored = 0;
      std::memcpy(&stored, expected.data() + 2 * i, 2);
      expect(as_fp16[i].bits == stored, "F16 element " + std::to_string(i) + " of \"" + name + "\" changed");
    }
  }
}

/// On demand: the whole tensor, a byte range inside it and the last rows of a 2-D F32 tensor read back the file's
/// bytes; a range reaching past the tensor is refused.
void check_on_demand(const ngemb::safetensors_checkpoint& lazy, const std::string& name, const std::uint8_t* data) {
  const ngemb::tensor_info& info = lazy.info(name);
  const std::size_t file_offset = 8 + header_length(data) + info.begin;
  const std::size_t length = info.end - info.begin;
  const auto same = [&](const void* read, std::size_t bytes, std::size_t begin) {
    return bytes == 0 || std::memcmp(read, data + file_offset + begin, bytes) == 0;
  };
  const std::span<const std::byte> whole = lazy.bytes(name);
  expect(whole.size() == length && same(whole.data(), whole.size(), 0),
         "on demand: bytes(\"" + name + "\") differ from the file's bytes");
  const std::size_t begin = length / 3;
  const std::size_t end = length - length / 4;
  const std::span<const std::byte> part = lazy.bytes(name, begin, end);
  expect(part.size() == end - begin && same(part.data(), part.size(), begin),
         "on demand: a byte range of \"" + name + "\" differs from the file's bytes");
  expect(!library_accepts([&] { (void)lazy.bytes(name, begin, length + 1); }),
         "on demand: a byte range past \"" + name + "\" accepted");
  if (info.dtype == "F32" && info.shape.size() == 2 && file_offset % alignof(float) == 0) {
    const std::int64_t first = info.shape[0] / 2;
    const ngemb::view<const float> rows = lazy.tensor_rows<float>(name, info.shape, first, info.shape[0] - first);
    const std::size_t skipped = static_cast<std::size_t>(first * info.shape[1]) * sizeof(float);
    expect(rows.size() * sizeof(float) == length - skipped && same(rows.data(), length - skipped, skipped),
           "on demand: tensor_rows of \"" + name + "\" differ from the file's bytes");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const ngemb_fuzz::scratch_folder scratch("safetensors");
  const std::filesystem::path file = scratch / "input.safetensors";
  ngemb_fuzz::write_file(file, data, size);

  // The single-file reader and the checkpoint over one file must agree on what they accept.
  std::vector<std::string> file_names;
  const bool file_accepted = library_accepts([&] {
    const ngemb::safetensors_file single(file);
    file_names = single.names();
    for (const auto& [key, value] : single.metadata()) {
      expect(key.size() + value.size() < size, "metadata larger than the file");
    }
  });
  std::optional<ngemb::safetensors_checkpoint> checkpoint;
  const bool accepted = library_accepts([&] { checkpoint.emplace(file); });
  expect(accepted == file_accepted, std::string("safetensors_checkpoint ") + (accepted ? "accepted" : "refused") +
                                        " a file that safetensors_file " + (file_accepted ? "accepts" : "refuses"));
  // On-demand mapping validates the header read with pread exactly as the whole mapping does.
  std::optional<ngemb::safetensors_checkpoint> lazy;
  const bool lazy_accepted = library_accepts([&] { lazy.emplace(file, ngemb::checkpoint_mapping::on_demand); });
  expect(lazy_accepted == accepted, std::string("on-demand mapping ") + (lazy_accepted ? "accepted" : "refused") +
                                        " a file the whole mapping " + (accepted ? "accepts" : "refuses"));
  if (!accepted) {
    return 0;
  }
  expect(checkpoint->names() == file_names, "safetensors_checkpoint and safetensors_file list different tensors");
  for (const std::string& name : checkpoint->names()) {
    check_tensor(*checkpoint, name, data, size);
  }
  expect(!library_accepts([&] { (void)checkpoint->info("\x01no such tensor"); }), "info(absent name) accepted");
  expect(lazy->names() == file_names && lazy->mapped_bytes() == 0,
         "on-demand mapping lists other tensors, or maps at open");
  for (const std::string& name : lazy->names()) {
    check_on_demand(*lazy, name, data);
  }
  return 0;
}
