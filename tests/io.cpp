// io/: HF config.json reading, with the errors a malformed file must raise.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "ngemb/io/hf_config.hpp"
#include "ngemb/model/config_json.hpp"
#include "ngemb/model/sublayer_shape.hpp"

namespace {

const char* const lite_json = R"({
  "architectures": ["LongcatFlashNgramForCausalLM"], "vocab_size": 131072, "hidden_size": 3072,
  "emb_neighbor_num": 4, "emb_split_num": 4, "ngram_vocab_size_ratio": 78, "eos_token_id": 2,
  "num_layers": 14
})";

template <class Error>
void expect_error(const std::string& json, const std::string& needle) {
  try {
    (void)ngemb::parse_ngram_config(json, "model/config.json");
    FAIL("no exception; expected " << needle);
  } catch (const Error& failure) {
    INFO(failure.what());
    CHECK(std::string(failure.what()).find(needle) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("config.json of LongCat-Flash-Lite") {
  const auto config = ngemb::parse_ngram_config(lite_json);
  CHECK(config.vocab_size == 131072);
  CHECK(config.hidden_size == 3072);
  CHECK(config.max_order == 4);
  CHECK(config.splits == 4);
  CHECK(*config.ratio == 78.0);
  CHECK(*config.eos_token == 2);
  CHECK(config.modulus(0) == 10223617);
}

TEST_CASE("config.json: optional and alternative spellings") {
  auto config = ngemb::parse_ngram_config(
      R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3, "emb_split_num": 2,
          "ngram_vocab_size_ratio": 5.5, "eos_token_id": [7]})");
  CHECK(*config.eos_token == 7);
  CHECK(config.modulus(0) == 5501);
  config = ngemb::parse_ngram_config(
      R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3, "emb_split_num": 2,
          "ngram_vocab_size_ratio": 5, "eos_token_id": null})");
  CHECK_FALSE(config.eos_token.has_value());
  // Engines that give m_base = r*V directly (SPEC §1).
  config = ngemb::parse_ngram_config(
      R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3, "emb_split_num": 2, "m_base": 4096})");
  CHECK_FALSE(config.ratio.has_value());
  CHECK(config.modulus(0) == 4097);
  CHECK(config.modulus(3) == 4103);
}

TEST_CASE("config.json: malformed files name the file and the field") {
  expect_error<ngemb::format_error>("{\"vocab_size\": 5,", "model/config.json: not valid JSON");
  expect_error<ngemb::format_error>("[1, 2]", "top level must be a JSON object");
  expect_error<ngemb::format_error>(R"({"hidden_size": 64, "emb_neighbor_num": 3, "emb_split_num": 2,
      "ngram_vocab_size_ratio": 5})", "missing field \"vocab_size\"");
  expect_error<ngemb::format_error>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3,
      "emb_split_num": 2})", "missing field \"ngram_vocab_size_ratio\" (or \"m_base\")");
  expect_error<ngemb::format_error>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3,
      "emb_split_num": 2, "ngram_vocab_size_ratio": 5, "m_base": 5000})", "both \"ngram_vocab_size_ratio\" and \"m_base\"");
  expect_error<ngemb::format_error>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3,
      "emb_split_num": 2, "m_base": 5000.5})", "\"m_base\" must be an integer");
  expect_error<ngemb::format_error>(R"({"vocab_size": "1000", "hidden_size": 64, "emb_neighbor_num": 3,
      "emb_split_num": 2, "ngram_vocab_size_ratio": 5})", "\"vocab_size\" must be an integer, got \"1000\"");
  expect_error<ngemb::format_error>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3.5,
      "emb_split_num": 2, "ngram_vocab_size_ratio": 5})", "\"emb_neighbor_num\" must be an integer");
  expect_error<ngemb::format_error>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3,
      "emb_split_num": 2, "ngram_vocab_size_ratio": "5"})", "must be a number");
  expect_error<ngemb::format_error>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3,
      "emb_split_num": 2, "ngram_vocab_size_ratio": 5, "eos_token_id": [1, 2]})", "lists 2 ids");
  expect_error<ngemb::invalid_argument>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 1,
      "emb_split_num": 2, "ngram_vocab_size_ratio": 5})", "emb_neighbor_num (N) must be in [2, 64], got 1");
}

TEST_CASE("config.json from a file or a checkpoint folder") {
  const auto folder = std::filesystem::temp_directory_path() / "ngemb_test_io_config";
  std::filesystem::create_directories(folder);
  {
    std::ofstream(folder / "config.json") << lite_json;
  }
  CHECK(ngemb::read_ngram_config(folder).num_tables() == 12);
  CHECK(ngemb::read_ngram_config(folder / "config.json").row_width() == 256);
  CHECK_THROWS_AS(ngemb::read_ngram_config(folder / "absent.json"), ngemb::io_error);
  std::filesystem::remove_all(folder);
}

// ---------------------------------------------------------------------------------------------------------------
// safetensors: reader, checkpoint (shard index) reader and writer.

#include <array>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <random>
#include <span>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "mapping_cost.hpp"
#include "temp_folder.hpp"

