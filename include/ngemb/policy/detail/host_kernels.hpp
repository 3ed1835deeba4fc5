#pragma once
// The host kernel of the small-batch GEMM (C = A * B^T, fp32 A and C, B in fp32, bf16 or fp16): each group of rows
// of B is read once from memory and dotted with every row of A while it sits in L1, so a decode step streams its
// weights at the memory's speed instead of packing them as a blocked GEMM does. Where the CPU has AVX2, FMA and
// F16C (asked once at run time, so a generic build of a user's program gets them too), a register-blocked kernel
// widens 8 weights per instruction and keeps a 3 x 4 tile of dot products in registers; elsewhere a portable loop
// does the same work. NGEMB_HOST_ISA=generic in the environment (or detail::host_isa_limit()) picks the portable
// loop, so both paths are testable on one machine.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "ngemb/core/dtype.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define NGEMB_HOST_X86_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>
#define NGEMB_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

// Complete unrolling keeps the kernels' tiles of accumulators in registers. nvcc's front end does not know the
// pragma (diagnostic 1675) but passes it on to the host compiler.
#define NGEMB_UNROLL_TEXT(text) #text
#if defined(__CUDACC__)
#define NGEMB_UNROLL(count)                                                                                   \
  _Pragma("nv_diagnostic push") _Pragma("nv_diag_suppress 1675") _Pragma(NGEMB_UNROLL_TEXT(GCC unroll count)) \
      _Pragma("nv_diagnostic pop")
#else
#define NGEMB_UNROLL(count) _Pragma(NGEMB_UNROLL_TEXT(GCC unroll count))
#endif

namespace ngemb::detail {

/// The instruction sets the host kernels choose between.
enum class host_isa : unsigned char { generic, avx2_fma };

/// The best instruction set this CPU runs, lowered to `generic` by NGEMB_HOST_ISA=generic.
inline host_isa detect_host_isa() {
  if (const char* requested = std::getenv("NGEMB_HOST_ISA"); requested != nullptr && std::strcmp(requested, "generic") == 0) {
    return host_isa::generic;
  }
#ifdef NGEMB_HOST_X86_KERNELS
  // F16C from cpuid leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know it.
  unsigned eax = 0;
  unsigned ebx = 0;
  unsigned ecx = 0;
  unsigned edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
    return host_isa::avx2_fma;
  }
#endif
  return host_isa::generic;
}

/// The instruction set the kernels use: detected on first use; tests lower it to run the portable path.
inline std::atomic<host_isa>& host_isa_limit() {
  static std::atomic<host_isa> limit{detect_host_isa()};
  return limit;
}

/// Rows of A up to which the streaming kernel beats widening B into panels for a blocked GEMM (bench/gemm.cpp).
inline constexpr std::size_t small_gemm_max_rows = 16;

/// Rows of B one tile of the streaming kernel reads together, and rows of A it dots them with.
inline constexpr std::size_t small_gemm_tile_b = 4;
inline constexpr std::size_t small_gemm_tile_a = 3;

template <class W>
inline float widen_one(W value) {
  if constexpr (std::is_same_v<W, float>) {
    return value;
  } else {
    return static_cast<float>(value);
  }
}

/// The portable loop: rows [first, last) of B, each widened once into `scratch` (k floats) and dotted with every
/// row of A in independent partial sums the compiler vectorises.
template <class W>
void small_gemm_rows_generic(std::size_t m, std::size_t k, const float* a, const W* b, std::size_t ldb, float* c,
                             std::size_t ldc, std::size_t first, std::size_t last, float* scratch) {
  constexpr std::size_t lanes = 16;
  for (std::size_t row = first; row < last; ++row) {
    const W* weights = b + row * ldb;
    const float* widened = nullptr;
    if constexpr (std::is_same_v<W, float>) {
      widened = weights;
    } else {
      for (std::size_t l = 0; l < k; ++l) {
        scratch[l] = widen_one(weights[l]);
      }
      widened = scratch;
    }
    for (std::size_t i = 0; i < m; ++i) {
      const float* activations = a + i * k;
      float partial[lanes] = {};
      std::size_t l = 0;
      for (; l + lanes <= k; l += lanes) {
        for (std::size_t j = 0; j < lanes; ++j) {
          partial[j] += activations[l + j] * widened[l + j];
        }
      }
      float sum = 0.0f;
      for (const float value : partial) {
        sum += value;
      }
      for (; l < k; ++l) {
        sum += activations[l] * widened[l];
      }
      c[i * ldc + row] = sum;
    }
  }
}

