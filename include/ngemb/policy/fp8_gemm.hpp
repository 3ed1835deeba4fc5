#pragma once
// The block-scaled fp8 product on the host: C [m x n] = A [m x k] * dequant(B)^T with fp32 activations A, fp8
// (E4M3) weights B [n x k] and their fp32 scale_inv [ceil(n/128) x ceil(k/128)] (the FP8 checkpoints' layout,
// detail/fp8_gemm_ops.hpp), accumulated in fp32. device_policy.cuh adds the device overload.
//
// Up to 16 rows of A (decode), each weight is read from memory once, by a group of rows of B dotted with every row
// of A. Where the CPU has AVX2, FMA and F16C (asked once at run time, so a generic build of a user's program gets
// them too), 16 weights widen in a few instructions (an E4M3 code shifted into an fp16 is its value times 2^-8,
// subnormals included): one or two rows of A multiply the weights in the registers they were widened in, with
// each 128-column block's scale applied to the activations; more rows dequantise each 256-column chunk of a group
// of B's rows once into L1 for all tiles of A. Elsewhere a portable loop widens through a 256-entry table. Larger
// batches dequantise panels of B into fp32 scratch and run the fp32 gemm_nt, whose multiply-adds then dominate.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/detail/fp8_gemm_ops.hpp"
#include "ngemb/policy/detail/host_kernels.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_buffer.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

namespace detail {

/// Rows of A up to which the fp8 product streams B once and dots it with every row of A.
inline constexpr std::size_t fp8_gemm_direct_rows = 16;
/// Weights below which a second thread costs more than it saves (as the bf16 product's direct path).
inline constexpr std::size_t fp8_min_weights_per_thread = std::size_t{1} << 20;
/// Rows of B widened together: four rows' partial sums share each load of A.
inline constexpr std::size_t fp8_gemm_row_group = 4;

/// Whether the AVX2 kernels run: the instruction set host_kernels.hpp detected (and tests may lower).
inline bool fp8_use_avx2() { return host_isa_limit().load(std::memory_order_relaxed) == host_isa::avx2_fma; }

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

#ifdef NGEMB_HOST_X86_KERNELS
/// 8 codes widened to floats equal to their values times 2^-8, exactly: a code sign-extended to 16 bits and shifted
/// left by 7, bit 14 cleared, is the fp16 with the code's sign, exponent and mantissa (bias 15 against 7, subnormals
/// included), which vcvtph2ps widens exactly.
NGEMB_TARGET_AVX2 inline __m256 fp8_load8_avx2(const fp8_e4m3* weights) {
  const __m128i codes = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(weights)));
  return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(codes, 7), _mm_set1_epi16(static_cast<short>(0xbfff))));
}

/// fp8_load8_avx2 for 16 codes: one sign extension and shift for all of them, then two conversions.
NGEMB_TARGET_AVX2 inline void fp8_load16_avx2(const fp8_e4m3* weights, __m256& low, __m256& high) {
  const __m256i codes = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(weights)));
  const __m256i halves = _mm256_and_si256(_mm256_slli_epi16(codes, 7), _mm256_set1_epi16(static_cast<short>(0xbfff)));
  low = _mm256_cvtph_ps(_mm256_castsi256_si128(halves));
  high = _mm256_cvtph_ps(_mm256_extracti128_si256(halves, 1));
}

/// fp8_widen_portable with AVX2 + F16C: the same floats (the 2^8 joins the scale, exactly).
NGEMB_TARGET_AVX2 inline void fp8_widen_avx2(const fp8_e4m3* weights, std::size_t count, float scale, float* out) {
  const float factor = scale * 256.0f;
  if (!std::isfinite(factor)) {  // scale within 2^8 of the float range: the exact route
    fp8_widen_portable(weights, count, scale, out);
    return;
  }
  const __m256 scaled = _mm256_set1_ps(factor);
  std::size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_mul_ps(fp8_load8_avx2(weights + i), scaled));
  }
  fp8_widen_portable(weights + i, count - i, scale, out + i);
}

NGEMB_TARGET_AVX2 inline float fp8_avx2_sum(__m256 value) {
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(value), _mm256_extractf128_ps(value, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_movehdup_ps(half));
  return _mm_cvtss_f32(half);
}

