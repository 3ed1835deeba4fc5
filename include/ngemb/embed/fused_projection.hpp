#pragma once
// fused_projection: the T per-sub-table projections W_i [out x d] concatenated into W_cat = [W_0 | ... | W_{T-1}]
// ([out x T*d]), so projecting a batch is one GEMM over the gathered rows instead of T small ones (SPEC §3).
// W_cat is stored as Weight (default: the accumulator type; bf16 or fp16 under an fp32 accumulator halve the bytes a
// decode step reads, block-scaled fp8_e4m3 quarters them) and the GEMM accumulates in Acc. An fp8 W_cat is
// quantised per 128 x 128 block; with row_width a multiple of 128 (LongCat's 256) its blocks are the sub-tables'
// own, so it loads and saves each post_proj as F8_E4M3 with its `_scale_inv` exactly (the released FP8 checkpoint
// keeps post_projs in bf16: they are quantised at load).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/embed/projection.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/fp8_weight.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"
#include "ngemb/policy/weight_matrix.hpp"

namespace ngemb {

template <gemm_scalar Acc = float, class Policy = host_policy, class Weight = Acc>
class fused_projection {
  static_assert(std::is_same_v<Weight, Acc> || (std::is_same_v<Acc, float> && !std::is_same_v<Weight, double>),
                "fused_projection<Acc, Policy, Weight>: Weight must be Acc, or a reduced type (bf16, fp16) under an "
                "fp32 accumulator");

 public:
  using accumulator = Acc;
  using policy_type = Policy;
  using weight_type = Weight;
  using shape = projection_shape;

  /// From host arrays: one Linear weight [output_width x row_width] per sub-table (dims.num_tables of them), in any
  /// readable element type.
  template <readable_element W>
  fused_projection(const Policy& policy, const shape& dims, std::span<const view<const W>> projections)
      : tables_(dims.num_tables), row_width_(dims.row_width), output_width_(dims.output_width) {
    check_sizes();
    if (projections.size() != static_cast<std::size_t>(tables_)) {
      throw shape_mismatch("fused_projection: " + std::to_string(projections.size()) +
                           " projections given, the shape has " + std::to_string(tables_) + " sub-tables");
    }
    std::vector<W> concatenated(static_cast<std::size_t>(output_width_ * input_width()));
    for (int table = 0; table < tables_; ++table) {
      const view<const W> weight = projections[static_cast<std::size_t>(table)];
      if (weight.size() != static_cast<std::size_t>(output_width_ * row_width_)) {
        throw shape_mismatch("fused_projection: projection " + std::to_string(table) + " has " +
                             std::to_string(weight.size()) + " elements, expected " + std::to_string(output_width_) +
                             " x " + std::to_string(row_width_));
      }
      for (std::int64_t out = 0; out < output_width_; ++out) {
        for (std::int64_t column = 0; column < row_width_; ++column) {
          concatenated[static_cast<std::size_t>(out * input_width() + table * row_width_ + column)] =
              weight[static_cast<std::size_t>(out * row_width_ + column)];
        }
      }
    }
    weights_ = weight_matrix<Weight, Policy>(policy, output_width_, input_width(), view<const W>(concatenated));
  }

  /// Reads `{prefix}.post_projs.{i}.weight` [output_width, row_width] for i < num_tables (any float dtype); prefix is
  /// the n-gram module (`ngram_names::module(owner)`).
  static fused_projection load(const Policy& policy, const checkpoint& source, const std::string& prefix,
                               const shape& dims) {
    if constexpr (std::is_same_v<Weight, fp8_e4m3>) {
      return load_fp8(policy, source, prefix, dims);
    } else {
      std::vector<std::vector<double>> weights;
      std::vector<view<const double>> views;
      const std::int64_t extent[] = {dims.output_width, dims.row_width};
      for (int table = 0; table < dims.num_tables; ++table) {
        weights.push_back(read_tensor_as<double>(source, ngram_names::post_proj(prefix, table), extent));
        views.emplace_back(weights.back());
      }
      return fused_projection(policy, dims, std::span<const view<const double>>(views));
    }
  }