#ifdef NGEMB_HOST_X86_KERNELS

/// Eight weights widened to fp32 (exact for bf16 and fp16).
template <class W>
NGEMB_TARGET_AVX2 inline __m256 load8(const W* weights) {
  if constexpr (std::is_same_v<W, float>) {
    return _mm256_loadu_ps(weights);
  } else if constexpr (std::is_same_v<W, bf16>) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(weights));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  } else {
    static_assert(std::is_same_v<W, fp16>);
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(weights)));
  }
}

NGEMB_TARGET_AVX2 inline float horizontal_sum(__m256 values) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(values), _mm256_extractf128_ps(values, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

/// c[i][r] = dot(A row i, B row r) for M rows of A and R rows of B: M x R accumulators of 8 lanes each stay in
/// registers across k; the k % 8 tail is added in scalar.
template <class W, int M, int R>
NGEMB_TARGET_AVX2 void small_gemm_tile_avx2(std::size_t k, const float* a, std::size_t lda, const W* b,
                                            std::size_t ldb, float* c, std::size_t ldc) {
  __m256 sums[M][R];
NGEMB_UNROLL(4)
  for (int i = 0; i < M; ++i) {
NGEMB_UNROLL(8)
    for (int r = 0; r < R; ++r) {
      sums[i][r] = _mm256_setzero_ps();
    }
  }
  std::size_t l = 0;
  for (; l + 8 <= k; l += 8) {
    __m256 activations[M];
NGEMB_UNROLL(4)
    for (int i = 0; i < M; ++i) {
      activations[i] = _mm256_loadu_ps(a + static_cast<std::size_t>(i) * lda + l);
    }
NGEMB_UNROLL(8)
    for (int r = 0; r < R; ++r) {
      const __m256 weights = load8(b + static_cast<std::size_t>(r) * ldb + l);
NGEMB_UNROLL(4)
      for (int i = 0; i < M; ++i) {
        sums[i][r] = _mm256_fmadd_ps(activations[i], weights, sums[i][r]);
      }
    }
  }
NGEMB_UNROLL(4)
  for (int i = 0; i < M; ++i) {
NGEMB_UNROLL(8)
    for (int r = 0; r < R; ++r) {
      float sum = horizontal_sum(sums[i][r]);
      for (std::size_t tail = l; tail < k; ++tail) {
        sum += a[static_cast<std::size_t>(i) * lda + tail] * widen_one(b[static_cast<std::size_t>(r) * ldb + tail]);
      }
      c[static_cast<std::size_t>(i) * ldc + static_cast<std::size_t>(r)] = sum;
    }
  }
}

/// Every row of A against R rows of B (which stay in L1 across the row groups of A).
template <class W, int R>
NGEMB_TARGET_AVX2 void small_gemm_b_group_avx2(std::size_t m, std::size_t k, const float* a, const W* b,
                                               std::size_t ldb, float* c, std::size_t ldc) {
  std::size_t i = 0;
  for (; i + small_gemm_tile_a <= m; i += small_gemm_tile_a) {
    small_gemm_tile_avx2<W, small_gemm_tile_a, R>(k, a + i * k, k, b, ldb, c + i * ldc, ldc);
  }
  if (m - i == 2) {
    small_gemm_tile_avx2<W, 2, R>(k, a + i * k, k, b, ldb, c + i * ldc, ldc);
  } else if (m - i == 1) {
    small_gemm_tile_avx2<W, 1, R>(k, a + i * k, k, b, ldb, c + i * ldc, ldc);
  }
}

/// Rows [first, last) of B against every row of A. One row of A (a decode step of one sequence) takes 8 rows of B
/// at a time: 8 independent accumulators hide the FMA latency.
template <class W>
NGEMB_TARGET_AVX2 void small_gemm_rows_avx2(std::size_t m, std::size_t k, const float* a, const W* b,
                                            std::size_t ldb, float* c, std::size_t ldc, std::size_t first,
                                            std::size_t last) {
  std::size_t row = first;
  if (m == 1) {
    for (; row + 8 <= last; row += 8) {
      small_gemm_tile_avx2<W, 1, 8>(k, a, k, b + row * ldb, ldb, c + row, ldc);
    }
  }
  for (; row + small_gemm_tile_b <= last; row += small_gemm_tile_b) {
    small_gemm_b_group_avx2<W, small_gemm_tile_b>(m, k, a, b + row * ldb, ldb, c + row, ldc);
  }
  for (; row < last; ++row) {
    small_gemm_b_group_avx2<W, 1>(m, k, a, b + row * ldb, ldb, c + row, ldc);
  }
}

/// The blocked kernel for many rows of A (a prefill), in the BLIS scheme: for each block of kc columns of k, a panel
/// of B's rows is widened into fp32 micro-panels of 16 rows ([kc][16], in L3/L2), a block of A's rows into
/// micro-panels of 6 rows ([kc][6], in L2), and a 6 x 16 tile of C is accumulated in 12 registers from one
/// micro-panel of each (the B micro-panel stays in L1 across A's).
inline constexpr std::size_t packed_gemm_mr = 6;
inline constexpr std::size_t packed_gemm_nr = 16;
inline constexpr std::size_t packed_gemm_kc = 256;
inline constexpr std::size_t packed_gemm_mc = 72;   ///< 72 x 256 x 4 B = 72 KiB of packed A per block
inline constexpr std::size_t packed_gemm_nc = 768;  ///< 768 x 256 x 4 B = 768 KiB of packed B per panel

/// Floats of packing scratch one worker needs.
inline constexpr std::size_t packed_gemm_scratch = packed_gemm_kc * (packed_gemm_mc + packed_gemm_nc);

/// tile[6 x 16] (+)= packed A [kc][6] * packed B [kc][16]; `accumulate` adds to C instead of overwriting it. Rows
/// and columns past `rows` x `columns` are computed on the zero padding and not written.
NGEMB_TARGET_AVX2 inline void packed_gemm_micro_avx2(std::size_t kc, const float* a, const float* b, float* c,
                                                     std::size_t ldc, std::size_t rows, std::size_t columns,
                                                     bool accumulate) {
  __m256 sums[packed_gemm_mr][2];
NGEMB_UNROLL(6)
  for (std::size_t i = 0; i < packed_gemm_mr; ++i) {
    sums[i][0] = _mm256_setzero_ps();
    sums[i][1] = _mm256_setzero_ps();
  }
  for (std::size_t l = 0; l < kc; ++l) {
    const __m256 low = _mm256_loadu_ps(b + l * packed_gemm_nr);
    const __m256 high = _mm256_loadu_ps(b + l * packed_gemm_nr + 8);
NGEMB_UNROLL(6)
    for (std::size_t i = 0; i < packed_gemm_mr; ++i) {
      const __m256 value = _mm256_broadcast_ss(a + l * packed_gemm_mr + i);
      sums[i][0] = _mm256_fmadd_ps(value, low, sums[i][0]);
      sums[i][1] = _mm256_fmadd_ps(value, high, sums[i][1]);
    }
  }
  if (rows == packed_gemm_mr && columns == packed_gemm_nr) {
NGEMB_UNROLL(6)
    for (std::size_t i = 0; i < packed_gemm_mr; ++i) {
      float* out = c + i * ldc;
      if (accumulate) {
        sums[i][0] = _mm256_add_ps(sums[i][0], _mm256_loadu_ps(out));
        sums[i][1] = _mm256_add_ps(sums[i][1], _mm256_loadu_ps(out + 8));
      }
      _mm256_storeu_ps(out, sums[i][0]);
      _mm256_storeu_ps(out + 8, sums[i][1]);
    }
    return;
  }
  float tile[packed_gemm_mr][packed_gemm_nr];
NGEMB_UNROLL(6)
  for (std::size_t i = 0; i < packed_gemm_mr; ++i) {
    _mm256_storeu_ps(tile[i], sums[i][0]);
    _mm256_storeu_ps(tile[i] + 8, sums[i][1]);
  }
  for (std::size_t i = 0; i < rows; ++i) {
    for (std::size_t j = 0; j < columns; ++j) {
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i][j] : tile[i][j];
    }
  }
}

