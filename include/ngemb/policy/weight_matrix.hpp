#pragma once
// weight_matrix: one Linear weight W [rows x cols] (the PyTorch layout) in policy memory, stored as W's element type
// and applied to a batch of activation rows with fp32 accumulation: c [m x rows] = a [m x cols] * W^T. Parts hold
// their weights through it, so a model picks each part's weight precision by type: float (exact), bf16 or fp16
// (half the bytes a decode step reads; products exact, accumulation fp32), double (references). Block-scaled fp8 is
// a specialisation (policy/fp8_weight.hpp).
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

template <class W, class Policy = host_policy>
class weight_matrix {
  // fp8_e4m3 is a readable element, but its values mean nothing without their block scales: only the
  // specialisation in fp8_weight.hpp holds it.
  static_assert(readable_element<W> && !std::is_same_v<W, fp8_e4m3>,
                "weight_matrix<W, Policy>: W must be float, double, ngemb::bf16 or ngemb::fp16 (or fp8_e4m3 with "
                "ngemb/policy/fp8_weight.hpp)");

 public:
  using element_type = W;
  using policy_type = Policy;
  /// The activations' and outputs' type: fp64 for fp64 weights, fp32 otherwise.
  using activation_type = std::conditional_t<std::is_same_v<W, double>, double, float>;

  weight_matrix() = default;

  /// From host values [rows x cols] row-major in any readable element type, converted to W (round to nearest even).
  template <readable_element S>
  weight_matrix(const Policy& policy, std::int64_t rows, std::int64_t cols, view<const S> values)
      : rows_(rows), cols_(cols) {
    if (rows < 0 || cols < 0) {
      throw invalid_argument("weight_matrix: rows and cols must be >= 0, got " + std::to_string(rows) + " x " +
                             std::to_string(cols));
    }
    if (values.size() != static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols)) {
      throw shape_mismatch("weight_matrix: " + std::to_string(rows) + " x " + std::to_string(cols) + " = " +
                           std::to_string(static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols)) +
                           " values expected, got " + std::to_string(values.size()));
    }
    if constexpr (std::is_same_v<S, W>) {
      values_ = upload(policy, values);
    } else {
      std::vector<W> converted(values.size());
      for (std::size_t i = 0; i < values.size(); ++i) {
        converted[i] = detail::convert<W>(values[i]);
      }
      values_ = upload(policy, view<const W>(converted));
    }
  }

  /// Tensor `name` of shape [rows, cols] in any float dtype, converted to W.
  static weight_matrix load(const Policy& policy, const checkpoint& source, const std::string& name, std::int64_t rows,
                            std::int64_t cols) {
    const std::int64_t extent[] = {rows, cols};
    const std::vector<W> values = read_tensor_as<W>(source, name, extent);
    return weight_matrix(policy, rows, cols, view<const W>(values));
  }

  /// Adds the tensor under `name` in W's dtype (fp64 weights are written as fp32, safetensors' widest float here).
  void save(const Policy& policy, const std::string& name, tensor_collection& out) const {
    if constexpr (std::is_same_v<W, double>) {
      std::vector<double> host(values_.size());
      copy_to_host(policy, values(), view<double>(host));
      std::vector<float> narrowed(host.begin(), host.end());
      out.add<float>(host_policy{}, name, {rows_, cols_}, view<const float>(narrowed));
    } else {
      out.add<W>(policy, name, {rows_, cols_}, values());
    }
  }

  /// c [m x rows] = a [m x cols] * W^T, in policy memory.
  void multiply(const Policy& policy, std::size_t m, view<const activation_type> a, view<activation_type> c) const {
    gemm_nt(policy, m, static_cast<std::size_t>(rows_), static_cast<std::size_t>(cols_), a, values(), c);
  }

  /// c [m x rows] = a [m x columns] * W[:, first_column, first_column + columns)^T: a block of W's columns (the
  /// sub-tables a rank of a sharded store holds, store/sharded_store.hpp).
  void multiply_columns(const Policy& policy, std::size_t m, std::int64_t first_column, std::int64_t columns,
                        view<const activation_type> a, view<activation_type> c) const {
    if (first_column < 0 || columns < 0 || first_column + columns > cols_) {
      throw invalid_argument("weight_matrix::multiply_columns: columns [" + std::to_string(first_column) + ", " +
                             std::to_string(first_column + columns) + ") are not inside [0, " + std::to_string(cols_) +
                             ")");
    }
    const auto stride = static_cast<std::size_t>(cols_);
    const std::size_t span = columns == 0 || rows_ == 0
                                 ? 0
                                 : static_cast<std::size_t>(rows_ - 1) * stride + static_cast<std::size_t>(columns);
    gemm_nt(policy, m, static_cast<std::size_t>(rows_), static_cast<std::size_t>(columns), a,
            values().subview(span == 0 ? 0 : static_cast<std::size_t>(first_column), span), stride, c);
  }

  [[nodiscard]] std::int64_t rows() const { return rows_; }
  [[nodiscard]] std::int64_t cols() const { return cols_; }
  /// The stored values, [rows x cols] row-major in policy memory.
  [[nodiscard]] view<const W> values() const { return values_.as_view(); }
  /// Bytes a product reads of the weight.
  [[nodiscard]] std::size_t bytes() const { return values_.size() * sizeof(W); }

 private:
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  typename Policy::template buffer<W> values_;
};

}  // namespace ngemb