  /// Writes `{prefix}.post_projs.{i}.weight` [output_width, row_width], split back out of W_cat, in Weight's dtype
  /// (fp32 for fp64 weights).
  void save(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
    if constexpr (std::is_same_v<Weight, fp8_e4m3>) {
      save_fp8(policy, prefix, out);
    } else {
      save_widened(policy, prefix, out);
    }
  }

  [[nodiscard]] int num_tables() const { return tables_; }
  [[nodiscard]] std::int64_t row_width() const { return row_width_; }
  /// T*d: the width of one token's gathered rows.
  [[nodiscard]] std::int64_t input_width() const { return tables_ * row_width_; }
  [[nodiscard]] std::int64_t output_width() const { return output_width_; }
  /// W_cat, [output_width x T*d] in policy memory.
  [[nodiscard]] const weight_matrix<Weight, Policy>& weights() const { return weights_; }

  /// out [tokens x output_width] = gathered [tokens x T*d] * W_cat^T.
  void project(const Policy& policy, std::size_t tokens, view<const Acc> gathered, view<Acc> out) const {
    weights_.multiply(policy, tokens, gathered, out);
  }

  /// out [tokens x output_width] = gathered [tokens x columns] * W_cat[:, first_column, first_column + columns)^T:
  /// the share of the projection of a rank that holds the rows of only some sub-tables (store/sharded_store.hpp).
  void project_columns(const Policy& policy, std::size_t tokens, std::int64_t first_column, std::int64_t columns,
                       view<const Acc> gathered, view<Acc> out) const {
    if (first_column < 0 || columns < 0 || first_column + columns > input_width()) {
      throw invalid_argument("fused_projection::project_columns: columns [" + std::to_string(first_column) + ", " +
                             std::to_string(first_column + columns) + ") are not inside W_cat's [0, " +
                             std::to_string(input_width()) + ")");
    }
    weights_.multiply_columns(policy, tokens, first_column, columns, gathered, out);
  }

 private:
  /// W_cat split back into the post_projs in Weight's dtype (fp32 for fp64 weights).
  void save_widened(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
    using stored = std::conditional_t<std::is_same_v<Weight, double>, float, Weight>;
    std::vector<Weight> concatenated(weights_.values().size());
    copy_to_host(policy, weights_.values(), view<Weight>(concatenated));
    std::vector<stored> projection(static_cast<std::size_t>(output_width_ * row_width_));
    for (int table = 0; table < tables_; ++table) {
      for (std::int64_t row = 0; row < output_width_; ++row) {
        for (std::int64_t column = 0; column < row_width_; ++column) {
          projection[static_cast<std::size_t>(row * row_width_ + column)] = detail::convert<stored>(
              concatenated[static_cast<std::size_t>(row * input_width() + table * row_width_ + column)]);
        }
      }
      out.add<stored>(host_policy{}, ngram_names::post_proj(prefix, table), {output_width_, row_width_},
                      view<const stored>(projection));
    }
  }

  /// An fp8 W_cat's 128-column scale blocks are whole sub-table blocks only when row_width is a multiple of 128.
  static void require_fp8_block_columns(std::int64_t row_width, const char* what) {
    if (row_width % static_cast<std::int64_t>(fp8_block_size) != 0) {
      throw invalid_argument(std::string("fused_projection<fp8_e4m3>: ") + what + " needs row_width a multiple of " +
                             std::to_string(fp8_block_size) + " (each post_proj's scale blocks), got " +
                             std::to_string(row_width));
    }
  }

  fused_projection(const shape& dims, weight_matrix<Weight, Policy> weights)
      : tables_(dims.num_tables), row_width_(dims.row_width), output_width_(dims.output_width),
        weights_(std::move(weights)) {}