/// c[i][r] = A row i . dequant(B row r) for M rows of A and R rows of B that share one row of scale blocks
/// (`scales`, ceil(k/128) of them): M x R accumulators stay in registers across k while each weight is widened in
/// a register once (the layout of host_kernels.hpp's bf16 tile). Per 128-column block the activations are
/// multiplied by the block's scale (times the 2^8 the widening leaves out), so each weight costs its widening and
/// M fused multiply-adds; the k % 8 tail is added in scalar.
template <int M, int R>
NGEMB_TARGET_AVX2 void fp8_tile_avx2(std::size_t k, const float* a, const fp8_e4m3* b, const float* scales, float* c,
                                  std::size_t ldc) {
  __m256 sums[M][R];
  for (int i = 0; i < M; ++i) {
    for (int r = 0; r < R; ++r) {
      sums[i][r] = _mm256_setzero_ps();
    }
  }
  // 16 columns per step (a 128-column block holds 8), then one step of 8, then the k % 8 tail in scalar.
  const std::size_t whole16 = k / 16 * 16;
  const std::size_t whole = k / 8 * 8;
  const __m256 two_to_8 = _mm256_set1_ps(256.0f);
  for (std::size_t first = 0; first < whole16; first += fp8_block_size) {
    const std::size_t end = std::min(first + fp8_block_size, whole16);
    // The 2^8 first (exact), so no scale near the float range overflows.
    const __m256 scale = _mm256_set1_ps(scales[first / fp8_block_size]);
    for (std::size_t l = first; l < end; l += 16) {
      __m256 low[M];
      __m256 high[M];
      for (int i = 0; i < M; ++i) {
        const float* const row = a + static_cast<std::size_t>(i) * k + l;
        low[i] = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(row), two_to_8), scale);
        high[i] = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(row + 8), two_to_8), scale);
      }
      for (int r = 0; r < R; ++r) {
        __m256 weights_low;
        __m256 weights_high;
        fp8_load16_avx2(b + static_cast<std::size_t>(r) * k + l, weights_low, weights_high);
        for (int i = 0; i < M; ++i) {
          sums[i][r] = _mm256_fmadd_ps(low[i], weights_low, sums[i][r]);
          sums[i][r] = _mm256_fmadd_ps(high[i], weights_high, sums[i][r]);
        }
      }
    }
  }
  if (whole16 < whole) {
    const __m256 scale = _mm256_set1_ps(scales[whole16 / fp8_block_size]);
    __m256 activations[M];
    for (int i = 0; i < M; ++i) {
      activations[i] = _mm256_mul_ps(
          _mm256_mul_ps(_mm256_loadu_ps(a + static_cast<std::size_t>(i) * k + whole16), two_to_8), scale);
    }
    for (int r = 0; r < R; ++r) {
      const __m256 weights = fp8_load8_avx2(b + static_cast<std::size_t>(r) * k + whole16);
      for (int i = 0; i < M; ++i) {
        sums[i][r] = _mm256_fmadd_ps(activations[i], weights, sums[i][r]);
      }
    }
  }
  const float* const table = fp8_e4m3_table();
  for (int i = 0; i < M; ++i) {
    for (int r = 0; r < R; ++r) {
      float sum = fp8_avx2_sum(sums[i][r]);
      for (std::size_t l = whole; l < k; ++l) {
        sum += a[static_cast<std::size_t>(i) * k + l] *
               (table[b[static_cast<std::size_t>(r) * k + l].bits] * scales[l / fp8_block_size]);
      }
      c[static_cast<std::size_t>(i) * ldc + static_cast<std::size_t>(r)] = sum;
    }
  }
}

/// One or two rows of A against R rows of B from `row`.
template <int R>
NGEMB_TARGET_AVX2 void fp8_b_group_avx2(std::size_t m, std::size_t n, std::size_t k, const float* a, const fp8_e4m3* b,
                                     const float* scale_inv, float* c, std::size_t row) {
  const fp8_e4m3* const weights = b + row * k;
  const float* const scales = scale_inv + row / fp8_block_size * fp8_scale_blocks(k);
  if (m == 2) {
    fp8_tile_avx2<2, R>(k, a, weights, scales, c + row, n);
  } else {
    fp8_tile_avx2<1, R>(k, a, weights, scales, c + row, n);
  }
}

/// Columns of B one chunk of the chunked path widens: R x 256 floats stay in L1 while every tile of A uses them.
inline constexpr std::size_t fp8_chunk_columns = 2 * fp8_block_size;

