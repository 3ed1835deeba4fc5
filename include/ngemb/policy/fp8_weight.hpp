#pragma once
// weight_matrix<fp8_e4m3, Policy>: a Linear weight held as the FP8 checkpoints hold it (LongCat-Flash-Lite-FP8,
// DeepSeek-V3): fp8 E4M3 values [rows x cols] and an fp32 scale_inv per 128 x 128 block, [ceil(rows/128) x
// ceil(cols/128)], saved and loaded as `<name>` (F8_E4M3) beside `<name>_scale_inv` (F32), e.g.
// "model.layers.0.mlps.0.down_proj.weight" and "...down_proj.weight_scale_inv" (layout and sources:
// detail/fp8_gemm_ops.hpp). Products accumulate in fp32 over the dequantised weights (policy/fp8_gemm.hpp on the
// host, device_policy.cuh on the device). A quarter of fp32's bytes and half of bf16's for a decode step to read.
//
// In the released LongCat-Flash-Lite-FP8 checkpoint the attention projections, the dense FFNs and the routed experts
// are fp8; lm_head, the embeddings, the norms and the routers are not (its config.json's quantization_config lists
// them in ignored_layers), nor are the n-gram embedding's post_projs: SGLang (python/sglang/srt/layers/
// n_gram_embedding.py) and vLLM (vllm/model_executor/models/longcat_flash_ngram.py) copy every
// ngram_embeddings.post_projs.{i}.weight into a bf16 parameter and know no scale for it. This type quantises any
// float weight itself (amax / 448 per block, as those checkpoints were made), so a W_cat or lm_head can be fp8 too.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/detail/fp8_gemm_ops.hpp"
#include "ngemb/policy/fp8_gemm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"
#include "ngemb/policy/weight_matrix.hpp"

namespace ngemb {

template <class Policy>
class weight_matrix<fp8_e4m3, Policy> {
 public:
  using element_type = fp8_e4m3;
  using policy_type = Policy;
  using activation_type = float;

  weight_matrix() = default;

  /// Quantises host values [rows x cols] row-major, in any readable element type: per 128 x 128 block scale_inv =
  /// amax / 448 (1 for an all-zero block) and values = fp8(value / scale_inv), rounded to nearest even.
  /// invalid_argument for negative extents or a value that is not finite, shape_mismatch for a wrong count.
  template <readable_element S>
  weight_matrix(const Policy& policy, std::int64_t rows, std::int64_t cols, view<const S> values)
      : rows_(rows), cols_(cols) {
    check_extents(rows, cols, values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(static_cast<double>(detail::convert<double>(values[i])))) {
        throw invalid_argument("weight_matrix<fp8_e4m3>: value " + std::to_string(i) +
                               " is not finite; a block scale cannot represent it");
      }
    }
    const auto [row_blocks, col_blocks] = scale_extents();
    std::vector<float> scale_inv(row_blocks * col_blocks);
    std::vector<fp8_e4m3> quantised(values.size());
    const host_policy quantiser{policy_threads(policy)};
    for_each_n(for_operations_of(quantiser, fp8_block_size * fp8_block_size), scale_inv.size(),
               detail::fp8_block_scale_op<S>{values.data(), static_cast<std::size_t>(rows),
                                             static_cast<std::size_t>(cols), scale_inv.data()});
    for_each_n(quantiser, quantised.size(),
               detail::fp8_quantize_op<S>{values.data(), scale_inv.data(), static_cast<std::size_t>(cols),
                                          quantised.data()});
    values_ = upload(policy, view<const fp8_e4m3>(quantised));
    scale_inv_ = upload(policy, view<const float>(scale_inv));
  }