namespace {

namespace fs = std::filesystem;

using ngemb_test::temp_folder;

template <class Unsigned>
std::string little_endian(Unsigned value) {
  std::string bytes;
  for (std::size_t i = 0; i < sizeof(Unsigned); ++i) {
    bytes += static_cast<char>((value >> (8 * i)) & 0xffu);
  }
  return bytes;
}

/// A file as the reference writer lays it out: header length, header padded with spaces to 8 bytes, data.
std::string safetensors_bytes(std::string header, const std::string& data = {}, bool pad = true) {
  if (pad) {
    header.append((8 - header.size() % 8) % 8, ' ');
  }
  return little_endian(std::uint64_t{header.size()}) + header + data;
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(stream.good());
}

std::string read_bytes(const fs::path& path) {
  std::ifstream stream(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
}

/// Runs `action`, which must throw Error with every needle in its message.
template <class Error, class Action>
void expect_failure(Action&& action, std::initializer_list<std::string> needles) {
  try {
    action();
    FAIL("no exception");
  } catch (const Error& failure) {
    const std::string message = failure.what();
    INFO(message);
    for (const std::string& needle : needles) {
      CAPTURE(needle);
      CHECK(message.find(needle) != std::string::npos);
    }
  }
}

/// Writes `bytes` to `name` in `folder` and opens it; the file must be rejected with every needle in the message
/// (the file's path is always one).
void expect_malformed(const temp_folder& folder, const std::string& bytes, std::initializer_list<std::string> needles,
                      const std::string& name = "bad.safetensors") {
  write_bytes(folder / name, bytes);
  expect_failure<ngemb::format_error>([&] { ngemb::safetensors_file file(folder / name); }, needles);
  expect_failure<ngemb::format_error>([&] { ngemb::safetensors_file file(folder / name); },
                                      {(folder / name).string()});
}

/// Non-zero values of both signs, so that a dropped or shifted byte shows.
std::vector<float> random_values(std::size_t count, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> magnitude(0.25f, 4.0f);
  std::vector<float> values(count);
  for (float& value : values) {
    value = (generator() % 2 == 0 ? 1.0f : -1.0f) * magnitude(generator);
  }
  return values;
}

template <class T>
std::vector<T> narrowed(const std::vector<float>& values) {
  std::vector<T> result;
  for (const float value : values) {
    result.push_back(ngemb::from_float<T>(value));
  }
  return result;
}

template <class T>
bool same_bits(ngemb::view<const T> actual, const std::vector<T>& expected) {
  return actual.size() == expected.size() &&
         (expected.empty() || std::memcmp(actual.data(), expected.data(), expected.size() * sizeof(T)) == 0);
}

const std::string f32_entry = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
const std::string sixteen_bytes(16, '\x01');

}  // namespace

TEST_CASE("safetensors: round trip of f32, bf16 and f16 tensors with metadata") {
  const temp_folder folder;
  const std::vector<float> weight = random_values(15, 1);
  const std::vector<ngemb::bf16> odd = narrowed<ngemb::bf16>(random_values(7, 2));  // 14 bytes: breaks alignment
  const std::vector<ngemb::fp16> half = narrowed<ngemb::fp16>(random_values(6, 3));
  const std::vector<float> bias = random_values(4, 4);
  const std::vector<float> none;
  const std::vector<ngemb::tensor_to_write> tensors{
      ngemb::tensor_to_write::of<ngemb::bf16>("odd", {7}, odd),
      ngemb::tensor_to_write::of<float>("weight", {3, 5}, weight),
      ngemb::tensor_to_write::of<ngemb::fp16>("half", {2, 3}, half),
      ngemb::tensor_to_write::of<float>("bias", {4}, bias),
      ngemb::tensor_to_write::of<float>("empty", {0, 4}, none),
  };
  const std::map<std::string, std::string> metadata{{"format", "pt"}, {"source", "ngemb test"}};
  ngemb::write_safetensors(folder / "model.safetensors", tensors, metadata);

  const std::string bytes = read_bytes(folder / "model.safetensors");
  const std::uint64_t header_size = ngemb::detail::load_u64_le(reinterpret_cast<const std::byte*>(bytes.data()));
  CHECK((8 + header_size) % 8 == 0);
  CHECK(bytes.size() == 8 + header_size + (60 + 14 + 12 + 16));

  ngemb::safetensors_file opened(folder / "model.safetensors");
  const ngemb::safetensors_file file = std::move(opened);  // the mapping moves with the object
  CHECK(file.path() == folder / "model.safetensors");
  CHECK(file.names() == std::vector<std::string>{"bias", "empty", "half", "odd", "weight"});
  CHECK(file.metadata() == metadata);
  CHECK(file.contains("weight"));
  CHECK_FALSE(file.contains("weights"));
  const ngemb::tensor_info& info = file.info("weight");
  CHECK(info.dtype == "F32");
  CHECK(info.shape == std::vector<std::int64_t>{3, 5});
  CHECK(info.num_elements() == 15);
  CHECK(info.end - info.begin == 60);
  CHECK(file.bytes("odd").size() == 14);

  const std::array<std::int64_t, 2> weight_shape{3, 5};
  CHECK(same_bits(file.tensor<float>("weight", weight_shape), weight));
  CHECK(same_bits(file.tensor<float>("bias"), bias));
  CHECK(same_bits(file.tensor<ngemb::bf16>("odd"), odd));
  CHECK(same_bits(file.tensor<ngemb::fp16>("half"), half));
  CHECK(file.tensor<float>("empty").empty());
  CHECK(file.info("empty").shape == std::vector<std::int64_t>{0, 4});
}

TEST_CASE("safetensors: a hand-made file laid out as the Hugging Face writer does") {
  const temp_folder folder;
  // Sorted by decreasing dtype size, compact JSON, "__metadata__" first, padded with spaces.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]},)"
      R"("bias":{"dtype":"BF16","shape":[3],"data_offsets":[24,30]}})";
  const std::string data = little_endian(std::uint64_t{42}) + little_endian(std::uint32_t{0x3f800000}) +  // 1
                           little_endian(std::uint32_t{0xc0000000}) + little_endian(std::uint32_t{0x3f000000}) +
                           little_endian(std::uint32_t{0x40400000}) +  // -2, 0.5, 3
                           little_endian(std::uint16_t{0x3f80}) + little_endian(std::uint16_t{0xbfc0}) +
                           little_endian(std::uint16_t{0x3e80});  // 1, -1.5, 0.25
  const std::string bytes = safetensors_bytes(header, data);
  REQUIRE(bytes.size() % 8 == 6);  // the 8-byte prefix plus the padded header is a multiple of 8
  write_bytes(folder / "hand.safetensors", bytes);

  const ngemb::safetensors_file file(folder / "hand.safetensors");
  CHECK(file.metadata() == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(file.info("ids").dtype == "I64");
  std::int64_t id = 0;
  std::memcpy(&id, file.bytes("ids").data(), sizeof id);
  CHECK(id == 42);
  const auto weight = file.tensor<float>("weight");
  REQUIRE(weight.size() == 4);
  CHECK(weight[0] == 1.0f);
  CHECK(weight[1] == -2.0f);
  CHECK(weight[2] == 0.5f);
  CHECK(weight[3] == 3.0f);
  const auto bias = file.tensor<ngemb::bf16>("bias");
  REQUIRE(bias.size() == 3);
  CHECK(ngemb::to_float(bias[0]) == 1.0f);
  CHECK(ngemb::to_float(bias[1]) == -1.5f);
  CHECK(ngemb::to_float(bias[2]) == 0.25f);

  // The writer produces the same bytes, whatever order the tensors come in within one dtype size.
  const std::vector<ngemb::tensor_to_write> tensors{
      {"bias", "BF16", {3}, file.bytes("bias")},
      {"weight", "F32", {2, 2}, file.bytes("weight")},
      {"ids", "I64", {1}, file.bytes("ids")},
  };
  ngemb::write_safetensors(folder / "written.safetensors", tensors, {{"format", "pt"}});
  CHECK(read_bytes(folder / "written.safetensors") == bytes);
}

TEST_CASE("safetensors: empty tensors, an empty data buffer, sub-byte dtypes") {
  const temp_folder folder;
  write_bytes(folder / "empty.safetensors",
              safetensors_bytes(R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})"));
  const ngemb::safetensors_file file(folder / "empty.safetensors");
  CHECK(file.tensor<float>("e").empty());
  CHECK(file.bytes("e").empty());
  CHECK(file.info("e").num_elements() == 0);

  // Sub-byte dtypes are sized in bits: 4 F4 values fill 2 bytes.
  write_bytes(folder / "packed.safetensors",
              safetensors_bytes(R"({"q":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}})", std::string(2, '\x12')));
  CHECK(ngemb::safetensors_file(folder / "packed.safetensors").bytes("q").size() == 2);

  write_bytes(folder / "nothing.safetensors", safetensors_bytes("{}"));
  CHECK(ngemb::safetensors_file(folder / "nothing.safetensors").names().empty());

  // A zero-length region occupies no bytes, so it overlaps nothing.
  write_bytes(folder / "inside.safetensors",
              safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                                R"("e":{"dtype":"BF16","shape":[2,0],"data_offsets":[4,4]}})",
                                sixteen_bytes));
  CHECK(ngemb::safetensors_file(folder / "inside.safetensors").tensor<ngemb::bf16>("e").empty());
}

TEST_CASE("safetensors: files too short or truncated") {
  const temp_folder folder;
  const std::string whole = safetensors_bytes(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
      sixteen_bytes);
  write_bytes(folder / "whole.safetensors", whole);
  CHECK(ngemb::safetensors_file(folder / "whole.safetensors").names().size() == 2);
  const std::size_t data_start = whole.size() - 16;

  expect_malformed(folder, "", {"0 bytes", "too short"});
  expect_malformed(folder, whole.substr(0, 5), {"5 bytes", "too short"});
  expect_malformed(folder, whole.substr(0, 8), {"truncated"});
  expect_malformed(folder, whole.substr(0, 40), {"truncated", "only 32 bytes follow"});
  expect_malformed(folder, whole.substr(0, data_start - 1), {"truncated"});
  expect_malformed(folder, whole.substr(0, data_start), {"tensor \"a\"", "beyond the end of the data"});
  expect_malformed(folder, whole.substr(0, data_start + 12), {"tensor \"b\"", "beyond the end of the data"});
  expect_malformed(folder, little_endian(std::uint64_t{1} << 40) + "{}", {"header length 1099511627776", "limit"});
}

TEST_CASE("safetensors: malformed headers name the file and the tensor") {
  const temp_folder folder;
  const auto entry = [](const std::string& body) { return R"({"w":)" + body + "}"; };
  expect_malformed(folder, safetensors_bytes(R"({"w": {"dtype": )"), {"not valid JSON"});
  expect_malformed(folder, safetensors_bytes("[1, 2]"), {"must be a JSON object"});
  expect_malformed(folder, safetensors_bytes(entry("5")), {"tensor \"w\"", "entry must be a JSON object"});
  expect_malformed(folder, safetensors_bytes(entry(R"({"shape":[4],"data_offsets":[0,16]})"), sixteen_bytes),
                   {"tensor \"w\"", "missing field \"dtype\""});
  expect_malformed(folder, safetensors_bytes(entry(R"({"dtype":"F32","data_offsets":[0,16]})"), sixteen_bytes),
                   {"tensor \"w\"", "missing field \"shape\""});
  expect_malformed(folder, safetensors_bytes(entry(R"({"dtype":"F32","shape":[4]})"), sixteen_bytes),
                   {"tensor \"w\"", "missing field \"data_offsets\""});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":32,"shape":[4],"data_offsets":[0,16]})"), sixteen_bytes),
                   {"tensor \"w\"", "\"dtype\" must be a string"});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"F32","shape":"4","data_offsets":[0,16]})"), sixteen_bytes),
                   {"tensor \"w\"", "\"shape\" must be an array of integers"});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"F32","shape":[4.0],"data_offsets":[0,16]})"), sixteen_bytes),
                   {"tensor \"w\"", "\"shape\" must be an array of integers"});
  expect_malformed(folder, safetensors_bytes(entry(R"({"dtype":"F32","shape":[4],"data_offsets":[0]})"), sixteen_bytes),
                   {"tensor \"w\"", "\"data_offsets\" must be [begin, end]"});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"F32","shape":[4],"data_offsets":[0,"16"]})"), sixteen_bytes),
                   {"tensor \"w\"", "\"data_offsets\" must be [begin, end]"});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"F32","shape":[0],"data_offsets":[-4,0]})"), sixteen_bytes),
                   {"tensor \"w\"", "\"data_offsets\" must be [begin, end]"});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})"), sixteen_bytes),
                   {"tensor \"w\"", "0 <= begin <= end", "[8,4]"});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"Q4","shape":[4],"data_offsets":[0,16]})"), sixteen_bytes),
                   {"tensor \"w\"", "unknown dtype \"Q4\""});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"F32","shape":[-2,-2],"data_offsets":[0,16]})"),
                                     sixteen_bytes),
                   {"tensor \"w\"", "shape [-2, -2]", "negative dimension"});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]})"),
                                     sixteen_bytes),
                   {"tensor \"w\"", "more than 2^63-1 elements"});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"F4","shape":[3],"data_offsets":[0,2]})"), sixteen_bytes),
                   {"tensor \"w\"", "shape [3] of F4 is not a whole number of bytes"});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,12]})"), sixteen_bytes),
                   {"tensor \"w\"", "hold 12 bytes", "shape [2, 2] of F32 needs 16"});
  expect_malformed(folder,
                   safetensors_bytes(entry(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,400]})"), sixteen_bytes),
                   {"tensor \"w\"", "[0, 400]", "beyond the end of the data"});
  expect_malformed(folder,
                   safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                     sixteen_bytes),
                   {"\"a\" [0, 12]", "\"b\" [8, 12]", "overlap"});
  expect_malformed(folder, safetensors_bytes(R"({"__metadata__":{"format":1}})"),
                   {"\"__metadata__\" must map strings to strings", "\"format\""});
  expect_malformed(folder, safetensors_bytes(R"({"__metadata__":["pt"]})"), {"\"__metadata__\" must be an object"});
}

