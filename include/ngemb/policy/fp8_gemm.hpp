#pragma once
// The block-scaled fp8 product on the host: C [m x n] = A [m x k] * dequant(B)^T with fp32 activations A, fp8
// (E4M3) weights B [n x k] and their fp32 scale_inv [ceil(n/128) x ceil(k/128)] (the FP8 checkpoints' layout,
// detail/fp8_gemm_ops.hpp), accumulated in fp32. device_policy.cuh adds the device overload.
//
// Up to 16 rows of A (decode), each weight is read once: four rows of B at a time, one 128-column scale block at
// a time, are widened (scale applied) into an L1 buffer and dotted with every row of A; AVX2 + F16C widen 16
// weights in a few instructions (an E4M3 code shifted into an fp16 is the value times 2^-8, subnormals included),
// chosen at run time so a generic build stays fast, the portable loop otherwise. Larger batches widen panels of B
// into fp32 scratch and run the fp32 gemm_nt, whose multiply-adds then dominate the widening.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/detail/fp8_gemm_ops.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_buffer.hpp"
#include "ngemb/policy/host_policy.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define NGEMB_FP8_X86 1
#else
#define NGEMB_FP8_X86 0
#endif

namespace ngemb {

namespace detail {

/// Rows of A up to which the fp8 product streams B once and dots it with every row of A.
inline constexpr std::size_t fp8_gemm_direct_rows = 16;
/// Weights below which a second thread costs more than it saves (as the bf16 product's direct path).
inline constexpr std::size_t fp8_min_weights_per_thread = std::size_t{1} << 20;
/// Rows of B widened together: four rows' partial sums share each load of A.
inline constexpr std::size_t fp8_gemm_row_group = 4;

/// out[i] = float(weights[i]) * scale for `count` weights, branch-free so the compiler vectorises it (the NaN codes
/// 0x7f/0xff are not weights: they widen to 480 here, and weight_matrix<fp8_e4m3> refuses them).
inline void fp8_widen_portable(const fp8_e4m3* weights, std::size_t count, float scale, float* out) {
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint32_t code = weights[i].bits;
    const std::uint32_t magnitude = code & 0x7fu;
    const std::uint32_t subnormal = std::bit_cast<std::uint32_t>(static_cast<float>(magnitude) * 0x1p-9f);
    const std::uint32_t normal = (magnitude << 20) + 0x3c000000u;
    const std::uint32_t bits = ((code & 0x80u) << 24) | (magnitude < 8u ? subnormal : normal);
    out[i] = std::bit_cast<float>(bits) * scale;
  }
}

#if NGEMB_FP8_X86
/// fp8_widen_portable with AVX2 + F16C: each code becomes the fp16 of its value times 2^-8 (sign to bit 15, exponent
/// and mantissa shifted by 7; bias 15 against 7), which vcvtph2ps widens exactly; the 2^8 joins the scale. The
/// products are the same floats as the portable loop's.
[[gnu::target("avx2,fma,f16c")]] inline void fp8_widen_avx2(const fp8_e4m3* weights, std::size_t count, float scale,
                                                            float* out) {
  const float factor = scale * 256.0f;
  if (!std::isfinite(factor)) {  // scale within 2^8 of the float range: the exact route
    fp8_widen_portable(weights, count, scale, out);
    return;
  }
  const __m256 scaled = _mm256_set1_ps(factor);
  const __m256i magnitude_mask = _mm256_set1_epi16(0x7f);
  const __m256i sign_mask = _mm256_set1_epi16(0x80);
  std::size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m256i codes = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(weights + i)));
    const __m256i halves = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(codes, magnitude_mask), 7),
                                           _mm256_slli_epi16(_mm256_and_si256(codes, sign_mask), 8));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(halves)), scaled));
    _mm256_storeu_ps(out + i + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(halves, 1)), scaled));
  }
  fp8_widen_portable(weights + i, count - i, scale, out + i);
}

inline bool fp8_cpu_has_avx2() {
  static const bool supported =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return supported;
}
#endif

template <bool Avx2>
inline void fp8_widen(const fp8_e4m3* weights, std::size_t count, float scale, float* out) {
#if NGEMB_FP8_X86
  if constexpr (Avx2) {
    fp8_widen_avx2(weights, count, scale, out);
    return;
  }
#endif
  fp8_widen_portable(weights, count, scale, out);
}