/// sums[i][r] += A's rows [0, M) (rows k apart, from the chunk's first column) . widened[r] over `width` columns:
/// the tile's accumulators live in registers for the chunk; the widened rows are zero-padded to a multiple of 8 and
/// A's last partial step is a masked load.
template <int M, int R>
NGEMB_TARGET_AVX2 void fp8_chunk_tile_avx2(const float* a, std::size_t k, const float (*widened)[fp8_chunk_columns],
                                           std::size_t width, __m256 (*sums)[R]) {
  __m256 sum[M][R];
  for (int i = 0; i < M; ++i) {
    for (int r = 0; r < R; ++r) {
      sum[i][r] = sums[i][r];
    }
  }
  const std::size_t whole = width / 8 * 8;
  for (std::size_t l = 0; l < whole; l += 8) {
    __m256 weights[R];
    for (int r = 0; r < R; ++r) {
      weights[r] = _mm256_load_ps(widened[r] + l);
    }
    for (int i = 0; i < M; ++i) {
      const __m256 activations = _mm256_loadu_ps(a + static_cast<std::size_t>(i) * k + l);
      for (int r = 0; r < R; ++r) {
        sum[i][r] = _mm256_fmadd_ps(activations, weights[r], sum[i][r]);
      }
    }
  }
  if (whole < width) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(width - whole)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int i = 0; i < M; ++i) {
      const __m256 activations = _mm256_maskload_ps(a + static_cast<std::size_t>(i) * k + whole, mask);
      for (int r = 0; r < R; ++r) {
        sum[i][r] = _mm256_fmadd_ps(activations, _mm256_load_ps(widened[r] + whole), sum[i][r]);
      }
    }
  }
  for (int i = 0; i < M; ++i) {
    for (int r = 0; r < R; ++r) {
      sums[i][r] = sum[i][r];
    }
  }
}

/// Every row of A (3..16) against R rows of B from `row`: per chunk of 256 columns the R rows are dequantised
/// once into L1 and every 3-row tile of A accumulates from them (the accumulators wait in `sums` between chunks).
template <int R>
NGEMB_TARGET_AVX2 void fp8_chunked_group_avx2(std::size_t m, std::size_t n, std::size_t k, const float* a,
                                              const fp8_e4m3* b, const float* scale_inv, float* c, std::size_t row,
                                              float* scratch) {
  // R rows of fp8_chunk_columns floats, at the first 32-byte boundary of the scratch (8 floats of slack).
  auto* const widened = reinterpret_cast<float (*)[fp8_chunk_columns]>(
      (reinterpret_cast<std::uintptr_t>(scratch) + 31) / 32 * 32);
  __m256 sums[fp8_gemm_direct_rows][R];
  for (std::size_t i = 0; i < m; ++i) {
    for (int r = 0; r < R; ++r) {
      sums[i][r] = _mm256_setzero_ps();
    }
  }
  const std::size_t column_blocks = fp8_scale_blocks(k);
  const float* const scales = scale_inv + row / fp8_block_size * column_blocks;
  for (std::size_t first = 0; first < k; first += fp8_chunk_columns) {
    const std::size_t width = std::min(fp8_chunk_columns, k - first);
    for (int r = 0; r < R; ++r) {
      const fp8_e4m3* const weights = b + (row + static_cast<std::size_t>(r)) * k + first;
      for (std::size_t column = 0; column < width; column += fp8_block_size) {
        fp8_widen_avx2(weights + column, std::min(fp8_block_size, width - column),
                       scales[(first + column) / fp8_block_size], widened[r] + column);
      }
      std::fill(widened[r] + width, widened[r] + (width + 7) / 8 * 8, 0.0f);
    }
    std::size_t i = 0;
    for (; i + 3 <= m; i += 3) {
      fp8_chunk_tile_avx2<3, R>(a + i * k + first, k, widened, width, sums + i);
    }
    if (m - i == 2) {
      fp8_chunk_tile_avx2<2, R>(a + i * k + first, k, widened, width, sums + i);
    } else if (m - i == 1) {
      fp8_chunk_tile_avx2<1, R>(a + i * k + first, k, widened, width, sums + i);
    }
  }
  for (std::size_t i = 0; i < m; ++i) {
    for (int r = 0; r < R; ++r) {
      c[i * n + row + static_cast<std::size_t>(r)] = fp8_avx2_sum(sums[i][r]);
    }
  }
}

