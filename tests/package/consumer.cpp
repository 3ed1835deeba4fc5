// The program both package consumers build (NGEMB_CONSUMER names which one): hashes {5, 7} with the
// LongCat-Flash-Lite config and checks the table-0 id of token 7:
// (7 + 5 * V) mod m_0 = (7 + 5 * 131072) mod 10223617 = 655367. It also checks that the generated version header
// it sees is the package's (NGEMB_EXPECTED_VERSION, project(VERSION) of the ngemb build that was installed).
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string_view>
#include <vector>

#include <ngemb/ngemb.hpp>

int main() {
  if (std::string_view(NGEMB_VERSION_STRING) != NGEMB_EXPECTED_VERSION) {
    std::printf("ngemb %s consumer: ngemb/version.hpp says %s, expected %s\n", NGEMB_CONSUMER, NGEMB_VERSION_STRING,
                NGEMB_EXPECTED_VERSION);
    return 1;
  }
  try {
    const ngemb::longcat_hash hasher(ngemb::ngram_config::longcat_flash_lite());
    const std::vector<std::int32_t> tokens{5, 7};
    const auto n = static_cast<std::int64_t>(tokens.size());
    const std::vector<std::int64_t> offsets{0, n};
    std::vector<std::int64_t> ids(tokens.size() * 12);
    ngemb::hash_tokens(ngemb::host_policy{}, hasher, ngemb::ragged_view<const std::int32_t>(tokens, offsets),
                       ngemb::view<std::int64_t>(ids));
    const std::int64_t expected = 655367;
    const std::int64_t got = ids[1 * 12 + 0];
    std::printf("ngemb %s consumer (ngemb %s): id(token 7, table 0) = %lld, expected %lld\n", NGEMB_CONSUMER,
                NGEMB_VERSION_STRING, static_cast<long long>(got), static_cast<long long>(expected));
    return got == expected ? 0 : 1;
  } catch (const std::exception& error) {
    std::printf("ngemb %s consumer: exception: %s\n", NGEMB_CONSUMER, error.what());
    return 2;
  }
}