/// C's columns [row, row + Group) = A * dequant(B's rows [row, row + Group))^T, for m <= fp8_gemm_direct_rows: per
/// 128-column scale block the group's weights are widened into `widened` and dotted with every row of A, in
/// independent partial sums the compiler vectorises.
template <std::size_t Group, bool Avx2>
[[gnu::always_inline]] inline void fp8_row_group(std::size_t m, std::size_t n, std::size_t k, const float* a,
                                                 const fp8_e4m3* b, const float* scale_inv, float* c,
                                                 std::size_t row) {
  constexpr std::size_t lanes = 16;
  alignas(64) float widened[Group][fp8_block_size];
  float sums[fp8_gemm_direct_rows][Group] = {};
  const std::size_t column_blocks = fp8_scale_blocks(k);
  for (std::size_t block = 0; block < column_blocks; ++block) {
    const std::size_t first = block * fp8_block_size;
    const std::size_t width = std::min(fp8_block_size, k - first);
    for (std::size_t g = 0; g < Group; ++g) {
      const float scale = scale_inv[(row + g) / fp8_block_size * column_blocks + block];
      fp8_widen<Avx2>(b + (row + g) * k + first, width, scale, widened[g]);
    }
    const std::size_t whole = width / lanes * lanes;
    for (std::size_t i = 0; i < m; ++i) {
      const float* const activations = a + i * k + first;
      float partial[Group][lanes] = {};
      for (std::size_t l = 0; l < whole; l += lanes) {
        for (std::size_t g = 0; g < Group; ++g) {
          for (std::size_t j = 0; j < lanes; ++j) {
            partial[g][j] += activations[l + j] * widened[g][l + j];
          }
        }
      }
      for (std::size_t g = 0; g < Group; ++g) {
        float sum = 0.0f;
        for (const float value : partial[g]) {
          sum += value;
        }
        for (std::size_t l = whole; l < width; ++l) {
          sum += activations[l] * widened[g][l];
        }
        sums[i][g] += sum;
      }
    }
  }
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t g = 0; g < Group; ++g) {
      c[i * n + row + g] = sums[i][g];
    }
  }
}

template <bool Avx2>
[[gnu::always_inline]] inline void fp8_direct_rows_body(std::size_t m, std::size_t n, std::size_t k, const float* a,
                                                        const fp8_e4m3* b, const float* scale_inv, float* c,
                                                        std::size_t row_begin, std::size_t row_end) {
  std::size_t row = row_begin;
  for (; row + fp8_gemm_row_group <= row_end; row += fp8_gemm_row_group) {
    fp8_row_group<fp8_gemm_row_group, Avx2>(m, n, k, a, b, scale_inv, c, row);
  }
  for (; row < row_end; ++row) {
    fp8_row_group<1, Avx2>(m, n, k, a, b, scale_inv, c, row);
  }
}

inline void fp8_direct_rows_portable(std::size_t m, std::size_t n, std::size_t k, const float* a, const fp8_e4m3* b,
                                     const float* scale_inv, float* c, std::size_t row_begin, std::size_t row_end) {
  fp8_direct_rows_body<false>(m, n, k, a, b, scale_inv, c, row_begin, row_end);
}

#if NGEMB_FP8_X86
/// The same loops compiled for AVX2/FMA: the dot products vectorise 8 wide with fused multiply-adds.
[[gnu::target("avx2,fma,f16c")]] inline void fp8_direct_rows_avx2(std::size_t m, std::size_t n, std::size_t k,
                                                                  const float* a, const fp8_e4m3* b,
                                                                  const float* scale_inv, float* c,
                                                                  std::size_t row_begin, std::size_t row_end) {
  fp8_direct_rows_body<true>(m, n, k, a, b, scale_inv, c, row_begin, row_end);
}
#endif