/// B's rows [row_begin, row_end), row_begin a multiple of 8, so no group of rows straddles two rows of scale
/// blocks. Up to two rows of A, every weight is widened in the register that multiplies it (one row of A, a decode
/// step of one sequence, takes 8 rows of B at a time: 8 independent accumulators hide the fused multiply-add
/// latency); from three rows, where that would repeat the widening per tile of A, each chunk of a group of B's
/// rows is dequantised once into `widened` (fp8_direct_scratch floats).
NGEMB_TARGET_AVX2 inline void fp8_direct_rows_avx2(std::size_t m, std::size_t n, std::size_t k, const float* a,
                                                const fp8_e4m3* b, const float* scale_inv, float* c,
                                                std::size_t row_begin, std::size_t row_end, float* widened) {
  std::size_t row = row_begin;
  if (m > 2) {
    for (; row + fp8_gemm_row_group <= row_end; row += fp8_gemm_row_group) {
      fp8_chunked_group_avx2<static_cast<int>(fp8_gemm_row_group)>(m, n, k, a, b, scale_inv, c, row, widened);
    }
    // The last rows as one group (a loop here makes g++ warn about its pointer arithmetic at absurd iterations).
    switch (row_end - row) {
      case 3: fp8_chunked_group_avx2<3>(m, n, k, a, b, scale_inv, c, row, widened); break;
      case 2: fp8_chunked_group_avx2<2>(m, n, k, a, b, scale_inv, c, row, widened); break;
      case 1: fp8_chunked_group_avx2<1>(m, n, k, a, b, scale_inv, c, row, widened); break;
      default: break;
    }
    return;
  }
  if (m == 1) {
    for (; row + 8 <= row_end; row += 8) {
      fp8_b_group_avx2<8>(m, n, k, a, b, scale_inv, c, row);
    }
  }
  for (; row + fp8_gemm_row_group <= row_end; row += fp8_gemm_row_group) {
    fp8_b_group_avx2<fp8_gemm_row_group>(m, n, k, a, b, scale_inv, c, row);
  }
  switch (row_end - row) {
    case 3: fp8_b_group_avx2<3>(m, n, k, a, b, scale_inv, c, row); break;
    case 2: fp8_b_group_avx2<2>(m, n, k, a, b, scale_inv, c, row); break;
    case 1: fp8_b_group_avx2<1>(m, n, k, a, b, scale_inv, c, row); break;
    default: break;
  }
}
#endif

/// Floats of scratch one worker of the direct path needs (the AVX2 path's widened chunk of a group of rows), plus
/// what aligns it to 32 bytes.
inline std::size_t fp8_direct_scratch(std::size_t /*k*/) { return fp8_gemm_row_group * 2 * fp8_block_size + 8; }

/// C's columns for B's rows [row_begin, row_end), m <= fp8_gemm_direct_rows, on the fastest path the CPU runs;
/// `widened` holds fp8_direct_scratch(k) floats.
inline void fp8_direct_rows(std::size_t m, std::size_t n, std::size_t k, const float* a, const fp8_e4m3* b,
                            const float* scale_inv, float* c, std::size_t row_begin, std::size_t row_end,
                            float* widened) {
#ifdef NGEMB_HOST_X86_KERNELS
  if (fp8_use_avx2()) {
    fp8_direct_rows_avx2(m, n, k, a, b, scale_inv, c, row_begin, row_end, widened);
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
#ifdef NGEMB_HOST_X86_KERNELS
    if (fp8_use_avx2()) {
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
    // Each worker's rows start at a multiple of 8: the kernel's groups of rows then never straddle a scale block.
    const auto boundary = [&](std::size_t worker) { return worker == workers ? n : n * worker / workers / 8 * 8; };
    // Scratch comes from the policy's resource, taken here on the caller's thread (a user resource need not be
    // thread-safe).
    host_buffer<float> scratch(policy, workers * detail::fp8_direct_scratch(k), for_overwrite);
    for_each_n(host_policy{static_cast<unsigned>(workers), 1}, workers, [&](std::size_t worker) {
      detail::fp8_direct_rows(m, n, k, a.data(), b.data(), b_scale_inv.data(), c.data(), boundary(worker),
                              boundary(worker + 1), scratch.data() + worker * detail::fp8_direct_scratch(k));
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