  /// From fp8 values [rows x cols] and their scale_inv [ceil(rows/128) x ceil(cols/128)] on the host, as a
  /// checkpoint stores them. shape_mismatch for a wrong count; invalid_argument for negative extents, a NaN code
  /// (0x7f/0xff: no weight) or a scale that is not finite.
  weight_matrix(const Policy& policy, std::int64_t rows, std::int64_t cols, view<const fp8_e4m3> values,
                view<const float> scale_inv)
      : rows_(rows), cols_(cols) {
    check_extents(rows, cols, values.size());
    const auto [row_blocks, col_blocks] = scale_extents();
    if (scale_inv.size() != row_blocks * col_blocks) {
      throw shape_mismatch("weight_matrix<fp8_e4m3>: scale_inv of " + std::to_string(rows) + " x " +
                           std::to_string(cols) + " weights must hold " + std::to_string(row_blocks) + " x " +
                           std::to_string(col_blocks) + " values, got " + std::to_string(scale_inv.size()));
    }
    if (const std::string problem = invalid_content(values, scale_inv); !problem.empty()) {
      throw invalid_argument("weight_matrix<fp8_e4m3>: " + problem);
    }
    values_ = upload(policy, values);
    scale_inv_ = upload(policy, scale_inv);
  }

  /// Tensor `name` of shape [rows, cols]: F8_E4M3 with `name`_scale_inv of shape [ceil(rows/128), ceil(cols/128)]
  /// (any float dtype), or any float dtype, quantised as the converting constructor does. format_error naming the
  /// tensor for a missing scale tensor, a wrong shape or dtype, a NaN code or a scale that is not finite.
  static weight_matrix load(const Policy& policy, const checkpoint& source, const std::string& name, std::int64_t rows,
                            std::int64_t cols) {
    const std::int64_t extent[] = {rows, cols};
    if (source.info(name).dtype != name_of(dtype::f8_e4m3)) {
      const std::vector<float> values = read_tensor_as<float>(source, name, extent);
      return weight_matrix(policy, rows, cols, view<const float>(values));
    }
    const std::string scale_name = scale_name_of(name);
    if (!source.contains(scale_name)) {
      throw format_error(source.describe(name) + " is F8_E4M3 but its scale tensor \"" + scale_name +
                         "\" is missing");
    }
    source.require_shape(name, extent);  // before the scale's shape, which follows from it
    const std::int64_t scale_extent[] = {static_cast<std::int64_t>(fp8_scale_blocks(static_cast<std::size_t>(rows))),
                                         static_cast<std::int64_t>(fp8_scale_blocks(static_cast<std::size_t>(cols)))};
    const std::vector<float> scale_inv = read_tensor_as<float>(source, scale_name, scale_extent);
    const std::vector<fp8_e4m3> values = read_tensor_as<fp8_e4m3>(source, name, extent);
    if (const std::string problem = invalid_content(values, scale_inv); !problem.empty()) {
      throw format_error(source.describe(name) + ": " + problem);
    }
    return weight_matrix(policy, rows, cols, view<const fp8_e4m3>(values), view<const float>(scale_inv));
  }

  /// Adds `name` (F8_E4M3 [rows, cols]) and `name`_scale_inv (F32 [ceil(rows/128), ceil(cols/128)]).
  void save(const Policy& policy, const std::string& name, tensor_collection& out) const {
    const auto [row_blocks, col_blocks] = scale_extents();
    out.add<fp8_e4m3>(policy, name, {rows_, cols_}, values());
    out.add<float>(policy, scale_name_of(name),
                   {static_cast<std::int64_t>(row_blocks), static_cast<std::int64_t>(col_blocks)}, scale_inv());
  }

  /// c [m x rows] = a [m x cols] * dequant(W)^T, in policy memory, fp32 accumulation.
  void multiply(const Policy& policy, std::size_t m, view<const float> a, view<float> c) const {
    gemm_nt(policy, m, static_cast<std::size_t>(rows_), static_cast<std::size_t>(cols_), a, values(), scale_inv(), c);
  }

