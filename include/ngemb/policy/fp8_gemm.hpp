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
#include <array>
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
#include <cpuid.h>
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

/// The 256 codes widened (fp8_e4m3's exact conversion), for the portable loops: one load per weight.
inline const float* fp8_e4m3_table() {
  static const auto table = [] {
    std::array<float, 256> values{};
    for (unsigned code = 0; code < 256; ++code) {
      values[code] = to_float(fp8_e4m3::from_bits(static_cast<std::uint8_t>(code)));
    }
    return values;
  }();
  return table.data();
}

/// out[i] = float(weights[i]) * scale for `count` weights.
inline void fp8_widen_portable(const fp8_e4m3* weights, std::size_t count, float scale, float* out) {
  const float* const table = fp8_e4m3_table();
  for (std::size_t i = 0; i < count; ++i) {
    out[i] = table[weights[i].bits] * scale;
  }
}

/// C's columns [row, row + Group) = A * dequant(B's rows [row, row + Group))^T, for m <= fp8_gemm_direct_rows: per
/// 128-column scale block the group's weights are widened (scale applied) into `widened` and dotted with every row
/// of A, in independent partial sums the compiler vectorises.
template <std::size_t Group>
void fp8_row_group_portable(std::size_t m, std::size_t n, std::size_t k, const float* a, const fp8_e4m3* b,
                            const float* scale_inv, float* c, std::size_t row) {
  constexpr std::size_t lanes = 16;
  alignas(64) float widened[Group][fp8_block_size];
  float sums[fp8_gemm_direct_rows][Group] = {};
  const std::size_t column_blocks = fp8_scale_blocks(k);
  for (std::size_t block = 0; block < column_blocks; ++block) {
    const std::size_t first = block * fp8_block_size;
    const std::size_t width = std::min(fp8_block_size, k - first);
    for (std::size_t g = 0; g < Group; ++g) {
      const float scale = scale_inv[(row + g) / fp8_block_size * column_blocks + block];
      fp8_widen_portable(b + (row + g) * k + first, width, scale, widened[g]);
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

/// C's columns for B's rows [row_begin, row_end) with the portable loops.
inline void fp8_direct_rows_portable(std::size_t m, std::size_t n, std::size_t k, const float* a, const fp8_e4m3* b,
                                     const float* scale_inv, float* c, std::size_t row_begin, std::size_t row_end) {
  std::size_t row = row_begin;
  for (; row + fp8_gemm_row_group <= row_end; row += fp8_gemm_row_group) {
    fp8_row_group_portable<fp8_gemm_row_group>(m, n, k, a, b, scale_inv, c, row);
  }
  // The last rows as one group (a loop here makes g++ warn about its pointer arithmetic at absurd iterations).
  switch (row_end - row) {
    case 3: fp8_row_group_portable<3>(m, n, k, a, b, scale_inv, c, row); break;
    case 2: fp8_row_group_portable<2>(m, n, k, a, b, scale_inv, c, row); break;
    case 1: fp8_row_group_portable<1>(m, n, k, a, b, scale_inv, c, row); break;
    default: break;
  }
}

#if NGEMB_FP8_X86
/// 16 codes widened to 2 x 8 floats equal to their values times 2^-8, exactly: a code sign-extended to 16 bits and
/// shifted left by 7, with bit 14 cleared, is the fp16 with the code's sign, exponent and mantissa (bias 15 against 7,
/// subnormals included), which vcvtph2ps widens exactly.
[[gnu::target("avx2,fma,f16c")]] inline void fp8_halves_avx2(const fp8_e4m3* weights, __m256& low, __m256& high) {
  const __m256i codes = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(weights)));
  const __m256i halves = _mm256_and_si256(_mm256_slli_epi16(codes, 7), _mm256_set1_epi16(static_cast<short>(0xbfff)));
  low = _mm256_cvtph_ps(_mm256_castsi256_si128(halves));
  high = _mm256_cvtph_ps(_mm256_extracti128_si256(halves, 1));
}

/// fp8_widen_portable with AVX2 + F16C: the same floats (the 2^8 joins the scale, exactly).
[[gnu::target("avx2,fma,f16c")]] inline void fp8_widen_avx2(const fp8_e4m3* weights, std::size_t count, float scale,
                                                            float* out) {
  const float factor = scale * 256.0f;
  if (!std::isfinite(factor)) {  // scale within 2^8 of the float range: the exact route
    fp8_widen_portable(weights, count, scale, out);
    return;
  }
  const __m256 scaled = _mm256_set1_ps(factor);
  std::size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m256 low;
    __m256 high;
    fp8_halves_avx2(weights + i, low, high);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(low, scaled));
    _mm256_storeu_ps(out + i + 8, _mm256_mul_ps(high, scaled));
  }
  fp8_widen_portable(weights + i, count - i, scale, out + i);
}

