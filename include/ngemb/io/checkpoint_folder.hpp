#pragma once
// Writing a checkpoint folder as a whole. The files go into a fresh staging folder created beside the target (same
// parent, so the final rename stays on one file system), are flushed to disk, and the staging folder is then renamed
// into place: a reader sees the old folder or the complete new one, never a mix, and a failure at any step removes
// the staging folder and leaves the target as it was. A folder that already holds files is refused unless
// `overwrite` is asked for; then the new folder replaces it in one rename (Linux: RENAME_EXCHANGE) or, where the file
// system cannot exchange, by moving the old folder aside, renaming the new one in and removing the old one.
//
//   ngemb::write_checkpoint_folder("copy/", {.overwrite = false}, [&](const std::filesystem::path& staging) {
//     ngemb::write_safetensors_checkpoint(staging, tensors, max_shard_bytes);   // anything that fills `staging`
//   });
//
// A process killed mid-save leaves a hidden ".<name>.saving-XXXXXXXX" folder beside the target, never a partial
// target. POSIX only (mkdir, rename, fsync).
#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc, _GNU_SOURCE)
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "ngemb/core/error.hpp"

namespace ngemb {

/// How a model is saved: the largest shard, and whether a folder that already holds files may be replaced.
struct save_options {
  bool overwrite = false;                              ///< replace a non-empty target folder as a whole
  std::size_t max_shard_bytes = std::size_t{4} << 30;  ///< tensor data per safetensors shard
};

namespace detail {

inline std::string errno_message(int code) { return std::generic_category().message(code); }

[[noreturn]] inline void throw_io(const std::string& what, const std::filesystem::path& path, int code) {
  throw io_error(what + path.string() + ": " + errno_message(code));
}

/// At most `limit` bytes of a file name, for names derived from it.
inline std::string clipped_name(const std::filesystem::path& name, std::size_t limit = 64) {
  std::string text = name.filename().string();
  if (text.size() > limit) {
    text.resize(limit);
  }
  return text;
}

/// A new, empty folder `<parent>/<stem>XXXXXXXX` (eight random characters). mkdir creates it or fails, so an existing
/// name (a folder, a file, a symbolic link planted by anyone) is never reused or followed. Unlike mkdtemp the mode is
/// the usual 0777 & ~umask, because this folder becomes the checkpoint.
inline std::filesystem::path create_unique_folder(const std::filesystem::path& parent, const std::string& stem) {
  static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device entropy;
  for (int attempt = 0; attempt < 64; ++attempt) {
    std::string name = stem;
    for (int i = 0; i < 8; ++i) {
      name += alphabet[entropy() % (sizeof alphabet - 1)];
    }
    std::filesystem::path candidate = parent / name;
    if (::mkdir(candidate.c_str(), 0777) == 0) {
      return candidate;
    }
    if (errno != EEXIST) {
      throw_io("cannot create ", candidate, errno);
    }
  }
  throw io_error("cannot create a folder " + (parent / stem).string() + "XXXXXXXX: 64 random names were taken");
}

/// Writes `bytes` to a new file (never an existing one, never through a symbolic link) and flushes it to disk.
inline void write_new_file(const std::filesystem::path& path, std::string_view bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
  if (fd < 0) {
    throw_io("cannot create ", path, errno);
  }
  std::size_t written = 0;
  while (written < bytes.size()) {
    const ::ssize_t step = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (step < 0) {
      if (errno == EINTR) {
        continue;
      }
      const int reason = errno;
      ::close(fd);
      throw_io("cannot write ", path, reason);
    }
    written += static_cast<std::size_t>(step);
  }
  if (::fsync(fd) != 0) {
    const int reason = errno;
    ::close(fd);
    throw_io("cannot flush ", path, reason);
  }
  if (::close(fd) != 0) {
    throw_io("cannot write ", path, errno);
  }
}

/// fsync of one file or folder. A folder's fsync may be unsupported (EINVAL): then there is nothing more to do.
inline void sync_path(const std::filesystem::path& path, bool folder) {
  const int fd = ::open(path.c_str(), (folder ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    throw_io("cannot open ", path, errno);
  }
  if (::fsync(fd) != 0 && !(folder && (errno == EINVAL || errno == EROFS))) {
    const int reason = errno;
    ::close(fd);
    throw_io("cannot flush ", path, reason);
  }
  ::close(fd);
}

/// Flushes every file under `folder`, then the folders themselves, so the renamed folder is complete on disk.
inline void sync_folder(const std::filesystem::path& folder) {
  namespace fs = std::filesystem;
  std::error_code failure;
  fs::recursive_directory_iterator entry(folder, failure);
  if (failure) {
    throw io_error("cannot list " + folder.string() + ": " + failure.message());
  }
  for (; entry != fs::recursive_directory_iterator(); entry.increment(failure)) {
    const fs::file_status status = entry->symlink_status(failure);
    if (failure) {
      throw io_error("cannot inspect " + entry->path().string() + ": " + failure.message());
    }
    if (fs::is_regular_file(status) || fs::is_directory(status)) {
      sync_path(entry->path(), fs::is_directory(status));
    }
  }
  if (failure) {
    throw io_error("cannot list " + folder.string() + ": " + failure.message());
  }
  sync_path(folder, true);
}

/// Removes a folder this code created (its content included); used on the way out of a failure, so it reports
/// nothing and throws nothing.
inline void remove_quietly(const std::filesystem::path& folder) noexcept {
  std::error_code ignored;
  std::filesystem::remove_all(folder, ignored);
}

/// Puts the folder `staging` in the place of the folder `target` (both in `parent`) and returns the path that now
/// holds the old folder, for the caller to remove. With `exchange` (and Linux) one renameat2(RENAME_EXCHANGE) swaps
/// them; where that is unsupported, or without `exchange`, the old folder is moved aside onto a fresh empty folder
/// (so the name is ours), the new one renamed in, and the old one moved back if that fails.
inline std::filesystem::path replace_folder(const std::filesystem::path& staging, const std::filesystem::path& target,
                                            const std::filesystem::path& parent, const std::string& name,
                                            bool exchange = true) {
#if defined(__linux__) && defined(RENAME_EXCHANGE)
  if (exchange) {
    if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
      return staging;  // now the old folder
    }
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
      throw_io("cannot exchange " + staging.string() + " with ", target, errno);
    }
  }
#else
  (void)exchange;
#endif
  const std::filesystem::path aside = create_unique_folder(parent, "." + name + ".old-");
  if (::rename(target.c_str(), aside.c_str()) != 0) {
    const int reason = errno;
    ::rmdir(aside.c_str());
    throw_io("cannot move " + target.string() + " aside to ", aside, reason);
  }
  if (::rename(staging.c_str(), target.c_str()) != 0) {
    const int reason = errno;
    if (::rename(aside.c_str(), target.c_str()) != 0) {
      throw io_error("cannot rename " + staging.string() + " to " + target.string() + ": " + errno_message(reason) +
                     "; the old folder is now " + aside.string());
    }
    throw_io("cannot rename " + staging.string() + " to ", target, reason);
  }
  return aside;
}

/// The folder a save targets, as an absolute path whose last component is the folder's own name ("a/b/" and "a/b"
/// are the same folder; "." is the current folder by its real name).
inline std::filesystem::path save_target(const std::filesystem::path& requested, std::string_view where) {
  namespace fs = std::filesystem;
  if (requested.empty()) {
    throw invalid_argument(std::string(where) + ": the folder path is empty");
  }
  std::error_code failure;
  fs::path target = fs::absolute(requested, failure);
  if (failure) {
    throw io_error("cannot resolve " + requested.string() + ": " + failure.message());
  }
  while (!target.has_filename() && target.has_relative_path()) {  // "a/b/" -> "a/b"
    target = target.parent_path();
  }
  if (target.filename() == "." || target.filename() == "..") {
    target = fs::canonical(target, failure);
    if (failure) {
      throw io_error("cannot resolve " + requested.string() + ": " + failure.message());
    }
  }
  if (!target.has_relative_path()) {
    throw invalid_argument(std::string(where) + ": " + requested.string() +
                           " is a file system root; save into a folder inside it");
  }
  return target;
}

}  // namespace detail

