#pragma once
// A fresh folder under the system temporary directory, removed with its content at scope exit.
#include <filesystem>
#include <random>
#include <string>
#include <system_error>

namespace ngemb_test {

class temp_folder {
 public:
  temp_folder() {
    std::random_device entropy;
    do {
      path_ = std::filesystem::temp_directory_path() /
              ("ngemb_test_" + std::to_string(entropy()) + "_" + std::to_string(entropy()));
    } while (!std::filesystem::create_directory(path_));
  }
  temp_folder(const temp_folder&) = delete;
  temp_folder& operator=(const temp_folder&) = delete;
  ~temp_folder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  [[nodiscard]] std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace ngemb_test