TEST_CASE("safetensors: lookups check the name, dtype, shape and alignment") {
  const temp_folder folder;
  write_bytes(folder / "w.safetensors", safetensors_bytes(f32_entry, sixteen_bytes));
  const ngemb::safetensors_file file(folder / "w.safetensors");
  const std::string path = (folder / "w.safetensors").string();
  expect_failure<ngemb::format_error>([&] { (void)file.info("nope"); }, {path + ": no tensor \"nope\""});
  expect_failure<ngemb::format_error>([&] { (void)file.tensor<float>("nope"); }, {path, "no tensor \"nope\""});
  expect_failure<ngemb::format_error>([&] { (void)file.tensor<ngemb::bf16>("w"); },
                                      {path + ": tensor \"w\" has dtype F32, expected BF16"});
  const std::array<std::int64_t, 1> flat{4};
  expect_failure<ngemb::format_error>([&] { (void)file.tensor<float>("w", flat); },
                                      {path + ": tensor \"w\" has shape [2, 2], expected [4]"});

  // A 2-byte tensor first puts the F32 one at an odd multiple of 2: its bytes are readable, a float view is not.
  write_bytes(folder / "misaligned.safetensors",
              safetensors_bytes(R"({"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},)"
                                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
                                std::string(6, '\0')));
  const ngemb::safetensors_file misaligned(folder / "misaligned.safetensors");
  CHECK(misaligned.tensor<ngemb::bf16>("a").size() == 1);
  CHECK(misaligned.bytes("b").size() == 4);
  expect_failure<ngemb::format_error>([&] { (void)misaligned.tensor<float>("b"); },
                                      {(folder / "misaligned.safetensors").string(), "tensor \"b\"", "not aligned"});

  // A header not padded to 8 bytes shifts the whole data buffer.
  write_bytes(folder / "unpadded.safetensors",
              safetensors_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'),
                                false));
  const ngemb::safetensors_file unpadded(folder / "unpadded.safetensors");
  expect_failure<ngemb::format_error>([&] { (void)unpadded.tensor<float>("w"); }, {"tensor \"w\"", "not aligned"});

  expect_failure<ngemb::io_error>([&] { ngemb::safetensors_file absent(folder / "absent.safetensors"); },
                                  {(folder / "absent.safetensors").string(), "No such file"});
}

TEST_CASE("safetensors: sharded checkpoint round trip") {
  const temp_folder folder;
  const std::vector<float> a = random_values(16, 11);
  const std::vector<ngemb::bf16> b = narrowed<ngemb::bf16>(random_values(8, 12));
  const std::vector<ngemb::fp16> c = narrowed<ngemb::fp16>(random_values(16, 13));
  const std::vector<float> big = random_values(64, 14);
  const std::vector<ngemb::bf16> d = narrowed<ngemb::bf16>(random_values(4, 15));
  const std::vector<ngemb::tensor_to_write> tensors{
      ngemb::tensor_to_write::of<float>("a", {4, 4}, a),           // 64 bytes  -> shard 1
      ngemb::tensor_to_write::of<ngemb::bf16>("b", {8}, b),        // 16 bytes  -> shard 1 (80)
      ngemb::tensor_to_write::of<ngemb::fp16>("c", {2, 8}, c),     // 32 bytes  -> shard 2
      ngemb::tensor_to_write::of<float>("big", {8, 8}, big),       // 256 bytes -> shard 3, alone
      ngemb::tensor_to_write::of<ngemb::bf16>("d", {2, 2}, d),     // 8 bytes   -> shard 4
  };
  const fs::path sharded = folder / "sharded";
  ngemb::write_safetensors_checkpoint(sharded, tensors, 100);

  const std::map<std::string, std::string> expected_shards{
      {"a", "model-00001-of-00004.safetensors"}, {"b", "model-00001-of-00004.safetensors"},
      {"c", "model-00002-of-00004.safetensors"}, {"big", "model-00003-of-00004.safetensors"},
      {"d", "model-00004-of-00004.safetensors"}};
  const auto index = nlohmann::json::parse(read_bytes(sharded / "model.safetensors.index.json"));
  CHECK(index["metadata"]["total_size"] == 376);
  CHECK(index["weight_map"].get<std::map<std::string, std::string>>() == expected_shards);
  CHECK_FALSE(fs::exists(sharded / "model.safetensors"));

  const auto check_all = [&](const ngemb::safetensors_checkpoint& checkpoint) {
    CHECK(checkpoint.folder() == sharded);
    CHECK(checkpoint.names() == std::vector<std::string>{"a", "b", "big", "c", "d"});
    for (const auto& [name, shard] : expected_shards) {
      CHECK(checkpoint.contains(name));
      CHECK(checkpoint.file_of(name).path().filename() == shard);
    }
    const std::array<std::int64_t, 2> big_shape{8, 8};
    CHECK(same_bits(checkpoint.tensor<float>("a"), a));
    CHECK(same_bits(checkpoint.tensor<ngemb::bf16>("b"), b));
    CHECK(same_bits(checkpoint.tensor<ngemb::fp16>("c"), c));
    CHECK(same_bits(checkpoint.tensor<float>("big", big_shape), big));
    CHECK(same_bits(checkpoint.tensor<ngemb::bf16>("d"), d));
    CHECK(checkpoint.info("c").shape == std::vector<std::int64_t>{2, 8});
    CHECK(&checkpoint.file_of("a") == &checkpoint.file_of("b"));  // one mapping per shard
  };
  check_all(ngemb::safetensors_checkpoint(sharded));
  check_all(ngemb::safetensors_checkpoint(sharded / "model.safetensors.index.json"));

  const ngemb::safetensors_checkpoint index_checkpoint(sharded / "model.safetensors.index.json");
  const std::string index_path = (sharded / "model.safetensors.index.json").string();
  expect_failure<ngemb::format_error>([&] { (void)index_checkpoint.info("e"); }, {index_path, "no tensor \"e\""});
  expect_failure<ngemb::format_error>([&] { (void)index_checkpoint.tensor<float>("c"); },
                                      {"model-00002-of-00004.safetensors", "tensor \"c\"", "expected F32"});

  const ngemb::safetensors_checkpoint one_file(sharded / "model-00003-of-00004.safetensors");
  CHECK(one_file.folder() == sharded);
  CHECK(one_file.names() == std::vector<std::string>{"big"});
  CHECK(same_bits(one_file.tensor<float>("big"), big));

  // Without an index, a folder is every .safetensors file in it.
  fs::remove(sharded / "model.safetensors.index.json");
  const ngemb::safetensors_checkpoint scanned(sharded);
  CHECK(scanned.names().size() == 5);
  CHECK(same_bits(scanned.tensor<ngemb::fp16>("c"), c));

  // One shard is just model.safetensors; it replaces a stale index that would otherwise shadow it.
  ngemb::write_safetensors_checkpoint(sharded, tensors, 100);
  REQUIRE(fs::exists(sharded / "model.safetensors.index.json"));
  ngemb::write_safetensors_checkpoint(sharded, tensors, std::size_t{1} << 20);
  CHECK_FALSE(fs::exists(sharded / "model.safetensors.index.json"));
  const ngemb::safetensors_checkpoint single(sharded);
  CHECK(single.file_of("a").path().filename() == "model.safetensors");
  CHECK(&single.file_of("a") == &single.file_of("d"));
  CHECK(same_bits(single.tensor<float>("big"), big));
}

TEST_CASE("safetensors: malformed checkpoints and indexes") {
  const temp_folder folder;
  write_bytes(folder / "w.safetensors", safetensors_bytes(f32_entry, sixteen_bytes));
  const auto expect_bad_index = [&](const std::string& json, std::initializer_list<std::string> needles) {
    write_bytes(folder / "model.safetensors.index.json", json);
    expect_failure<ngemb::format_error>([&] { ngemb::safetensors_checkpoint checkpoint(folder.path()); }, needles);
  };
  const std::string index_path = (folder / "model.safetensors.index.json").string();
  expect_bad_index(R"({"weight_map": {)", {index_path, "not valid JSON"});
  expect_bad_index(R"({"metadata": {}})", {index_path, "\"weight_map\""});
  expect_bad_index(R"({"weight_map": ["w.safetensors"]})", {index_path, "\"weight_map\""});
  expect_bad_index(R"({"weight_map": {"w": 3}})", {index_path, "tensor \"w\"", "file name string"});
  expect_bad_index(R"({"weight_map": {"w": "../w.safetensors"}})", {index_path, "\"../w.safetensors\"", "relative"});
  expect_bad_index(R"({"weight_map": {"w": "/etc/passwd"}})", {index_path, "\"/etc/passwd\"", "relative"});
  expect_bad_index(R"({"weight_map": {"w": "w.safetensors", "v": "w.safetensors"}})",
                   {index_path, "tensor \"v\"", (folder / "w.safetensors").string(), "does not contain it"});

  write_bytes(folder / "model.safetensors.index.json", R"({"weight_map": {"w": "absent.safetensors"}})");
  expect_failure<ngemb::io_error>([&] { ngemb::safetensors_checkpoint checkpoint(folder.path()); },
                                  {index_path, "absent.safetensors", "No such file"});

  // A shard that is itself malformed is reported with its own path.
  write_bytes(folder / "broken.safetensors", "short");
  write_bytes(folder / "model.safetensors.index.json", R"({"weight_map": {"w": "broken.safetensors"}})");
  expect_failure<ngemb::format_error>([&] { ngemb::safetensors_checkpoint checkpoint(folder.path()); },
                                      {(folder / "broken.safetensors").string(), "too short"});

  // Without an index, one name in two files is ambiguous.
  fs::remove(folder / "model.safetensors.index.json");
  fs::remove(folder / "broken.safetensors");
  write_bytes(folder / "x.safetensors", safetensors_bytes(f32_entry, sixteen_bytes));
  expect_failure<ngemb::format_error>([&] { ngemb::safetensors_checkpoint checkpoint(folder.path()); },
                                      {"tensor \"w\"", (folder / "w.safetensors").string(),
                                       (folder / "x.safetensors").string()});

  fs::create_directory(folder / "empty");
  expect_failure<ngemb::io_error>([&] { ngemb::safetensors_checkpoint checkpoint(folder / "empty"); },
                                  {(folder / "empty").string(), "no .safetensors files"});
}

