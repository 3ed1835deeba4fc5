// compare_numbers ACTUAL EXPECTED TOLERANCE: the CLI tests' float comparison. Both files must have the same lines,
// blank where the other is blank, with the same count of numbers per line; each line's largest |actual - expected|
// over its largest |expected| must stay within TOLERANCE (the row-relative error the library's tests use).
// Exit 0 when they agree, 1 with the first differing line otherwise.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::vector<std::string> read_lines(const char* path) {
  std::ifstream file(path);
  if (!file) {
    std::fprintf(stderr, "cannot open %s\n", path);
    std::exit(1);
  }
  std::vector<std::string> lines;
  for (std::string line; std::getline(file, line);) {
    lines.push_back(line);
  }
  return lines;
}

bool parse_numbers(const std::string& line, std::vector<double>& numbers) {
  numbers.clear();
  std::istringstream words(line);
  for (std::string word; words >> word;) {
    char* end = nullptr;
    numbers.push_back(std::strtod(word.c_str(), &end));
    if (end != word.c_str() + word.size()) {
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: compare_numbers ACTUAL EXPECTED TOLERANCE\n");
    return 1;
  }
  const auto actual = read_lines(argv[1]);
  const auto expected = read_lines(argv[2]);
  const double tolerance = std::strtod(argv[3], nullptr);
  if (actual.size() != expected.size()) {
    std::fprintf(stderr, "%zu lines, expected %zu\n", actual.size(), expected.size());
    return 1;
  }
  std::vector<double> got;
  std::vector<double> want;
  for (std::size_t line = 0; line < actual.size(); ++line) {
    if (!parse_numbers(actual[line], got) || !parse_numbers(expected[line], want) || got.size() != want.size()) {
      std::fprintf(stderr, "line %zu: \"%s\" does not match the numbers of \"%s\"\n", line + 1, actual[line].c_str(),
                   expected[line].c_str());
      return 1;
    }
    double scale = 0.0;
    double difference = 0.0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      scale = std::max(scale, std::abs(want[i]));
      difference = std::max(difference, std::abs(got[i] - want[i]));
    }
    if (difference > tolerance * scale) {
      std::fprintf(stderr, "line %zu: error %g of the row's largest value, tolerance %g\n", line + 1,
                   difference / scale, tolerance);
      return 1;
    }
  }
  return 0;
}
