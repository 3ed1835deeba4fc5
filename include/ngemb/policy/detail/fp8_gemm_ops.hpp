#pragma once
// What the host and device block-scaled fp8 products share: the block geometry, the shape checks, and the element
// operations that dequantise and quantise (one NGEMB_HD op each, run by either policy).
//
// The layout is the one the released FP8 checkpoints use (LongCat-Flash-Lite-FP8's config.json: quant_method "fp8",
// fmt "e4m3", weight_block_size [128, 128], activation_scheme "dynamic"; DeepSeek-V3's format): a Linear weight
// `<module>.weight` [out x in] stored as F8_E4M3 beside `<module>.weight_scale_inv`, F32 of shape
// [ceil(out / 128), ceil(in / 128)], and weight[r][c] = float(fp8[r][c]) * scale_inv[r / 128][c / 128]
// (transformers' FP8Linear and Fp8Dequantize, src/transformers/integrations/finegrained_fp8.py; SGLang's
// block_quant_dequant). The quantisers set scale_inv = amax / 448 over each 128 x 128 block.
#include <cstddef>
#include <string>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"

namespace ngemb {

/// Rows and columns of a weight block that shares one scale.
inline constexpr std::size_t fp8_block_size = 128;
/// Largest finite fp8_e4m3: the quantisers map each block's largest magnitude to it.
inline constexpr float fp8_e4m3_max = 448.0f;

/// Scale blocks along an extent of `elements` rows or columns (the last one may be partial).
NGEMB_HD constexpr std::size_t fp8_scale_blocks(std::size_t elements) {
  return (elements + fp8_block_size - 1) / fp8_block_size;
}

namespace detail {

/// C [m x n] = A [m x k] * dequant(B [n x k], scale_inv [ceil(n/128) x ceil(k/128)])^T: every operand's size.
inline void check_fp8_gemm_shapes(std::size_t m, std::size_t n, std::size_t k, std::size_t a, std::size_t b,
                                  std::size_t scale_inv, std::size_t c) {
  const auto fail = [](const char* operand, std::size_t got, std::size_t rows, std::size_t columns) {
    throw shape_mismatch(std::string("gemm_nt (fp8): ") + operand + " must hold " + std::to_string(rows) + " x " +
                         std::to_string(columns) + " = " + std::to_string(rows * columns) + " values, got " +
                         std::to_string(got));
  };
  if (a != m * k) {
    fail("A", a, m, k);
  }
  if (b != n * k) {
    fail("B", b, n, k);
  }
  if (scale_inv != fp8_scale_blocks(n) * fp8_scale_blocks(k)) {
    fail("B's scale_inv", scale_inv, fp8_scale_blocks(n), fp8_scale_blocks(k));
  }
  if (c != m * n) {
    fail("C", c, m, n);
  }
}

/// dequantised [rows x columns] = the block of a scaled [* x cols] matrix at (first_row, first_column), element by
/// element: float(weight) * its block's scale_inv. `weights` and `scale_inv` are the whole matrix's.
struct fp8_dequantize_op {
  const fp8_e4m3* weights;
  const float* scale_inv;
  std::size_t cols;
  std::size_t first_row;
  std::size_t first_column;
  std::size_t columns;
  float* dequantised;

  NGEMB_HD void operator()(std::size_t i) const {
    const std::size_t row = first_row + i / columns;
    const std::size_t col = first_column + i % columns;
    dequantised[i] = to_float(weights[row * cols + col]) *
                     scale_inv[(row / fp8_block_size) * fp8_scale_blocks(cols) + col / fp8_block_size];
  }
};

/// scale_inv[block] = amax / 448 over block `block` (row-major over the blocks) of values [rows x cols], or 1 for a
/// block whose scale would be zero (all zeros, or an amax too small for the division), so quantising divides safely.
template <class T>
struct fp8_block_scale_op {
  const T* values;
  std::size_t rows;
  std::size_t cols;
  float* scale_inv;

  NGEMB_HD void operator()(std::size_t block) const {
    const std::size_t column_blocks = fp8_scale_blocks(cols);
    const std::size_t row_begin = block / column_blocks * fp8_block_size;
    const std::size_t col_begin = block % column_blocks * fp8_block_size;
    const std::size_t row_end = row_begin + fp8_block_size < rows ? row_begin + fp8_block_size : rows;
    const std::size_t col_end = col_begin + fp8_block_size < cols ? col_begin + fp8_block_size : cols;
    float amax = 0.0f;
    for (std::size_t r = row_begin; r < row_end; ++r) {
      for (std::size_t c = col_begin; c < col_end; ++c) {
        const float value = static_cast<float>(values[r * cols + c]);
        const float magnitude = value < 0.0f ? -value : value;
        amax = magnitude > amax ? magnitude : amax;
      }
    }
    const float scale = amax / fp8_e4m3_max;
    scale_inv[block] = scale > 0.0f ? scale : 1.0f;
  }
};

/// quantised[i] = fp8(values[i] / its block's scale_inv), rounded to nearest even (saturating; the block scale
/// keeps every value within +-448 already).
template <class T>
struct fp8_quantize_op {
  const T* values;
  const float* scale_inv;
  std::size_t cols;
  fp8_e4m3* quantised;

  NGEMB_HD void operator()(std::size_t i) const {
    const std::size_t row = i / cols;
    const std::size_t col = i % cols;
    const float scale = scale_inv[(row / fp8_block_size) * fp8_scale_blocks(cols) + col / fp8_block_size];
    quantised[i] = fp8_e4m3(static_cast<float>(values[i]) / scale);
  }
};

}  // namespace detail

}  // namespace ngemb