TEST_CASE("safetensors: the writer rejects bad input") {
  const temp_folder folder;
  const std::vector<float> four(4, 1.0f);
  const auto as_bytes = std::as_bytes(std::span<const float>(four));
  const auto write = [&](std::vector<ngemb::tensor_to_write> tensors) {
    ngemb::write_safetensors(folder / "out.safetensors", tensors);
  };
  expect_failure<ngemb::invalid_argument>([&] { write({{"w", "F32", {4}, as_bytes}, {"w", "F32", {4}, as_bytes}}); },
                                          {"tensor \"w\" appears twice"});
  expect_failure<ngemb::invalid_argument>([&] { write({{"w", "F31", {4}, as_bytes}}); },
                                          {"tensor \"w\"", "unknown dtype \"F31\""});
  expect_failure<ngemb::invalid_argument>([&] { write({{"__metadata__", "F32", {4}, as_bytes}}); }, {"reserved"});
  expect_failure<ngemb::invalid_argument>([&] { write({{"w", "F32", {-4}, as_bytes}}); }, {"tensor \"w\"", "[-4]"});
  expect_failure<ngemb::shape_mismatch>([&] { write({{"w", "F32", {2, 3}, as_bytes}}); },
                                        {"tensor \"w\"", "needs 24 bytes, got 16"});
  expect_failure<ngemb::shape_mismatch>(
      [&] { (void)ngemb::tensor_to_write::of<float>("w", {3}, four); }, {"tensor \"w\"", "shape [3]", "got 4"});
  const std::vector<ngemb::tensor_to_write> one{{"w", "F32", {4}, as_bytes}};
  expect_failure<ngemb::invalid_argument>([&] { ngemb::write_safetensors_checkpoint(folder.path(), one, 0); },
                                          {"max_shard_bytes"});
  expect_failure<ngemb::io_error>([&] { ngemb::write_safetensors(folder / "no" / "such" / "x.safetensors", one); },
                                  {"x.safetensors", "No such file"});
  CHECK_FALSE(fs::exists(folder / "out.safetensors"));  // nothing half-written
}

// ---------------------------------------------------------------------------------------------------------------
// Hardening (issue 9): crafted files get a typed error naming the file, never a crash, a hang or a foreign exception.

#include <sys/stat.h>
#include <unistd.h>

namespace {

/// `depth` nested arrays: a recursive dump of this for an error message used to overflow the stack.
std::string deeply_nested(std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

const std::string small_config_fields =
    R"("emb_neighbor_num": 3, "emb_split_num": 2, "ngram_vocab_size_ratio": 5)";

}  // namespace

TEST_CASE("hardening: a JSON number overflow is a format_error naming the file, in every reader") {
  const temp_folder folder;
  expect_malformed(folder, safetensors_bytes(R"({"a":1e999})"), {"not valid JSON", "number overflow"});
  expect_failure<ngemb::format_error>(
      [&] { (void)ngemb::parse_ngram_config(R"({"vocab_size": 1e999})", "model/config.json"); },
      {"model/config.json", "not valid JSON"});
  write_bytes(folder / "w.safetensors", safetensors_bytes(f32_entry, sixteen_bytes));
  write_bytes(folder / "model.safetensors.index.json", R"({"metadata": {"total_size": 1e999}, "weight_map": {}})");
  expect_failure<ngemb::format_error>([&] { ngemb::safetensors_checkpoint checkpoint(folder.path()); },
                                      {(folder / "model.safetensors.index.json").string(), "not valid JSON"});
}

TEST_CASE("hardening: deep nesting is refused without recursion, in every reader") {
  const temp_folder folder;
  const std::string deep = deeply_nested(100'000);
  expect_malformed(folder, safetensors_bytes(R"({"x":)" + deep + "}"), {"nests deeper than 64 levels"});
  const std::string shallow_but_wrong = R"({"w":)" + deeply_nested(40) + "}";  // parses; the message must not dump it
  expect_failure<ngemb::format_error>(
      [&] {
        write_bytes(folder / "w40.safetensors", safetensors_bytes(shallow_but_wrong));
        ngemb::safetensors_file file(folder / "w40.safetensors");
      },
      {"tensor \"w\"", "entry must be a JSON object, got an array of 1 elements"});
  for (const char* field : {"vocab_size", "eos_token_id"}) {
    CAPTURE(field);
    const std::string json = std::string(R"({"vocab_size": 1000, "hidden_size": 64, )") + small_config_fields +
                             ", \"" + field + "\": " + deep + "}";
    expect_failure<ngemb::format_error>([&] { (void)ngemb::parse_ngram_config(json, "c.json"); },
                                        {"c.json", "nests deeper"});
    const std::string json40 = std::string(R"({"vocab_size": 1000, "hidden_size": 64, )") + small_config_fields +
                               ", \"" + field + "\": " + deeply_nested(40) + "}";
    expect_failure<ngemb::format_error>([&] { (void)ngemb::parse_ngram_config(json40, "c.json"); },
                                        {"c.json", "an array of"});
  }
  write_bytes(folder / "model.safetensors.index.json", R"({"weight_map": )" + deep + "}");
  expect_failure<ngemb::format_error>([&] { ngemb::safetensors_checkpoint checkpoint(folder.path()); },
                                      {"nests deeper"});
}

TEST_CASE("hardening: integers out of range are errors naming the field, never truncated or wrapped") {
  const auto config = [](const std::string& fields) { return "{" + fields + ", " + small_config_fields + "}"; };
  expect_failure<ngemb::invalid_argument>(
      [&] {
        (void)ngemb::parse_ngram_config(config(R"("vocab_size": 1, "hidden_size": 1317624576693539401)"), "c.json");
      },
      {"hidden_size (H) 1317624576693539401 is larger than 2^20"});
  expect_failure<ngemb::invalid_argument>(
      [&] {
        (void)ngemb::parse_ngram_config(config(R"("vocab_size": 18446744073709551615, "hidden_size": 64)"), "c.json");
      },
      {"c.json", "vocab_size = 18446744073709551615 is outside"});
  expect_failure<ngemb::invalid_argument>(
      [&] {
        (void)ngemb::parse_ngram_config(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 4294967299,
                                           "emb_split_num": 2, "ngram_vocab_size_ratio": 5})",
                                        "c.json");
      },
      {"emb_neighbor_num = 4294967299 is outside [-2147483648, 2147483647]"});
  expect_failure<ngemb::invalid_argument>(
      [&] {
        (void)ngemb::parse_ngram_config(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3,
                                           "emb_split_num": 2, "m_base": 9223372036854775807})",
                                        "c.json");
      },
      {"m_base must be in [0, 2^32), got 9223372036854775807"});
}

TEST_CASE("hardening: non-regular files and unreadable paths are io_errors, never a hang or filesystem_error") {
  const temp_folder folder;
  fs::create_directory(folder / "fifo_checkpoint");
  REQUIRE(::mkfifo((folder / "fifo_checkpoint" / "config.json").c_str(), 0600) == 0);
  REQUIRE(::mkfifo((folder / "fifo_checkpoint" / "model.safetensors").c_str(), 0600) == 0);
  expect_failure<ngemb::io_error>([&] { (void)ngemb::read_ngram_config(folder / "fifo_checkpoint"); },
                                  {"config.json", "not a regular file (a FIFO)"});
  expect_failure<ngemb::io_error>(
      [&] { ngemb::safetensors_checkpoint checkpoint(folder / "fifo_checkpoint"); },
      {"model.safetensors", "not a regular file (a FIFO)"});
  expect_failure<ngemb::io_error>([&] { ngemb::safetensors_file file(folder.path()); }, {"a folder"});

  const fs::path too_long = folder / std::string(5000, 'x');
  expect_failure<ngemb::io_error>([&] { (void)ngemb::read_ngram_config(too_long); }, {"File name too long"});
  fs::create_symlink(folder / "loop_b", folder / "loop_a");
  fs::create_symlink(folder / "loop_a", folder / "loop_b");
  expect_failure<ngemb::io_error>([&] { (void)ngemb::read_ngram_config(folder / "loop_a"); },
                                  {"loop_a", "Too many levels of symbolic links"});
  expect_failure<ngemb::io_error>([&] { ngemb::safetensors_checkpoint checkpoint(folder / "loop_a"); },
                                  {"loop_a"});
}

TEST_CASE("hardening: the writer refuses tensor names and metadata that are not UTF-8") {
  const temp_folder folder;
  const std::vector<float> four(4, 1.0f);
  const auto as_bytes = std::as_bytes(std::span<const float>(four));
  const std::vector<ngemb::tensor_to_write> bad_name{{"w\xff\xfe", "F32", {4}, as_bytes}};
  expect_failure<ngemb::invalid_argument>([&] { ngemb::write_safetensors(folder / "out.safetensors", bad_name); },
                                          {"tensor \"w\\xff\\xfe\"", "not valid UTF-8"});
  const std::vector<ngemb::tensor_to_write> good{{"w", "F32", {4}, as_bytes}};
  expect_failure<ngemb::invalid_argument>(
      [&] { ngemb::write_safetensors(folder / "out.safetensors", good, {{"format", "\xc3"}}); }, {"not valid UTF-8"});
  CHECK_FALSE(fs::exists(folder / "out.safetensors"));
}

// ---- Checkpoint folders written whole (io/checkpoint_folder.hpp; issue 9, defect 9) ----

#include <algorithm>
#include <unistd.h>

#include "ngemb/io/checkpoint_folder.hpp"

namespace {

using names = std::vector<std::string>;

/// The names in `folder` (hidden ones included), sorted.
names entries(const fs::path& folder) {
  names found;
  for (const auto& entry : fs::directory_iterator(folder)) {
    found.push_back(entry.path().filename().string());
  }
  std::sort(found.begin(), found.end());
  return found;
}

/// A writer that puts `files` (name, content) into the staging folder, which must lie beside `target`.
auto writes(const fs::path& target, std::map<std::string, std::string> files) {
  return [target, files = std::move(files)](const fs::path& staging) {
    CHECK(staging.parent_path() == fs::absolute(target).parent_path());
    CHECK(entries(staging).empty());
    for (const auto& [name, content] : files) {
      write_bytes(staging / name, content);
    }
  };
}

}  // namespace

TEST_CASE("checkpoint folder: written whole into a new or empty folder; another checkpoint's folder is refused") {
  const temp_folder root;
  const fs::path target = root / "models" / "new";  // the parent is created too
  ngemb::write_checkpoint_folder(target, {}, writes(target, {{"config.json", "{}"}, {"model.safetensors", "x"}}));
  CHECK(entries(target) == names{"config.json", "model.safetensors"});
  CHECK(entries(root / "models") == names{"new"});  // no staging folder left beside it

  fs::create_directory(root / "empty");
  ngemb::write_checkpoint_folder(root / "empty/", {}, writes(root / "empty", {{"config.json", "[]"}}));
  CHECK(entries(root / "empty") == names{"config.json"});

  // A folder that holds files (another model's checkpoint) stays as it was, whatever the writer would write.
  expect_failure<ngemb::io_error>(
      [&] { ngemb::write_checkpoint_folder(target, {}, writes(target, {{"config.json", "other"}})); },
      {target.string(), "not empty", "overwrite = true"});
  CHECK(read_bytes(target / "config.json") == "{}");
  CHECK(entries(target) == names{"config.json", "model.safetensors"});
  CHECK(entries(root / "models") == names{"new"});
}

