#pragma once
// What a model component hands to a checkpoint writer: its parameters under their checkpoint names, copied out of
// policy memory (host or device) into host storage the collection owns, ready for write_safetensors(_checkpoint).
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/tensor_to_write.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

class tensor_collection {
 public:
  /// `names_only`: record names and shapes without copying values (what a loader checks a checkpoint against);
  /// tensors() is then unavailable.
  enum class mode { copy_values, names_only };

  explicit tensor_collection(mode collect = mode::copy_values) : mode_(collect) {}

  /// Copies `values` (policy memory) now; throws shape_mismatch unless it holds exactly prod(shape) elements and
  /// invalid_argument when `name` is already in the collection.
  template <storage_type T, class Policy>
  void add(const Policy& policy, std::string name, std::vector<std::int64_t> shape,
           std::type_identity_t<view<const T>> values) {
    reject_duplicate(name);
    if (mode_ == mode::names_only) {
      tensors_.push_back(tensor_to_write::of<T>(std::move(name), std::move(shape), values));
      tensors_.back().data = {};  // the values stay in policy memory, never read through here
      return;
    }
    std::vector<T>& host = storage_of<T>().emplace_back(values.size());
    copy_to_host(policy, values, view<T>(host));
    tensors_.push_back(tensor_to_write::of<T>(std::move(name), std::move(shape), view<const T>(host)));
  }

  /// Records the name, dtype and shape of a tensor a part reads but cannot write whole (a rank's shard of it): in
  /// names_only mode as add() would; a collection being written throws invalid_argument("<who>: <why>").
  template <storage_type T>
  void add_unwritable(std::string name, std::vector<std::int64_t> shape, const std::string& why) {
    reject_duplicate(name);
    if (mode_ != mode::names_only) {
      throw invalid_argument(why);
    }
    tensors_.push_back(tensor_to_write{std::move(name), std::string(name_of(dtype_of<T>)), std::move(shape), {}});
  }

  /// Names a tensor a checkpoint may hold that the part ignores on load (transformers writes some a part has no
  /// use for, such as zero experts' gate/up weights). Recorded only in names_only mode, so a loader's unknown-
  /// tensor check accepts it; a copy_values collection (a checkpoint being written) leaves it out.
  void tolerate(std::string name) {
    if (mode_ == mode::names_only) {
      tolerated_.push_back(std::move(name));
    }
  }

  /// The names passed to tolerate() in names_only mode.
  [[nodiscard]] std::span<const std::string> tolerated() const { return tolerated_; }

  [[nodiscard]] std::span<const tensor_to_write> tensors() const {
    if (mode_ == mode::names_only) {
      throw invalid_argument("tensor_collection: a names-only collection has no values to write");
    }
    return tensors_;
  }
  /// Name, dtype and shape of every tensor added (data empty in names-only mode).
  [[nodiscard]] std::span<const tensor_to_write> entries() const { return tensors_; }
  [[nodiscard]] std::size_t size() const { return tensors_.size(); }

 private:
  void reject_duplicate(const std::string& name) const {
    for (const tensor_to_write& tensor : tensors_) {
      if (tensor.name == name) {
        throw invalid_argument("tensor_collection: \"" + name + "\" was added twice");
      }
    }
  }

  template <class T>
  std::deque<std::vector<T>>& storage_of() {
    if constexpr (std::is_same_v<T, float>) {
      return f32_;
    } else if constexpr (std::is_same_v<T, bf16>) {
      return bf16_;
    } else if constexpr (std::is_same_v<T, fp16>) {
      return f16_;
    } else {
      return f8_e4m3_;
    }
  }

  // Deques keep every stored vector (and so every span in tensors_) in place as more are added.
  std::deque<std::vector<float>> f32_;
  std::deque<std::vector<bf16>> bf16_;
  std::deque<std::vector<fp16>> f16_;
  std::deque<std::vector<fp8_e4m3>> f8_e4m3_;
  mode mode_;
  std::vector<tensor_to_write> tensors_;
  std::vector<std::string> tolerated_;
};

}  // namespace ngemb