/// C's columns for B's rows [row_begin, row_end), m <= fp8_gemm_direct_rows, on the fastest path the CPU runs.
inline void fp8_direct_rows(std::size_t m, std::size_t n, std::size_t k, const float* a, const fp8_e4m3* b,
                            const float* scale_inv, float* c, std::size_t row_begin, std::size_t row_end) {
#if NGEMB_FP8_X86
  if (fp8_cpu_has_avx2()) {
    fp8_direct_rows_avx2(m, n, k, a, b, scale_inv, c, row_begin, row_end);
    return;
  }
#endif
  fp8_direct_rows_portable(m, n, k, a, b, scale_inv, c, row_begin, row_end);
}

/// Dequantises row `row` of B [* x k] into `out` [k], one scale block at a time.
inline void fp8_dequantize_row(std::size_t k, const fp8_e4m3* b, const float* scale_inv, std::size_t row, float* out) {
  const std::size_t column_blocks = fp8_scale_blocks(k);
  for (std::size_t block = 0; block < column_blocks; ++block) {
    const std::size_t column = block * fp8_block_size;
    const std::size_t width = std::min(fp8_block_size, k - column);
    const float scale = scale_inv[row / fp8_block_size * column_blocks + block];
#if NGEMB_FP8_X86
    if (fp8_cpu_has_avx2()) {
      fp8_widen_avx2(b + row * k + column, width, scale, out + column);
      continue;
    }
#endif
    fp8_widen_portable(b + row * k + column, width, scale, out + column);
  }
}

/// Rows of B one panel of the large-batch path dequantises: 4 MiB of fp32, tall enough for the fp32 GEMM's
/// blocking, small enough to stay in L2/L3 between its widening and its use.
inline std::size_t fp8_panel_rows(std::size_t n, std::size_t k) {
  return std::min(n, std::max<std::size_t>(fp8_block_size, (std::size_t{1} << 20) / k));
}

}  // namespace detail

/// C = A * dequant(B)^T with fp32 A [m x k], fp8 B [n x k] and fp32 B_scale_inv [ceil(n/128) x ceil(k/128)]
/// (row-major; B[r][c] means float(B[r][c]) * B_scale_inv[r / 128][c / 128]) and fp32 C [m x n], fp32
/// accumulation. B must not hold the NaN codes 0x7f/0xff (weight_matrix<fp8_e4m3> refuses them). shape_mismatch
/// names the operand whose size disagrees with m, n and k.
inline void gemm_nt(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k,
                    std::type_identity_t<view<const float>> a, view<const fp8_e4m3> b,
                    std::type_identity_t<view<const float>> b_scale_inv, view<float> c) {
  detail::check_fp8_gemm_shapes(m, n, k, a.size(), b.size(), b_scale_inv.size(), c.size());
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0) {
    std::fill(c.begin(), c.end(), 0.0f);
    return;
  }
  if (m <= detail::fp8_gemm_direct_rows) {
    const std::size_t workers = std::clamp<std::size_t>(n * k / detail::fp8_min_weights_per_thread, 1,
                                                        std::min<std::size_t>(policy.resolved_threads(), n));
    for_each_n(host_policy{static_cast<unsigned>(workers), 1}, workers, [&](std::size_t worker) {
      detail::fp8_direct_rows(m, n, k, a.data(), b.data(), b_scale_inv.data(), c.data(), n * worker / workers,
                              n * (worker + 1) / workers);
    });
    return;
  }
  // Panels of B in fp32, each multiplied by the fp32 GEMM into `product` [m x rows], whose columns then go to C.
  const std::size_t panel_rows = detail::fp8_panel_rows(n, k);
  host_buffer<float> panel(policy, panel_rows * k, for_overwrite);
  host_buffer<float> product(policy, m * panel_rows, for_overwrite);
  const host_policy rows_policy = for_operations_of(policy, k);
  for (std::size_t first = 0; first < n; first += panel_rows) {
    const std::size_t rows = std::min(panel_rows, n - first);
    for_each_n(rows_policy, rows, [&](std::size_t r) {
      detail::fp8_dequantize_row(k, b.data(), b_scale_inv.data(), first + r, panel.data() + r * k);
    });
    gemm_nt<float>(policy, m, rows, k, a, view<const float>(panel.data(), rows * k),
                   view<float>(product.data(), m * rows));
    for (std::size_t i = 0; i < m; ++i) {
      std::copy_n(product.data() + i * rows, rows, c.data() + i * n + first);
    }
  }
}

}  // namespace ngemb