TEST_CASE("checkpoint folder: overwrite replaces the old folder as a whole") {
  for (const bool exchange : {true, false}) {
    CAPTURE(exchange);
    const temp_folder root;
    const fs::path target = root / "model";
    ngemb::write_checkpoint_folder(target, {}, writes(target, {{"config.json", "old"},
                                                               {"model-00001-of-00002.safetensors", "1"},
                                                               {"model-00002-of-00002.safetensors", "2"},
                                                               {"model.safetensors.index.json", "index"}}));
    if (exchange) {
      ngemb::write_checkpoint_folder(target, {.overwrite = true},
                                     writes(target, {{"config.json", "new"}, {"model.safetensors", "x"}}));
    } else {  // the fallback where the file system cannot exchange two folders: aside, in, remove
      const fs::path staging = root / ".model.saving-test";
      fs::create_directory(staging);
      write_bytes(staging / "config.json", "new");
      write_bytes(staging / "model.safetensors", "x");
      const fs::path old = ngemb::detail::replace_folder(staging, target, root.path(), "model", false);
      CHECK(old != staging);
      CHECK(read_bytes(old / "config.json") == "old");
      fs::remove_all(old);
    }
    CHECK(entries(target) == names{"config.json", "model.safetensors"});  // no stale shard or index
    CHECK(read_bytes(target / "config.json") == "new");
    CHECK(entries(root.path()) == names{"model"});
  }
}

TEST_CASE("checkpoint folder: a failure leaves the target as it was and nothing beside it") {
  const temp_folder root;
  const fs::path target = root / "model";
  const auto failing = [&](const fs::path& staging) {
    write_bytes(staging / "model.safetensors", "x");
    throw ngemb::io_error("disk full");
  };
  SUBCASE("the writer fails: a new folder is not created") {
    expect_failure<ngemb::io_error>([&] { ngemb::write_checkpoint_folder(target, {}, failing); }, {"disk full"});
    CHECK(entries(root.path()).empty());
  }
  SUBCASE("the writer fails: the folder it would replace keeps its files") {
    fs::create_directory(target);
    write_bytes(target / "config.json", "old");
    expect_failure<ngemb::io_error>([&] { ngemb::write_checkpoint_folder(target, {.overwrite = true}, failing); },
                                    {"disk full"});
    CHECK(entries(target) == names{"config.json"});
    CHECK(entries(root.path()) == names{"model"});
  }
  SUBCASE("the empty target is filled by someone else while writing") {
    fs::create_directory(target);
    expect_failure<ngemb::io_error>(
        [&] {
          ngemb::write_checkpoint_folder(target, {}, [&](const fs::path& staging) {
            write_bytes(staging / "config.json", "mine");
            write_bytes(target / "config.json", "theirs");
          });
        },
        {target.string(), "not empty"});
    CHECK(read_bytes(target / "config.json") == "theirs");
    CHECK(entries(root.path()) == names{"model"});
  }
  SUBCASE("the target is a file or a symbolic link") {
    write_bytes(root / "file", "keep");
    expect_failure<ngemb::io_error>(
        [&] { ngemb::write_checkpoint_folder(root / "file", {.overwrite = true}, writes(root / "file", {})); },
        {(root / "file").string(), "not a folder"});
    CHECK(read_bytes(root / "file") == "keep");
    fs::create_directory(root / "elsewhere");
    fs::create_directory_symlink(root / "elsewhere", root / "link");
    expect_failure<ngemb::io_error>(
        [&] { ngemb::write_checkpoint_folder(root / "link", {}, writes(root / "link", {{"config.json", "{}"}})); },
        {(root / "link").string(), "symbolic link"});
    CHECK(entries(root / "elsewhere").empty());
    CHECK(entries(root.path()) == names{"elsewhere", "file", "link"});
  }
  SUBCASE("the parent is a file") {
    write_bytes(root / "file", "keep");
    expect_failure<ngemb::io_error>(
        [&] { ngemb::write_checkpoint_folder(root / "file" / "model", {}, writes(root / "file" / "model", {})); },
        {(root / "file").string()});
    CHECK(entries(root.path()) == names{"file"});
  }
  SUBCASE("the name is longer than the file system allows") {
    const fs::path long_name = root / std::string(300, 'n');
    expect_failure<ngemb::io_error>(
        [&] { ngemb::write_checkpoint_folder(long_name, {}, writes(long_name, {{"config.json", "{}"}})); },
        {long_name.string(), "File name too long"});
    CHECK(entries(root.path()).empty());
  }
}

TEST_CASE("hardening: a shard name with a NUL byte is refused, not cut short into another file's name") {
  const temp_folder folder;
  write_bytes(folder / "w.safetensors", safetensors_bytes(f32_entry, sixteen_bytes));
  write_bytes(folder / "model.safetensors.index.json",
              std::string(R"({"weight_map": {"w": "w.safetensors\u0000.other"}})"));
  expect_failure<ngemb::format_error>([&] { ngemb::safetensors_checkpoint checkpoint(folder.path()); },
                                      {"w.safetensors\\x00.other", "contains a NUL byte"});
  expect_failure<ngemb::io_error>(
      [&] { ngemb::safetensors_file file(fs::path(std::string("w.safetensors\0x", 15))); }, {"NUL byte"});
}

// ---- The checkpoint interface over a user's own storage ----------------------------------------------------------

#include <functional>
#include <string_view>

#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/rms_norm.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace {

/// An engine's own storage behind ngemb::checkpoint: tensors held in memory (a blob store or a network cache
/// looks the same). Only the five virtual members are written here; typed views, shape checks and every loader
/// come with the interface.
class memory_checkpoint final : public ngemb::checkpoint {
 public:
  /// Copies what parts saved, as an engine copies tensors into its own storage.
  explicit memory_checkpoint(const ngemb::tensor_collection& saved) {
    for (const ngemb::tensor_to_write& tensor : saved.tensors()) {
      stored& entry = tensors_[tensor.name];
      entry.info = {tensor.name, tensor.dtype, tensor.shape, 0, tensor.data.size()};
      entry.bytes.assign(tensor.data.begin(), tensor.data.end());
    }
  }

  [[nodiscard]] bool contains(std::string_view name) const override { return tensors_.contains(name); }
  [[nodiscard]] const ngemb::tensor_info& info(std::string_view name) const override { return find(name).info; }
  [[nodiscard]] std::span<const std::byte> bytes(std::string_view name) const override { return find(name).bytes; }
  [[nodiscard]] std::vector<std::string> names() const override {
    std::vector<std::string> result;
    for (const auto& entry : tensors_) {
      result.push_back(entry.first);
    }
    return result;
  }
  [[nodiscard]] std::string location_of(std::string_view name) const override {
    (void)find(name);
    return "memory";
  }

 private:
  struct stored {
    ngemb::tensor_info info;
    std::vector<std::byte> bytes;  // operator new aligns it for every storage type
  };

  [[nodiscard]] const stored& find(std::string_view name) const {
    const auto found = tensors_.find(name);
    if (found == tensors_.end()) {
      throw ngemb::format_error("memory: no tensor \"" + std::string(name) + "\"");
    }
    return found->second;
  }

  std::map<std::string, stored, std::less<>> tensors_;
};

}  // namespace

TEST_CASE("checkpoint: a user's own storage behind the interface loads parts, with the same checks") {
  const ngemb::host_policy policy{1};
  const std::vector<float> weight = {0.5f, 1.0f, 1.5f, 2.0f};
  const ngemb::rms_norm<ngemb::host_policy> norm(policy, ngemb::view<const float>(weight), 1e-5f);
  const std::vector<ngemb::bf16> halves = {ngemb::bf16(0.25f), ngemb::bf16(-3.0f)};
  ngemb::tensor_collection saved;
  norm.save(policy, "model.norm", saved);
  saved.add<ngemb::bf16>(policy, "halves", {2}, ngemb::view<const ngemb::bf16>(halves));
  const memory_checkpoint storage(saved);

  CHECK(storage.names() == std::vector<std::string>{"halves", "model.norm.weight"});
  const std::array<std::int64_t, 1> four{4};
  const std::array<std::int64_t, 1> two{2};
  CHECK(ngemb::read_tensor_as<float>(storage, "model.norm.weight", four) == weight);
  CHECK(ngemb::read_tensor_as<double>(storage, "halves", two) == std::vector<double>{0.25, -3.0});
  CHECK(storage.tensor<ngemb::bf16>("halves", two)[1] == ngemb::bf16(-3.0f));

  // A part loads through it and computes what the saved part does.
  const auto loaded = ngemb::rms_norm<ngemb::host_policy>::load(policy, storage, "model.norm", {.hidden = 4, .eps = 1e-5f});
  const std::vector<float> x = {1.0f, -2.0f, 3.0f, 0.5f};
  std::vector<float> expected(4);
  std::vector<float> actual(4);
  norm.forward(policy, 1, ngemb::view<const float>(x), ngemb::view<float>(expected));
  loaded.forward(policy, 1, ngemb::view<const float>(x), ngemb::view<float>(actual));
  CHECK(actual == expected);

  // The interface's checks name the storage's own location.
  expect_failure<ngemb::format_error>(
      [&] { (void)ngemb::rms_norm<ngemb::host_policy>::load(policy, storage, "model.norm", {.hidden = 8, .eps = 1e-5f}); },
      {"memory: tensor \"model.norm.weight\" has shape [4], expected [8]"});
  expect_failure<ngemb::format_error>([&] { (void)storage.tensor<float>("halves"); },
                                      {"memory: tensor \"halves\" has dtype BF16, expected F32"});
  expect_failure<ngemb::format_error>([&] { (void)ngemb::read_tensor_as<float>(storage, "absent", four); },
                                      {"memory: no tensor \"absent\""});
}