/// Packs rows [0, rows) x columns [0, kc) of B (rows `ldb` apart) as fp32 micro-panels [kc][16], zero-padded.
template <class W>
NGEMB_TARGET_AVX2 void pack_b_avx2(std::size_t rows, std::size_t kc, const W* b, std::size_t ldb, float* packed) {
  for (std::size_t first = 0; first < rows; first += packed_gemm_nr) {
    float* panel = packed + first * kc;
    const std::size_t count = std::min(packed_gemm_nr, rows - first);
    std::size_t l = 0;
    if (count == packed_gemm_nr) {  // 8 x 8 transposes of widened weights
      for (; l + 8 <= kc; l += 8) {
        for (std::size_t half = 0; half < 2; ++half) {
          __m256 r[8];
NGEMB_UNROLL(8)
          for (std::size_t j = 0; j < 8; ++j) {
            r[j] = load8(b + (first + half * 8 + j) * ldb + l);
          }
          const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]);
          const __m256 t1 = _mm256_unpackhi_ps(r[0], r[1]);
          const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]);
          const __m256 t3 = _mm256_unpackhi_ps(r[2], r[3]);
          const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]);
          const __m256 t5 = _mm256_unpackhi_ps(r[4], r[5]);
          const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]);
          const __m256 t7 = _mm256_unpackhi_ps(r[6], r[7]);
          const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44);
          const __m256 u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
          const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44);
          const __m256 u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
          const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44);
          const __m256 u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
          const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44);
          const __m256 u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
          const __m256 columns[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                                     _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                                     _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                                     _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
NGEMB_UNROLL(8)
          for (std::size_t j = 0; j < 8; ++j) {
            _mm256_storeu_ps(panel + (l + j) * packed_gemm_nr + half * 8, columns[j]);
          }
        }
      }
    }
    for (; l < kc; ++l) {
      for (std::size_t j = 0; j < packed_gemm_nr; ++j) {
        panel[l * packed_gemm_nr + j] = j < count ? widen_one(b[(first + j) * ldb + l]) : 0.0f;
      }
    }
  }
}