  /// c [m x rows] = a [m x columns] * dequant(W)[:, first_column, first_column + columns)^T: a block of W's columns
  /// (a rank's sub-tables, store/sharded_store.hpp). The block is dequantised into fp32 scratch by the element op
  /// both policies share and multiplied by the fp32 GEMM (not the streaming kernel of multiply()).
  void multiply_columns(const Policy& policy, std::size_t m, std::int64_t first_column, std::int64_t columns,
                        view<const float> a, view<float> c) const {
    if (first_column < 0 || columns < 0 || first_column + columns > cols_) {
      throw invalid_argument("weight_matrix::multiply_columns: columns [" + std::to_string(first_column) + ", " +
                             std::to_string(first_column + columns) + ") are not inside [0, " + std::to_string(cols_) +
                             ")");
    }
    const auto rows = static_cast<std::size_t>(rows_);
    const auto width = static_cast<std::size_t>(columns);
    typename Policy::template buffer<float> dequantised(policy, rows * width);
    for_each_n(policy, rows * width,
               detail::fp8_dequantize_op{values_.data(), scale_inv_.data(), static_cast<std::size_t>(cols_), 0,
                                         static_cast<std::size_t>(first_column), width, dequantised.data()});
    gemm_nt<float>(policy, m, rows, width, a, view<const float>(dequantised.as_view()), c);
  }

  [[nodiscard]] std::int64_t rows() const { return rows_; }
  [[nodiscard]] std::int64_t cols() const { return cols_; }
  /// The fp8 values, [rows x cols] row-major in policy memory.
  [[nodiscard]] view<const fp8_e4m3> values() const { return values_.as_view(); }
  /// The block scales, [ceil(rows/128) x ceil(cols/128)] row-major in policy memory.
  [[nodiscard]] view<const float> scale_inv() const { return scale_inv_.as_view(); }
  /// Bytes a product reads of the weight: its values and scales.
  [[nodiscard]] std::size_t bytes() const { return values_.size() + scale_inv_.size() * sizeof(float); }

 private:
  /// The scale tensor beside a weight: "x.weight" -> "x.weight_scale_inv".
  static std::string scale_name_of(const std::string& name) { return name + "_scale_inv"; }

  static unsigned policy_threads(const Policy& policy) {
    if constexpr (std::is_same_v<Policy, host_policy>) {
      return policy.resolved_threads();
    } else {
      return 0;  // quantising runs on the host: all of its threads
    }
  }

  static void check_extents(std::int64_t rows, std::int64_t cols, std::size_t count) {
    if (rows < 0 || cols < 0) {
      throw invalid_argument("weight_matrix<fp8_e4m3>: rows and cols must be >= 0, got " + std::to_string(rows) +
                             " x " + std::to_string(cols));
    }
    if (count != static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols)) {
      throw shape_mismatch("weight_matrix<fp8_e4m3>: " + std::to_string(rows) + " x " + std::to_string(cols) +
                           " = " + std::to_string(static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols)) +
                           " values expected, got " + std::to_string(count));
    }
  }

  /// What makes fp8 values or scales unusable (a NaN code, a scale that is not finite), or "".
  static std::string invalid_content(view<const fp8_e4m3> values, view<const float> scale_inv) {
    for (std::size_t i = 0; i < values.size(); ++i) {
      if ((values[i].bits & 0x7fu) == 0x7fu) {
        return "value " + std::to_string(i) + " is the fp8 NaN code " + std::to_string(values[i].bits);
      }
    }
    for (std::size_t i = 0; i < scale_inv.size(); ++i) {
      if (!std::isfinite(scale_inv[i])) {
        return "scale_inv " + std::to_string(i) + " is not finite (" + std::to_string(scale_inv[i]) + ")";
      }
    }
    return {};
  }

  [[nodiscard]] std::pair<std::size_t, std::size_t> scale_extents() const {
    return {fp8_scale_blocks(static_cast<std::size_t>(rows_)), fp8_scale_blocks(static_cast<std::size_t>(cols_))};
  }

  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  typename Policy::template buffer<fp8_e4m3> values_;
  typename Policy::template buffer<float> scale_inv_;
};

}  // namespace ngemb