namespace {

std::filesystem::path lite_config_path() {
  return std::filesystem::path(NGEMB_REFERENCE_DIR) / "longcat_flash_lite_config.json";
}

/// What transformers 5.23's save_pretrained writes for a tiny LongcatFlashForCausalLM (model_type longcat_flash,
/// no n-gram fields, rope_theta only inside rope_parameters, head_dim = qk_rope_head_dim).
const char* const transformers_json = R"({
  "architectures": ["LongcatFlashForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 1, "dtype": "float32", "eos_token_id": 2, "expert_ffn_hidden_size": 16, "ffn_hidden_size": 48,
  "head_dim": 4, "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02, "kv_lora_rank": 8,
  "max_position_embeddings": 128, "model_type": "longcat_flash", "moe_topk": 2, "n_routed_experts": 4,
  "num_attention_heads": 4, "num_key_value_heads": 4, "num_layers": 1, "output_router_logits": false,
  "pad_token_id": null, "q_lora_rank": 16, "qk_head_dim": 12, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4,
  "rms_norm_eps": 1e-05, "rope_parameters": {"rope_theta": 10000000.0, "rope_type": "default"},
  "routed_scaling_factor": 6.0, "tie_word_embeddings": false, "transformers_version": "5.23.0", "use_cache": true,
  "v_head_dim": 8, "vocab_size": 64, "zero_expert_num": 2
})";

nlohmann::json lite_json_object() {
  std::ifstream file(lite_config_path());
  return nlohmann::json::parse(file);
}

template <class Error>
void expect_model_error(const nlohmann::json& config, const std::string& needle) {
  CAPTURE(needle);
  CHECK_THROWS_WITH_AS((void)ngemb::parse_model_config(config.dump(), "crafted/config.json"),
                       doctest::Contains(needle.c_str()), Error);
}

}  // namespace

TEST_CASE("model config: the released LongCat-Flash-Lite config.json, every field") {
  const ngemb::model_config config = ngemb::read_model_config(lite_config_path());
  CHECK(config.model_type == "longcat_flash_ngram");
  CHECK(config.has_ngram_embedding());
  CHECK(config.vocab_size() == 131072);
  CHECK(config.hidden_size() == 3072);
  CHECK(config.ngram.max_order == 4);
  CHECK(config.ngram.splits == 4);
  CHECK(*config.ngram.ratio == 78.0);
  CHECK(*config.ngram.eos_token == 2);
  CHECK(config.num_layers == 14);
  CHECK(config.num_attention_heads == 32);
  CHECK(config.num_key_value_heads == 32);
  CHECK(config.head_dim == 64);  // qk_rope_head_dim: transformers' rotary width
  CHECK(config.ffn_hidden_size == 6144);
  CHECK(config.expert_ffn_hidden_size == 1024);
  CHECK(config.n_routed_experts == 256);
  CHECK(config.zero_expert_num == 128);
  CHECK(config.moe_topk == 12);
  CHECK(config.routed_scaling_factor == 6.0);
  CHECK_FALSE(config.norm_topk_prob);
  CHECK_FALSE(config.router_bias);
  CHECK_FALSE(config.attention_bias);
  CHECK(config.rms_norm_eps == 1e-5);
  CHECK(config.rope_theta == 5000000.0);
  CHECK(config.rope == ngemb::rope_scaling{});
  CHECK(config.max_position_embeddings == 327680);
  REQUIRE(config.mla.has_value());
  CHECK(*config.mla == ngemb::mla_config{.q_lora_rank = 1536, .kv_lora_rank = 512, .qk_nope_head_dim = 128,
                                         .qk_rope_head_dim = 64, .v_head_dim = 128, .scale_q_lora = true,
                                         .scale_kv_lora = true});
  const ngemb::mla_shape shape = ngemb::sublayer_shape(config, std::type_identity<ngemb::mla_shape>{});
  CHECK(shape.hidden == 3072);
  CHECK(shape.heads == 32);
  CHECK(shape.qk_head_dim() == 192);
  CHECK(shape.rope_theta == 5000000.0);
  CHECK(ngemb::parse_model_config(ngemb::to_json(config)) == config);

  // The fields the README says may also appear, and the ones LongCat's engine configs carry.
  nlohmann::json fuller = lite_json_object();
  fuller["mla_scale_q_lora"] = false;
  fuller["zero_expert_type"] = "identity";
  fuller["router_bias"] = true;
  fuller["attention_bias"] = true;
  fuller["norm_topk_prob"] = true;
  fuller["quantization_config"] = {{"quant_method", "fp8"}};  // unknown fields are allowed
  fuller["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}, {"original_max_position_embeddings", 131072},
                            {"mscale", 1.0}, {"mscale_all_dim", 1.0}};
  const ngemb::model_config full = ngemb::parse_model_config(fuller.dump());
  CHECK_FALSE(full.mla->scale_q_lora);
  CHECK(full.mla->scale_kv_lora);
  CHECK(full.router_bias);
  CHECK(full.attention_bias);
  CHECK(full.norm_topk_prob);
  CHECK(full.rope.kind == ngemb::rope_scaling::type::yarn);
  CHECK(full.rope.factor == 2.0);
  CHECK(full.rope.original_max_position_embeddings == 131072);
  CHECK(full.rope.mscale == 1.0);
  CHECK(full.rope.mscale_all_dim == 1.0);
  CHECK(full.rope.beta_fast == 32.0);
  CHECK(full.rope.beta_slow == 1.0);
  CHECK(full.rope.truncate);
  CHECK(ngemb::sublayer_shape(full, std::type_identity<ngemb::mla_shape>{}).rope == full.rope);
  CHECK(ngemb::parse_model_config(ngemb::to_json(full)) == full);
}

