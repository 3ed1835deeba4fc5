#pragma once
// A fresh folder under the system temporary directory, removed with its content at scope exit. mkdtemp creates it
// with a unique name and mode 0700, or fails: a name planted in advance (a folder, a symbolic link) is never reused.
#include <stdlib.h>  // mkdtemp

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace ngemb_test {

class temp_folder {
 public:
  temp_folder() {
    const std::string pattern = (std::filesystem::temp_directory_path() / "ngemb_test_XXXXXX").string();
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    if (::mkdtemp(name.data()) == nullptr) {
      throw std::filesystem::filesystem_error("mkdtemp", std::filesystem::path(pattern),
                                              std::error_code(errno, std::generic_category()));
    }
    path_ = name.data();
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
