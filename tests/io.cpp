// io/: HF config.json reading, with the errors a malformed file must raise.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "ngemb/io/hf_config.hpp"

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
}

TEST_CASE("config.json: malformed files name the file and the field") {
  expect_error<ngemb::format_error>("{\"vocab_size\": 5,", "model/config.json: not valid JSON");
  expect_error<ngemb::format_error>("[1, 2]", "top level must be a JSON object");
  expect_error<ngemb::format_error>(R"({"hidden_size": 64, "emb_neighbor_num": 3, "emb_split_num": 2,
      "ngram_vocab_size_ratio": 5})", "missing field \"vocab_size\"");
  expect_error<ngemb::format_error>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3,
      "emb_split_num": 2})", "missing field \"ngram_vocab_size_ratio\"");
  expect_error<ngemb::format_error>(R"({"vocab_size": "1000", "hidden_size": 64, "emb_neighbor_num": 3,
      "emb_split_num": 2, "ngram_vocab_size_ratio": 5})", "\"vocab_size\" must be an integer, got \"1000\"");
  expect_error<ngemb::format_error>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3.5,
      "emb_split_num": 2, "ngram_vocab_size_ratio": 5})", "\"emb_neighbor_num\" must be an integer");
  expect_error<ngemb::format_error>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3,
      "emb_split_num": 2, "ngram_vocab_size_ratio": "5"})", "must be a number");
  expect_error<ngemb::format_error>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 3,
      "emb_split_num": 2, "ngram_vocab_size_ratio": 5, "eos_token_id": [1, 2]})", "lists 2 ids");
  expect_error<ngemb::invalid_argument>(R"({"vocab_size": 1000, "hidden_size": 64, "emb_neighbor_num": 1,
      "emb_split_num": 2, "ngram_vocab_size_ratio": 5})", "emb_neighbor_num (N) must be >= 2");
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