TEST_CASE("model config: a config.json written by transformers' save_pretrained") {
  const ngemb::model_config config = ngemb::parse_model_config(transformers_json);
  CHECK(config.model_type == "longcat_flash");
  CHECK_FALSE(config.has_ngram_embedding());
  CHECK(config.vocab_size() == 64);
  CHECK(config.hidden_size() == 32);
  CHECK(*config.ngram.eos_token == 2);
  CHECK(config.rope_theta == 10000000.0);  // from rope_parameters
  CHECK(config.rope.kind == ngemb::rope_scaling::type::none);
  CHECK(config.head_dim == 4);
  CHECK(config.n_routed_experts == 4);
  CHECK(config.zero_expert_num == 2);
  CHECK(config.mla == ngemb::mla_config{.q_lora_rank = 16, .kv_lora_rank = 8, .qk_nope_head_dim = 8,
                                        .qk_rope_head_dim = 4, .v_head_dim = 8});
  CHECK(ngemb::parse_model_config(ngemb::to_json(config)) == config);

  // q_lora_rank null: a single q_proj.
  nlohmann::json no_q_lora = nlohmann::json::parse(transformers_json);
  no_q_lora["q_lora_rank"] = nullptr;
  const ngemb::model_config q_proj = ngemb::parse_model_config(no_q_lora.dump());
  CHECK(q_proj.mla->q_lora_rank == 0);
  CHECK(ngemb::parse_model_config(ngemb::to_json(q_proj)) == q_proj);
  // Absent fields take LongcatFlashConfig's defaults.
  nlohmann::json sparse = nlohmann::json::parse(transformers_json);
  for (const char* field : {"q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                            "head_dim", "qk_head_dim", "rope_parameters", "zero_expert_num"}) {
    sparse.erase(field);
  }
  const ngemb::model_config defaults = ngemb::parse_model_config(sparse.dump());
  CHECK(defaults.mla == ngemb::mla_config{.q_lora_rank = 1536, .kv_lora_rank = 512, .qk_nope_head_dim = 128,
                                          .qk_rope_head_dim = 64, .v_head_dim = 128});
  CHECK(defaults.head_dim == 64);
  CHECK(defaults.rope_theta == 10000000.0);
  CHECK(defaults.zero_expert_num == 256);
}

TEST_CASE("model config: rope_scaling and rope_parameters spellings resolve as transformers resolves them") {
  nlohmann::json base = lite_json_object();
  const nlohmann::json yarn = {{"factor", 4.0},        {"original_max_position_embeddings", 4096},
                               {"beta_fast", 16.0},    {"beta_slow", 2.0},
                               {"mscale", 0.707},      {"mscale_all_dim", 0.707},
                               {"truncate", false}};
  nlohmann::json legacy = base;
  legacy["rope_scaling"] = yarn;
  legacy["rope_scaling"]["type"] = "yarn";
  nlohmann::json modern = base;
  modern.erase("rope_theta");
  modern["rope_parameters"] = yarn;
  modern["rope_parameters"]["rope_type"] = "yarn";
  modern["rope_parameters"]["rope_theta"] = 5000000.0;
  const ngemb::model_config from_legacy = ngemb::parse_model_config(legacy.dump());
  const ngemb::model_config from_modern = ngemb::parse_model_config(modern.dump());
  CHECK(from_legacy.rope == from_modern.rope);
  CHECK(from_legacy == from_modern);
  CHECK(from_modern.rope.kind == ngemb::rope_scaling::type::yarn);
  CHECK(from_modern.rope.factor == 4.0);
  CHECK(from_modern.rope.original_max_position_embeddings == 4096);
  CHECK(from_modern.rope.beta_fast == 16.0);
  CHECK(from_modern.rope.beta_slow == 2.0);
  CHECK(from_modern.rope.mscale == 0.707);
  CHECK_FALSE(from_modern.rope.truncate);
  CHECK(ngemb::parse_model_config(ngemb::to_json(from_modern)) == from_modern);

  // A null factor is max_position_embeddings / original; original defaults to max_position_embeddings; a
  // top-level original_max_position_embeddings wins (transformers' standardize_rope_params).
  nlohmann::json derived = base;
  derived["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", nullptr}, {"original_max_position_embeddings", 81920}};
  CHECK(ngemb::parse_model_config(derived.dump()).rope.factor == 4.0);
  derived["original_max_position_embeddings"] = 163840;
  CHECK(ngemb::parse_model_config(derived.dump()).rope.original_max_position_embeddings == 163840);
  CHECK(ngemb::parse_model_config(derived.dump()).rope.factor == 2.0);
  nlohmann::json no_original = base;
  no_original["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 8.0}, {"attention_factor", 1.25}};
  const ngemb::model_config defaulted = ngemb::parse_model_config(no_original.dump());
  CHECK(defaulted.rope.original_max_position_embeddings == 327680);
  CHECK(defaulted.rope.attention_factor == 1.25);
  CHECK(defaulted.rope_theta == 5000000.0);  // top level when the object has none
  CHECK(ngemb::parse_model_config(ngemb::to_json(defaulted)) == defaulted);
  // rope_theta inside the object wins over the top level; "default" is no scaling; a non-empty rope_scaling
  // replaces rope_parameters.
  nlohmann::json both = base;
  both["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000.0}};
  CHECK(ngemb::parse_model_config(both.dump()).rope_theta == 1000.0);
  CHECK(ngemb::parse_model_config(both.dump()).rope == ngemb::rope_scaling{});
  both["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  CHECK(ngemb::parse_model_config(both.dump()).rope_theta == 5000000.0);
  CHECK(ngemb::parse_model_config(both.dump()).rope.factor == 2.0);
}

TEST_CASE("model config: unsupported or inconsistent values are errors naming the field") {
  const nlohmann::json lite = lite_json_object();
  const auto with = [&](const char* field, const nlohmann::json& value) {
    nlohmann::json config = lite;
    config[field] = value;
    return config;
  };
  expect_model_error<ngemb::invalid_argument>(with("zero_expert_type", "ones"), "zero_expert_type \"ones\"");
  expect_model_error<ngemb::invalid_argument>(with("scoring_func", "sigmoid"), "scoring_func \"sigmoid\"");
  expect_model_error<ngemb::invalid_argument>(with("hidden_act", "gelu"), "hidden_act \"gelu\"");
  expect_model_error<ngemb::invalid_argument>(with("model_type", "deepseek_v3"), "model_type \"deepseek_v3\"");
  expect_model_error<ngemb::format_error>(with("model_type", 3), "\"model_type\" must be a string");
  expect_model_error<ngemb::invalid_argument>(with("rope_scaling", {{"type", "llama3"}, {"factor", 8.0}}),
                                              "rope_scaling.rope_type \"llama3\" is not implemented");
  expect_model_error<ngemb::invalid_argument>(with("rope_parameters", {{"rope_type", "dynamic"}}),
                                              "rope_parameters.rope_type \"dynamic\"");
  expect_model_error<ngemb::format_error>(with("rope_scaling", 2.0), "\"rope_scaling\" must be an object");
  expect_model_error<ngemb::format_error>(with("rope_scaling", {{"type", "yarn"}, {"factor", "2"}}),
                                          "\"rope_scaling.factor\" must be a number");
  expect_model_error<ngemb::invalid_argument>(with("rope_scaling", {{"type", "yarn"}, {"factor", -2.0}}),
                                              "rope_scaling.factor must be finite and > 0");
  expect_model_error<ngemb::invalid_argument>(with("head_dim", 128), "head_dim = 128 must equal qk_rope_head_dim = 64");
  expect_model_error<ngemb::invalid_argument>(with("qk_head_dim", 128), "qk_head_dim = 128 must equal");
  expect_model_error<ngemb::invalid_argument>(with("qk_rope_head_dim", 63), "qk_rope_head_dim must be even");
  expect_model_error<ngemb::invalid_argument>(with("kv_lora_rank", 0), "kv_lora_rank must be in [1,");
  expect_model_error<ngemb::format_error>(with("q_lora_rank", "1536"), "\"q_lora_rank\" must be an integer");
  expect_model_error<ngemb::format_error>(with("mla_scale_kv_lora", 1), "\"mla_scale_kv_lora\" must be true or false");
  expect_model_error<ngemb::format_error>(with("router_bias", "no"), "\"router_bias\" must be true or false");
  nlohmann::json no_trio = lite;
  no_trio.erase("emb_neighbor_num");
  expect_model_error<ngemb::format_error>(no_trio, "missing field \"emb_neighbor_num\"");
  // ...which a plain LongCat-Flash does not need.
  no_trio["model_type"] = "longcat_flash";
  CHECK_FALSE(ngemb::parse_model_config(no_trio.dump()).has_ngram_embedding());

  // A GQA demo config has no MLA fields: an MLA shape names them.
  nlohmann::json demo = nlohmann::json::parse(transformers_json);
  for (const char* field : {"model_type", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                            "v_head_dim", "qk_head_dim", "rope_parameters"}) {
    demo.erase(field);
  }
  demo["head_dim"] = 8;
  demo["rope_theta"] = 10000.0;
  demo["emb_neighbor_num"] = 3;
  demo["emb_split_num"] = 2;
  demo["ngram_vocab_size_ratio"] = 5;
  const ngemb::model_config gqa = ngemb::parse_model_config(demo.dump());
  CHECK_FALSE(gqa.mla.has_value());
  CHECK(gqa.model_type.empty());
  CHECK(ngemb::parse_model_config(ngemb::to_json(gqa)) == gqa);
  CHECK(ngemb::to_json(gqa).find("model_type") == std::string::npos);
  CHECK_THROWS_WITH_AS((void)ngemb::sublayer_shape(gqa, std::type_identity<ngemb::mla_shape>{}),
                       doctest::Contains("kv_lora_rank, q_lora_rank, qk_nope_head_dim, qk_rope_head_dim and v_head_dim"),
                       ngemb::invalid_argument);
  demo.erase("rope_theta");
  expect_model_error<ngemb::format_error>(demo, "missing field \"rope_theta\"");
}

// ---- On-demand mapping: the header read with pread, each byte range mapped from its page when asked for ----------

#include <thread>

namespace {

/// A file of four tensors (f32 and bf16 tables of several pages, a 1-D f16, an empty one) and its bytes.
struct on_demand_file {
  temp_folder folder;
  std::vector<float> a = random_values(300 * 16, 11);                        // [300, 16] F32: 19200 bytes
  std::vector<ngemb::bf16> b = narrowed<ngemb::bf16>(random_values(1000 * 8, 12));  // [1000, 8] BF16: 16000 bytes
  std::vector<ngemb::fp16> c = narrowed<ngemb::fp16>(random_values(7, 13));
  std::vector<float> none;
  fs::path path = folder / "model.safetensors";

  on_demand_file() {
    const std::vector<ngemb::tensor_to_write> tensors{
        ngemb::tensor_to_write::of<float>("a", {300, 16}, a),
        ngemb::tensor_to_write::of<ngemb::bf16>("b", {1000, 8}, b),
        ngemb::tensor_to_write::of<ngemb::fp16>("c", {7}, c),
        ngemb::tensor_to_write::of<float>("e", {0, 4}, none),
    };
    ngemb::write_safetensors(path, tensors);
  }
};


bool same_bytes(std::span<const std::byte> lhs, std::span<const std::byte> rhs) {
  return lhs.size() == rhs.size() && (lhs.empty() || std::memcmp(lhs.data(), rhs.data(), lhs.size()) == 0);
}

}  // namespace

TEST_CASE("on-demand mapping: the header is read, not mapped; each range maps only its pages, once") {
  const on_demand_file written;
  const ngemb::safetensors_checkpoint whole(written.path);
  const ngemb::safetensors_checkpoint lazy(written.path, ngemb::checkpoint_mapping::on_demand);
  const std::size_t file_size = fs::file_size(written.path);
  CHECK(whole.mapping() == ngemb::checkpoint_mapping::whole_files);
  CHECK(lazy.mapping() == ngemb::checkpoint_mapping::on_demand);
  CHECK(whole.mapped_bytes() == file_size);
  CHECK(lazy.mapped_bytes() == 0);
  CHECK(lazy.names() == whole.names());
  for (const std::string& name : whole.names()) {
    CHECK(lazy.info(name).begin == whole.info(name).begin);
    CHECK(lazy.info(name).shape == whole.info(name).shape);
  }

  // Rows 10..49 of "a": the bytes, and only their pages.
  std::size_t expected = ngemb_test::mapping_cost(lazy, "a", 640, 3200);
  const std::span<const std::byte> rows = lazy.bytes("a", 640, 3200);
  CHECK(same_bytes(rows, whole.bytes("a").subspan(640, 2560)));
  CHECK(lazy.mapped_bytes() == expected);
  CHECK(lazy.bytes("a", 640, 3200).data() == rows.data());  // asked again: the same mapping
  CHECK(lazy.mapped_bytes() == expected);

  // A whole tensor, then its typed view and its bytes again: one mapping.
  expected += ngemb_test::mapping_cost(lazy, "b", 0, 16000);
  CHECK(same_bytes(lazy.bytes("b"), whole.bytes("b")));
  CHECK(lazy.mapped_bytes() == expected);
  CHECK(reinterpret_cast<const std::byte*>(lazy.tensor<ngemb::bf16>("b").data()) == lazy.bytes("b").data());
  CHECK(lazy.bytes("b", 0, 16000).data() == lazy.bytes("b").data());
  CHECK(lazy.mapped_bytes() == expected);

  // Empty ranges and empty tensors map nothing.
  CHECK(lazy.bytes("a", 100, 100).empty());
  CHECK(lazy.bytes("e").empty());
  CHECK(lazy.tensor_rows<float>("a", std::array<std::int64_t, 2>{300, 16}, 300, 0).empty());
  CHECK(lazy.mapped_bytes() == expected);

  // Typed rows: the last 10 rows of "a", bit for bit.
  expected += ngemb_test::mapping_cost(lazy, "a", 290 * 64, 300 * 64);
  const auto last_rows = lazy.tensor_rows<float>("a", std::array<std::int64_t, 2>{300, 16}, 290, 10);
  CHECK(last_rows.size() == 160);
  CHECK(std::memcmp(last_rows.data(), written.a.data() + 290 * 16, 160 * sizeof(float)) == 0);
  CHECK(lazy.mapped_bytes() == expected);
  CHECK(same_bits(lazy.tensor<ngemb::fp16>("c"), written.c));
  expected += ngemb_test::mapping_cost(lazy, "c", 0, 14);
  CHECK(lazy.mapped_bytes() == expected);
  CHECK(lazy.mapped_bytes() < file_size);
  // The mapping rounds down to a page at the start only: every range above is less than two pages.
  CHECK(expected <= 2560 + 16000 + 640 + 14 + 4 * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));

  // Loads may run on threads: concurrent first requests for one range map it once.
  const ngemb::safetensors_checkpoint shared(written.path, ngemb::checkpoint_mapping::on_demand);
  std::vector<const std::byte*> seen(4);
  std::vector<std::thread> threads;
  for (std::size_t thread = 0; thread < seen.size(); ++thread) {
    threads.emplace_back([&shared, &seen, thread] { seen[thread] = shared.bytes("a", 64, 19200).data(); });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [&](const std::byte* data) { return data == seen[0]; }));
  CHECK(shared.mapped_bytes() == ngemb_test::mapping_cost(shared, "a", 64, 19200));

  // The mappings move with the object that owns them.
  ngemb::safetensors_file file(written.path, ngemb::checkpoint_mapping::on_demand);
  const std::span<const std::byte> before = file.bytes("b", 160, 320);
  const ngemb::safetensors_file moved = std::move(file);
  CHECK(moved.bytes("b", 160, 320).data() == before.data());
  CHECK(same_bytes(before, whole.bytes("b").subspan(160, 160)));
  CHECK(moved.mapped_bytes() == ngemb_test::mapping_cost(lazy, "b", 160, 320));
}

TEST_CASE("on-demand mapping: a sharded checkpoint maps nothing at open and reads what whole files read") {
  const temp_folder folder;
  const std::vector<float> first = random_values(64 * 32, 21);
  const std::vector<float> second = random_values(48 * 32, 22);
  const std::vector<ngemb::tensor_to_write> tensors{
      ngemb::tensor_to_write::of<float>("first", {64, 32}, first),
      ngemb::tensor_to_write::of<float>("second", {48, 32}, second),
  };
  ngemb::write_safetensors_checkpoint(folder.path(), tensors, 1000);  // one shard per tensor
  const ngemb::safetensors_checkpoint whole(folder.path());
  const ngemb::safetensors_checkpoint lazy(folder.path(), ngemb::checkpoint_mapping::on_demand);
  REQUIRE(lazy.file_of("first").path() != lazy.file_of("second").path());
  CHECK(lazy.mapped_bytes() == 0);
  CHECK(whole.mapped_bytes() == fs::file_size(whole.file_of("first").path()) +
                                    fs::file_size(whole.file_of("second").path()));
  const std::array<std::int64_t, 2> shape{48, 32};
  CHECK(same_bits(lazy.tensor_rows<float>("second", shape, 40, 8),
                  std::vector<float>(second.begin() + 40 * 32, second.end())));
  CHECK(lazy.mapped_bytes() == ngemb_test::mapping_cost(lazy, "second", 40 * 128, 48 * 128));
  CHECK(same_bytes(lazy.bytes("first"), whole.bytes("first")));
}

TEST_CASE("on-demand mapping: truncated and malformed files fail at open with the whole-file messages") {
  const temp_folder folder;
  const std::string whole = safetensors_bytes(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
      sixteen_bytes);
  const std::size_t data_begin = whole.size() - 16;
  const auto message_of = [&](ngemb::checkpoint_mapping mapping) {
    try {
      const ngemb::safetensors_file file(folder / "bad.safetensors", mapping);
    } catch (const ngemb::format_error& failure) {
      return std::string(failure.what());
    }
    return std::string("accepted");
  };
  const std::vector<std::string> bad{
      "",
      whole.substr(0, 5),
      whole.substr(0, 8),
      whole.substr(0, 40),
      whole.substr(0, data_begin - 1),
      whole.substr(0, data_begin),
      whole.substr(0, data_begin + 12),
      little_endian(std::uint64_t{1} << 40) + "{}",
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)", sixteen_bytes),
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", sixteen_bytes),
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", sixteen_bytes),
  };
  for (const std::string& bytes : bad) {
    write_bytes(folder / "bad.safetensors", bytes);
    const std::string on_demand = message_of(ngemb::checkpoint_mapping::on_demand);
    CAPTURE(on_demand);
    CHECK(on_demand == message_of(ngemb::checkpoint_mapping::whole_files));
    CHECK(on_demand.find((folder / "bad.safetensors").string()) != std::string::npos);
  }
  write_bytes(folder / "bad.safetensors", whole.substr(0, data_begin + 12));
  expect_failure<ngemb::format_error>(
      [&] {
        const fs::path path = folder / "bad.safetensors";
        const ngemb::safetensors_checkpoint checkpoint(path, ngemb::checkpoint_mapping::on_demand);
      },
      {"tensor \"b\"", "beyond the end of the data buffer (12 bytes)", "truncated"});
  // A folder or a missing file: the same io_errors as a whole mapping.
  expect_failure<ngemb::io_error>(
      [&] { ngemb::safetensors_file file(folder.path(), ngemb::checkpoint_mapping::on_demand); }, {"a folder"});
  expect_failure<ngemb::io_error>(
      [&] { ngemb::safetensors_file file(folder / "absent.safetensors", ngemb::checkpoint_mapping::on_demand); },
      {"cannot open", "absent.safetensors"});
}