/// `count` <= 128 codes' values times 2^-8 into `out`, zero-padded to a multiple of 8.
[[gnu::target("avx2,fma,f16c")]] inline void fp8_widen_unscaled_avx2(const fp8_e4m3* weights, std::size_t count,
                                                                     float* out) {
  std::size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m256 low;
    __m256 high;
    fp8_halves_avx2(weights + i, low, high);
    _mm256_store_ps(out + i, low);
    _mm256_store_ps(out + i + 8, high);
  }
  fp8_widen_portable(weights + i, count - i, 1.0f / 256.0f, out + i);
  std::fill(out + count, out + (count + 7) / 8 * 8, 0.0f);
}

/// AVX2, FMA and F16C, usable (the builtins check the OS saves the ymm state; clang 14's know no "f16c", so
/// CPUID leaf 1 answers for it).
inline bool fp8_cpu_has_avx2() {
  static const bool supported = [] {
    unsigned eax = 0;
    unsigned ebx = 0;
    unsigned ecx = 0;
    unsigned edx = 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
  }();
  return supported;
}

/// Rows of A one pass of the AVX2 micro-kernel holds: Rows x Group = 12 accumulators, plus the Group weight vectors
/// and a row of A, fill the 16 ymm registers.
inline constexpr std::size_t fp8_avx2_rows = 3;

/// sums[r][g] += scale[g] * (A's rows [row_a, row_a + Rows) . widened[g]) over one block of `width` columns from
/// column `first`: 8 columns per step, Rows x Group fused multiply-adds per Rows + Group loads (two interleaved
/// sets of accumulators when one row of A gives too few to hide the multiply-add latency). The widened rows hold
/// the weights times 2^-8, zero-padded to a multiple of 8; `scale` holds the group's scale_inv for this block. A's
/// last partial step is a masked load.
template <std::size_t Rows, std::size_t Group>
[[gnu::target("avx2,fma,f16c")]] inline void fp8_avx2_block(const float* a, std::size_t k, std::size_t row_a,
                                                            std::size_t first, std::size_t width,
                                                            const float (*widened)[fp8_block_size],
                                                            const float* scale, __m256 (*sums)[Group]) {
  // No lambdas here: they would not inherit the target attribute.
  constexpr std::size_t sets = Rows * Group < 8 ? 2 : 1;
  __m256 sum[sets][Rows][Group];
  for (std::size_t set = 0; set < sets; ++set) {
    for (std::size_t r = 0; r < Rows; ++r) {
      for (std::size_t g = 0; g < Group; ++g) {
        sum[set][r][g] = _mm256_setzero_ps();
      }
    }
  }
  const std::size_t whole = width / 8 * 8;
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(width - whole)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (std::size_t column = 0; column < width; column += 8 * sets) {
    for (std::size_t set = 0; set < sets && column + 8 * set < width; ++set) {
      const std::size_t at = column + 8 * set;
      __m256 weight[Group];
      for (std::size_t g = 0; g < Group; ++g) {
        weight[g] = _mm256_load_ps(widened[g] + at);
      }
      for (std::size_t r = 0; r < Rows; ++r) {
        const float* const from = a + (row_a + r) * k + first + at;
        const __m256 activation = at < whole ? _mm256_loadu_ps(from) : _mm256_maskload_ps(from, mask);
        for (std::size_t g = 0; g < Group; ++g) {
          sum[set][r][g] = _mm256_fmadd_ps(activation, weight[g], sum[set][r][g]);
        }
      }
    }
  }
  for (std::size_t r = 0; r < Rows; ++r) {
    for (std::size_t g = 0; g < Group; ++g) {
      const __m256 block = sets == 2 ? _mm256_add_ps(sum[0][r][g], sum[sets - 1][r][g]) : sum[0][r][g];
      // The 2^8 first (exact), so no scale near the float range overflows.
      sums[r][g] = _mm256_fmadd_ps(_mm256_mul_ps(block, _mm256_set1_ps(256.0f)), _mm256_set1_ps(scale[g]), sums[r][g]);
    }
  }
}