/// Packs rows [0, rows) x columns [0, kc) of A (rows `lda` apart) as micro-panels [kc][6], zero-padded.
inline void pack_a(std::size_t rows, std::size_t kc, const float* a, std::size_t lda, float* packed) {
  for (std::size_t first = 0; first < rows; first += packed_gemm_mr) {
    float* panel = packed + first * kc;
    const std::size_t count = std::min(packed_gemm_mr, rows - first);
    for (std::size_t l = 0; l < kc; ++l) {
      for (std::size_t i = 0; i < packed_gemm_mr; ++i) {
        panel[l * packed_gemm_mr + i] = i < count ? a[(first + i) * lda + l] : 0.0f;
      }
    }
  }
}

/// C[:, first:last) of C = A * B^T (A [m x k] dense, B's rows `ldb` apart, C's rows `ldc` apart) through the
/// packed kernel; `scratch` holds packed_gemm_scratch floats.
template <class W>
NGEMB_TARGET_AVX2 void packed_gemm_columns_avx2(std::size_t m, std::size_t k, const float* a, const W* b,
                                                std::size_t ldb, float* c, std::size_t ldc, std::size_t first,
                                                std::size_t last, float* scratch) {
  float* const packed_b = scratch;
  float* const packed_a = scratch + packed_gemm_kc * packed_gemm_nc;
  for (std::size_t jc = first; jc < last; jc += packed_gemm_nc) {
    const std::size_t nc = std::min(packed_gemm_nc, last - jc);
    for (std::size_t pc = 0; pc < k; pc += packed_gemm_kc) {
      const std::size_t kc = std::min(packed_gemm_kc, k - pc);
      pack_b_avx2(nc, kc, b + jc * ldb + pc, ldb, packed_b);
      for (std::size_t ic = 0; ic < m; ic += packed_gemm_mc) {
        const std::size_t mc = std::min(packed_gemm_mc, m - ic);
        pack_a(mc, kc, a + ic * k + pc, k, packed_a);
        for (std::size_t jr = 0; jr < nc; jr += packed_gemm_nr) {
          for (std::size_t ir = 0; ir < mc; ir += packed_gemm_mr) {
            packed_gemm_micro_avx2(kc, packed_a + ir * kc, packed_b + jr * kc, c + (ic + ir) * ldc + jc + jr, ldc,
                                   std::min(packed_gemm_mr, mc - ir), std::min(packed_gemm_nr, nc - jr), pc != 0);
          }
        }
      }
    }
  }
}

#endif  // NGEMB_HOST_X86_KERNELS

/// C[:, first:last) of C = A * B^T for A [m x k] (dense), B's rows `ldb` apart and C's rows `ldc` apart. `scratch`
/// holds k floats (the portable path's widened row; unused for fp32 B and by the AVX2 kernel).
template <class W>
void small_gemm_rows(std::size_t m, std::size_t k, const float* a, const W* b, std::size_t ldb, float* c,
                     std::size_t ldc, std::size_t first, std::size_t last, float* scratch) {
#ifdef NGEMB_HOST_X86_KERNELS
  if (host_isa_limit().load(std::memory_order_relaxed) == host_isa::avx2_fma) {
    small_gemm_rows_avx2(m, k, a, b, ldb, c, ldc, first, last);
    return;
  }
#endif
  small_gemm_rows_generic(m, k, a, b, ldb, c, ldc, first, last, scratch);
}

}  // namespace ngemb::detail