TEST_CASE("on-demand mapping: byte and row ranges outside a tensor are errors naming the tensor and the range") {
  const on_demand_file written;
  const ngemb::safetensors_checkpoint whole(written.path);
  const ngemb::safetensors_checkpoint lazy(written.path, ngemb::checkpoint_mapping::on_demand);
  ngemb::tensor_collection saved;
  saved.add<float>(ngemb::host_policy{1}, "a", {300, 16}, ngemb::view<const float>(written.a));
  const memory_checkpoint memory(saved);  // the interface's default bytes(name, begin, end)
  const std::string where = written.path.string() + ": tensor \"a\"";
  for (const ngemb::checkpoint* source : std::initializer_list<const ngemb::checkpoint*>{&whole, &lazy, &memory}) {
    const std::string location = source == &memory ? "memory: tensor \"a\"" : where;
    CAPTURE(location);
    CHECK(same_bytes(source->bytes("a", 19136, 19200), whole.bytes("a").subspan(19136)));
    expect_failure<ngemb::format_error>([&] { (void)source->bytes("a", 0, 19201); },
                                        {location + ": bytes [0, 19201) are outside its 19200 bytes"});
    expect_failure<ngemb::format_error>([&] { (void)source->bytes("a", 20000, 20008); },
                                        {location, "bytes [20000, 20008)", "19200 bytes"});
    expect_failure<ngemb::format_error>([&] { (void)source->bytes("a", 8, 4); }, {location, "bytes [8, 4)"});
    expect_failure<ngemb::format_error>([&] { (void)source->bytes("absent", 0, 0); }, {"no tensor \"absent\""});

    const std::array<std::int64_t, 2> shape{300, 16};
    CHECK(same_bits(source->tensor_rows<float>("a", shape, 0, 300), written.a));
    expect_failure<ngemb::invalid_argument>([&] { (void)source->tensor_rows<float>("a", shape, 295, 10); },
                                            {location + ": rows {first 295, count 10} are not inside its 300 rows"});
    expect_failure<ngemb::invalid_argument>([&] { (void)source->tensor_rows<float>("a", shape, -1, 1); },
                                            {location, "rows {first -1, count 1}"});
    expect_failure<ngemb::invalid_argument>([&] { (void)source->tensor_rows<float>("a", shape, 3, -1); },
                                            {location, "rows {first 3, count -1}"});
    expect_failure<ngemb::format_error>(
        [&] { (void)source->tensor_rows<float>("a", std::array<std::int64_t, 2>{16, 300}, 0, 1); },
        {location + " has shape [300, 16], expected [16, 300]"});
    expect_failure<ngemb::format_error>([&] { (void)source->tensor_rows<ngemb::bf16>("a", shape, 0, 1); },
                                        {location + " has dtype F32, expected BF16"});
    std::vector<double> too_few(15);
    expect_failure<ngemb::shape_mismatch>(
        [&] { ngemb::read_tensor_rows_into<double>(*source, "a", shape, 0, 1, std::span<double>(too_few)); },
        {location + ": rows {first 0, count 1} hold 16 elements, destination 15"});
  }
  expect_failure<ngemb::invalid_argument>(
      [&] { (void)lazy.tensor_rows<ngemb::fp16>("c", std::array<std::int64_t, 1>{7}, 0, 1); },
      {"tensor \"c\" has shape [7]: rows can be read from 2-D tensors only"});
  CHECK(lazy.mapped_bytes() == ngemb_test::mapping_cost(lazy, "a", 19136, 19200) + ngemb_test::mapping_cost(lazy, "a", 0, 19200));
}

TEST_CASE("on-demand mapping: read_tensor_rows_into converts only the rows asked for, from any float dtype") {
  const on_demand_file written;
  const ngemb::safetensors_checkpoint lazy(written.path, ngemb::checkpoint_mapping::on_demand);
  const std::array<std::int64_t, 2> shape{1000, 8};
  std::vector<float> rows(40 * 8);
  ngemb::read_tensor_rows_into<float>(lazy, "b", shape, 100, 40, std::span<float>(rows));
  CHECK(lazy.mapped_bytes() == ngemb_test::mapping_cost(lazy, "b", 100 * 16, 140 * 16));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    CHECK(rows[i] == ngemb::to_float(written.b[100 * 8 + i]));
  }
  std::vector<ngemb::bf16> same(8);
  ngemb::read_tensor_rows_into<ngemb::bf16>(lazy, "b", shape, 999, 1, std::span<ngemb::bf16>(same));
  CHECK(std::memcmp(same.data(), written.b.data() + 999 * 8, 8 * sizeof(ngemb::bf16)) == 0);
  std::vector<double> nothing;
  ngemb::read_tensor_rows_into<double>(lazy, "b", shape, 1000, 0, std::span<double>(nothing));
  CHECK(lazy.mapped_bytes() == ngemb_test::mapping_cost(lazy, "b", 100 * 16, 140 * 16) + ngemb_test::mapping_cost(lazy, "b", 999 * 16, 16000));
}