  /// Each post_proj through weight_matrix<fp8_e4m3>::load (F8_E4M3 with its scale, or quantised from any float
  /// dtype), joined column-wise into W_cat with its scale blocks.
  static fused_projection load_fp8(const Policy& policy, const checkpoint& source, const std::string& prefix,
                                   const shape& dims) {
    require_fp8_block_columns(dims.row_width, "load");
    const auto rows = static_cast<std::size_t>(dims.output_width);
    const auto width = static_cast<std::size_t>(dims.row_width);
    const auto tables = static_cast<std::size_t>(dims.num_tables);
    const std::size_t row_blocks = fp8_scale_blocks(rows);
    const std::size_t table_blocks = width / fp8_block_size;
    std::vector<fp8_e4m3> values(rows * tables * width);
    std::vector<float> scale_inv(row_blocks * tables * table_blocks);
    for (std::size_t table = 0; table < tables; ++table) {
      const auto part = weight_matrix<fp8_e4m3, host_policy>::load(
          host_policy{}, source, ngram_names::post_proj(prefix, static_cast<int>(table)), dims.output_width,
          dims.row_width);
      for (std::size_t row = 0; row < rows; ++row) {
        std::copy_n(part.values().data() + row * width, width, values.data() + (row * tables + table) * width);
      }
      for (std::size_t block = 0; block < row_blocks; ++block) {
        std::copy_n(part.scale_inv().data() + block * table_blocks, table_blocks,
                    scale_inv.data() + (block * tables + table) * table_blocks);
      }
    }
    return fused_projection(dims, weight_matrix<fp8_e4m3, Policy>(policy, dims.output_width,
                                                                  dims.num_tables * dims.row_width,
                                                                  view<const fp8_e4m3>(values),
                                                                  view<const float>(scale_inv)));
  }

  /// Each post_proj as F8_E4M3 with its `_scale_inv`, split back out of W_cat.
  void save_fp8(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
    require_fp8_block_columns(row_width_, "save");
    const auto rows = static_cast<std::size_t>(output_width_);
    const auto width = static_cast<std::size_t>(row_width_);
    const auto tables = static_cast<std::size_t>(tables_);
    const std::size_t row_blocks = fp8_scale_blocks(rows);
    const std::size_t table_blocks = width / fp8_block_size;
    std::vector<fp8_e4m3> values(weights_.values().size());
    std::vector<float> scale_inv(weights_.scale_inv().size());
    copy_to_host(policy, weights_.values(), view<fp8_e4m3>(values));
    copy_to_host(policy, weights_.scale_inv(), view<float>(scale_inv));
    for (std::size_t table = 0; table < tables; ++table) {
      std::vector<fp8_e4m3> part(rows * width);
      std::vector<float> part_scale(row_blocks * table_blocks);
      for (std::size_t row = 0; row < rows; ++row) {
        std::copy_n(values.data() + (row * tables + table) * width, width, part.data() + row * width);
      }
      for (std::size_t block = 0; block < row_blocks; ++block) {
        std::copy_n(scale_inv.data() + (block * tables + table) * table_blocks, table_blocks,
                    part_scale.data() + block * table_blocks);
      }
      weight_matrix<fp8_e4m3, host_policy>(host_policy{}, output_width_, row_width_, view<const fp8_e4m3>(part),
                                           view<const float>(part_scale))
          .save(host_policy{}, ngram_names::post_proj(prefix, static_cast<int>(table)), out);
    }
  }

  void check_sizes() const {
    if (tables_ < 1 || row_width_ < 1 || output_width_ < 1) {
      throw invalid_argument("fused_projection: needs >= 1 sub-table, row width and output width, got " +
                             std::to_string(tables_) + ", " + std::to_string(row_width_) + ", " +
                             std::to_string(output_width_));
    }
  }

  int tables_;
  std::int64_t row_width_;
  std::int64_t output_width_;
  weight_matrix<Weight, Policy> weights_;
};

static_assert(detail::check_projection<fused_projection<>>());

}  // namespace ngemb