/// Makes `target` a folder holding exactly what `write(staging)` puts into the staging folder it is given, or leaves
/// it as it was: see the header comment. The target's parent folders are created when missing. Throws io_error,
/// naming the path and the reason, when the target is a non-empty folder (without `options.overwrite`), a file or
/// a symbolic link, or when any file system step fails; whatever `write` throws propagates after the staging folder
/// is removed.
template <class Write>
void write_checkpoint_folder(const std::filesystem::path& requested, const save_options& options, Write&& write) {
  namespace fs = std::filesystem;
  const fs::path target = detail::save_target(requested, "write_checkpoint_folder");
  const fs::path parent = target.parent_path();
  std::error_code failure;
  fs::create_directories(parent, failure);
  if (failure) {
    throw io_error("cannot create " + parent.string() + ": " + failure.message());
  }

  const auto existing = [&]() {  // false: nothing there (or an empty folder, which a rename replaces)
    const fs::file_status status = fs::symlink_status(target, failure);
    if (status.type() == fs::file_type::not_found) {
      return false;
    }
    if (failure) {
      throw io_error("cannot inspect " + target.string() + ": " + failure.message());
    }
    if (fs::is_symlink(status)) {
      throw io_error(target.string() + ": is a symbolic link; save into the folder it names, or remove it");
    }
    if (!fs::is_directory(status)) {
      throw io_error(target.string() + ": exists and is not a folder");
    }
    const bool empty = fs::is_empty(target, failure);
    if (failure) {
      throw io_error("cannot list " + target.string() + ": " + failure.message());
    }
    if (!empty && !options.overwrite) {
      throw io_error(target.string() + ": the folder is not empty (it may hold another checkpoint); save into a "
                     "new folder, or pass save_options{.overwrite = true} to replace it");
    }
    return !empty;
  };
  existing();  // refuse before any work

  const std::string name = detail::clipped_name(target);
  fs::path staging = detail::create_unique_folder(parent, "." + name + ".saving-");
  try {
    std::forward<Write>(write)(static_cast<const fs::path&>(staging));
    detail::sync_folder(staging);
    if (!existing()) {  // checked again: the target may have changed while `write` ran
      if (::rename(staging.c_str(), target.c_str()) != 0) {
        const int reason = errno;
        if (reason == ENOTEMPTY || reason == EEXIST) {
          throw io_error(target.string() + ": the folder was filled by someone else while saving; nothing saved");
        }
        detail::throw_io("cannot rename " + staging.string() + " to ", target, reason);
      }
    } else {
      staging = detail::replace_folder(staging, target, parent, name);  // now the old folder, removed here
      fs::remove_all(staging, failure);
      if (failure) {
        const std::string message = target.string() + " is saved, but the old folder it replaced, now " +
                                    staging.string() + ", cannot be removed: " + failure.message();
        staging.clear();
        throw io_error(message);
      }
    }
    staging.clear();
  } catch (...) {
    if (!staging.empty()) {
      detail::remove_quietly(staging);
    }
    throw;
  }
  detail::sync_path(parent, true);  // the rename itself reaches the disk
}

}  // namespace ngemb