[[gnu::target("avx2,fma,f16c")]] inline float fp8_avx2_sum(__m256 value) {
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(value), _mm256_extractf128_ps(value, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_movehdup_ps(half));
  return _mm_cvtss_f32(half);
}

/// fp8_row_group_portable with AVX2: per block the group's weights are widened without their scale, multiplied by
/// a register-blocked micro-kernel, and each block's dot products scaled once.
template <std::size_t Group>
[[gnu::target("avx2,fma,f16c")]] inline void fp8_row_group_avx2(std::size_t m, std::size_t n, std::size_t k,
                                                                const float* a, const fp8_e4m3* b,
                                                                const float* scale_inv, float* c, std::size_t row) {
  alignas(32) float widened[Group][fp8_block_size];
  float scale[Group];
  __m256 sums[fp8_gemm_direct_rows][Group];
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t g = 0; g < Group; ++g) {
      sums[i][g] = _mm256_setzero_ps();
    }
  }
  const std::size_t column_blocks = fp8_scale_blocks(k);
  for (std::size_t block = 0; block < column_blocks; ++block) {
    const std::size_t first = block * fp8_block_size;
    const std::size_t width = std::min(fp8_block_size, k - first);
    for (std::size_t g = 0; g < Group; ++g) {
      scale[g] = scale_inv[(row + g) / fp8_block_size * column_blocks + block];
      fp8_widen_unscaled_avx2(b + (row + g) * k + first, width, widened[g]);
    }
    std::size_t i = 0;
    for (; i + fp8_avx2_rows <= m; i += fp8_avx2_rows) {
      fp8_avx2_block<fp8_avx2_rows, Group>(a, k, i, first, width, widened, scale, sums + i);
    }
    if (m - i == 2) {
      fp8_avx2_block<2, Group>(a, k, i, first, width, widened, scale, sums + i);
    } else if (m - i == 1) {
      fp8_avx2_block<1, Group>(a, k, i, first, width, widened, scale, sums + i);
    }
  }
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t g = 0; g < Group; ++g) {
      c[i * n + row + g] = fp8_avx2_sum(sums[i][g]);
    }
  }
}

[[gnu::target("avx2,fma,f16c")]] inline void fp8_direct_rows_avx2(std::size_t m, std::size_t n, std::size_t k,
                                                                  const float* a, const fp8_e4m3* b,
                                                                  const float* scale_inv, float* c,
                                                                  std::size_t row_begin, std::size_t row_end) {
  std::size_t row = row_begin;
  for (; row + fp8_gemm_row_group <= row_end; row += fp8_gemm_row_group) {
    fp8_row_group_avx2<fp8_gemm_row_group>(m, n, k, a, b, scale_inv, c, row);
  }
  // The last rows as one group (a loop here makes g++ warn about its pointer arithmetic at absurd iterations).
  switch (row_end - row) {
    case 3: fp8_row_group_avx2<3>(m, n, k, a, b, scale_inv, c, row); break;
    case 2: fp8_row_group_avx2<2>(m, n, k, a, b, scale_inv, c, row); break;
    case 1: fp8_row_group_avx2<1>(m, n, k, a, b, scale_inv, c, row); break;
    default: break;
  }
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
