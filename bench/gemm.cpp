// Host GEMM throughput at LongCat-Flash-Lite's weight shapes: C[m x n] = A[m x k] * B[n x k]^T with fp32 activations
// A, weights B [out x in] and fp32 C, the product every Linear layer runs. Shapes (n x k): W_cat 3072 x 3072, an
// expert's gate (or up) 1024 x 3072 and down 3072 x 1024 (expert_ffn_hidden_size 1024), at m = 1, 4, 16, 64, 256,
// 4096 rows; the lm_head 131072 x 3072 at m = 1 only (3.2 GB for its weights in the three types; skipped when the
// machine has not that much free memory). Every path runs on the threads of ngemb::host_policy{0} (all hardware
// threads).
// Per shape and m the benchmarks {variant}/{shape}/m:{m}, variants:
//   ngemb_f32, ngemb_bf16, ngemb_fp16  the library's ngemb::gemm_nt(host_policy{0}, ...) with those weights,
//   eigen_f32       the baseline: Eigen's fp32 GEMM on the widened weights, the output split over the threads as
//                   the library's fp32 path did before its own kernels (eigen_gemm_nt below),
//   openblas_f32    cblas_sgemm (cblas_sgemv at m = 1) on OpenBLAS's own threads     } with -DNGEMB_BENCH_OPENBLAS=ON
//   openblas_bf16   bf16 weights widened one 1 MiB panel at a time per thread, each    } (Debian's OpenBLAS 0.3.21
//                   panel multiplied by a single-threaded cblas_sgemm/sgemv             } has no cblas_sbgemm)
//   onednn_f32, onednn_f32_bf16, onednn_bf16   a oneDNN matmul with f32 x f32, f32 x bf16 and bf16 x bf16 (the
//                   activations reordered to bf16 inside the timed call) inputs, fp32 output; the label names the
//                   implementation oneDNN picked (ONEDNN_VERBOSE=1 prints its ISA); a combination oneDNN does not
//                   implement on this CPU is skipped with its message.          -DNGEMB_BENCH_ONEDNN=ON
// The weights are integers in [-127, 127] / 1024, exact in fp32, bf16 and fp16, so every variant computes the same
// product and `rel_err` (max |C - C_eigen| / max |C_eigen|) shows summation order only; a layout mistake shows as ~1.
// Successive calls read successive copies of the weights, at least 128 MiB of bf16 in all (cycled_bytes), so the
// weights come from memory on every call, as in a model's forward, not from a cache a repeated call keeps warm.
// Counters, all against limits measured in the same run:
//   GFLOP_per_s  2 m n k / time;          GB_per_s  weight bytes read / time (B's storage type),
//   vs_peak      GFLOP/s over the fp32 FMA peak of all threads (BM_fma_peak: independent register-resident FMA
//                chains, AVX2+FMA or AVX-512F, the widest the CPU has), and for bf16 variants vs_bf16_peak, over the
//                AVX512_BF16 dot-product (vdpbf16ps) peak where the CPU has it (never run on the AMD EPYC this was
//                written on, which lacks it),
//   vs_floor     time / (weight bytes / read bandwidth), the bandwidth of summing a 1 GiB array over the same
//                threads (BM_read_floor_1GiB): 1 means reading the weights once at that bandwidth.
//                Both limits come from their fastest repetition at setup (best_seconds),
//   vs_eigen     the Eigen baseline's median time (taken at setup) / this time: above 1 is faster than Eigen.
//   GFLOP_per_cpu_s, vs_peak_cpu  the same rate per CPU second of all the process's threads, and its ratio to the
//                peak's: they hold when other jobs take the cores, where wall-clock rates do not (threads that
//                spin-wait, as OpenBLAS's and OpenMP's do, count against them).
// Iterations: Google Benchmark's minimum time (0.2 s), except products over 5 GFLOP (m = 4096; ~0.3-1 s each on
// 2 cores), which run one timed call after one warm-up call. The program takes 1.5-3 minutes on 2 cores (the
// longer on a machine other jobs load) and up to 4.5 GB of memory (the lm_head's weights and the 1 GiB floor array;
// one shape's weights are kept at a time, so --benchmark_enable_random_interleaving would rebuild them often).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <unistd.h>

#include <Eigen/Core>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifdef NGEMB_BENCH_OPENBLAS
#include <cblas.h>

#include <thread>
#endif
#ifdef NGEMB_BENCH_ONEDNN
#include <dnnl.hpp>

#include <unordered_map>
#endif

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"

#include "host_timing.hpp"
#include "median.hpp"

namespace {

using ngemb_bench::best_seconds;
using ngemb_bench::call_cost;
using ngemb_bench::clock_type;
using ngemb_bench::cpu_seconds;
using ngemb_bench::read_floor;
using ngemb_bench::seconds_since;
using ngemb_bench::time_calls;

const ngemb::host_policy all_threads{0};

/// Runs part(i) for i in [0, threads) on all_threads' pool, one part per thread.
template <class Part>
void on_every_thread(const Part& part) {
  const std::size_t threads = all_threads.resolved_threads();
  ngemb::for_each_n(ngemb::host_policy{static_cast<unsigned>(threads), 1}, threads, part);
}

// ---- The machine's limits --------------------------------------------------------------------------------------

#if defined(__x86_64__) || defined(__i386__)
/// Independent accumulators per thread: FMA latency (4-5 cycles) x 2 FMA ports needs 8-10 in flight.
constexpr std::size_t chains = 12;
constexpr std::size_t peak_rounds = std::size_t{1} << 20;

/// The sum of a vector's lanes, every lane kept (returning one lane would let the compiler drop the others' work).
template <class Vector>
float lane_sum(const Vector& vector) {
  float lanes[sizeof(Vector) / sizeof(float)];
  std::memcpy(lanes, &vector, sizeof(lanes));
  float total = 0;
  for (const float lane : lanes) {
    total += lane;
  }
  return total;
}

/// FLOPs of `peak_rounds` rounds of `chains` FMAs on 8 lanes; returns the sum so the work stays.
__attribute__((target("avx2,fma"))) float fma_chains_avx2() {
  __m256 sum[chains];
  for (std::size_t j = 0; j < chains; ++j) {
    sum[j] = _mm256_set1_ps(static_cast<float>(j));
  }
  const __m256 scale = _mm256_set1_ps(0.999999f);
  const __m256 shift = _mm256_set1_ps(1e-6f);
  for (std::size_t round = 0; round < peak_rounds; ++round) {
    for (std::size_t j = 0; j < chains; ++j) {
      sum[j] = _mm256_fmadd_ps(sum[j], scale, shift);
    }
  }
  __m256 total = sum[0];
  for (std::size_t j = 1; j < chains; ++j) {
    total = _mm256_add_ps(total, sum[j]);
  }
  return lane_sum(total);
}

/// As fma_chains_avx2 on 16 lanes.
__attribute__((target("avx512f"))) float fma_chains_avx512() {
  __m512 sum[chains];
  for (std::size_t j = 0; j < chains; ++j) {
    sum[j] = _mm512_set1_ps(static_cast<float>(j));
  }
  const __m512 scale = _mm512_set1_ps(0.999999f);
  const __m512 shift = _mm512_set1_ps(1e-6f);
  for (std::size_t round = 0; round < peak_rounds; ++round) {
    for (std::size_t j = 0; j < chains; ++j) {
      sum[j] = _mm512_fmadd_ps(sum[j], scale, shift);
    }
  }
  __m512 total = sum[0];
  for (std::size_t j = 1; j < chains; ++j) {
    total = _mm512_add_ps(total, sum[j]);
  }
  return lane_sum(total);
}

/// vdpbf16ps chains: each instruction does 16 lanes x 2 bf16 products and their sums (64 FLOPs). Only called where
/// __builtin_cpu_supports("avx512bf16") (not on the AMD EPYC this was written on, so never run there).
__attribute__((target("avx512f,avx512bf16"))) float bf16_dot_chains() {
  __m512 sum[chains];
  for (std::size_t j = 0; j < chains; ++j) {
    sum[j] = _mm512_set1_ps(static_cast<float>(j));
  }
  const __m512bh left = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
  const __m512bh right = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(-1e-3f));
  for (std::size_t round = 0; round < peak_rounds; ++round) {
    for (std::size_t j = 0; j < chains; ++j) {
      sum[j] = _mm512_dpbf16_ps(sum[j], left, right);
    }
  }
  __m512 total = sum[0];
  for (std::size_t j = 1; j < chains; ++j) {
    total = _mm512_add_ps(total, sum[j]);
  }
  return lane_sum(total);
}

/// FLOP/s of `kernel` (doing `flops_per_call` per call) on every thread at once, and FLOPs per CPU second.
std::pair<double, double> chains_rate(float (*kernel)(), double flops_per_call) {
  std::vector<float> results(all_threads.resolved_threads());
  auto run = [&] {
    on_every_thread([&](std::size_t part) { results[part] = kernel(); });
    benchmark::DoNotOptimize(results.data());
  };
  const call_cost cost = best_seconds(run);
  const double flops = flops_per_call * static_cast<double>(results.size());
  return {flops / cost.wall, flops / cost.cpu};
}
#endif

/// The compute limits: the fp32 FMA peak (the widest FMA the CPU has) and, where the CPU has AVX512_BF16, the bf16
/// dot-product peak, in FLOP/s over all threads, and the fp32 peak per CPU second (one core's); 0 where not
/// measured (no x86 FMA).
struct compute_peaks {
  double fp32 = 0;
  double fp32_per_cpu_second = 0;
  double bf16 = 0;
  const char* fp32_isa = "none";

  compute_peaks() {
#if defined(__x86_64__) || defined(__i386__)
    constexpr double rounds = static_cast<double>(peak_rounds * chains);
    if (__builtin_cpu_supports("avx512f")) {
      std::tie(fp32, fp32_per_cpu_second) = chains_rate(fma_chains_avx512, rounds * 16 * 2);
      fp32_isa = "avx512f";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      std::tie(fp32, fp32_per_cpu_second) = chains_rate(fma_chains_avx2, rounds * 8 * 2);
      fp32_isa = "avx2+fma";
    }
    if (__builtin_cpu_supports("avx512bf16")) {
      bf16 = chains_rate(bf16_dot_chains, rounds * 16 * 2 * 2).first;
    }
#endif
  }
};

compute_peaks& peaks() {
  static compute_peaks measured;
  return measured;
}

read_floor& read_baseline() {
  static read_floor floor(all_threads);
  return floor;
}

// ---- Shapes and their data ---------------------------------------------------------------------------------------

struct shape_spec {
  const char* name;
  std::size_t n;      // output features (rows of B)
  std::size_t k;      // input features
  std::size_t max_m;  // largest batch measured
};

constexpr std::array shapes{shape_spec{"W_cat", 3072, 3072, 4096}, shape_spec{"expert_gate", 1024, 3072, 4096},
                            shape_spec{"expert_down", 3072, 1024, 4096}, shape_spec{"lm_head", 131072, 3072, 1}};
constexpr std::array<std::size_t, 6> batches{1, 4, 16, 64, 256, 4096};

/// Products above this many FLOPs run one warm-up and one timed call.
constexpr double big_product_flops = 5e9;

enum class variant {
  ngemb_f32,
  ngemb_bf16,
  ngemb_fp16,
  eigen_f32,
#ifdef NGEMB_BENCH_OPENBLAS
  openblas_f32,
  openblas_bf16,
#endif
#ifdef NGEMB_BENCH_ONEDNN
  onednn_f32,
  onednn_f32_bf16,
  onednn_bf16,
#endif
};

constexpr std::array variants{
    std::pair{variant::ngemb_f32, "ngemb_f32"},         std::pair{variant::ngemb_bf16, "ngemb_bf16"},
    std::pair{variant::ngemb_fp16, "ngemb_fp16"},       std::pair{variant::eigen_f32, "eigen_f32"},
#ifdef NGEMB_BENCH_OPENBLAS
    std::pair{variant::openblas_f32, "openblas_f32"},   std::pair{variant::openblas_bf16, "openblas_bf16"},
#endif
#ifdef NGEMB_BENCH_ONEDNN
    std::pair{variant::onednn_f32, "onednn_f32"},       std::pair{variant::onednn_f32_bf16, "onednn_f32_bf16"},
    std::pair{variant::onednn_bf16, "onednn_bf16"},
#endif
};

/// Bytes of one weight of the variant's B.
constexpr double weight_bytes(variant kind) {
  switch (kind) {
    case variant::ngemb_f32:
    case variant::eigen_f32:
#ifdef NGEMB_BENCH_OPENBLAS
    case variant::openblas_f32:
#endif
#ifdef NGEMB_BENCH_ONEDNN
    case variant::onednn_f32:
#endif
      return 4;
    default:
      return 2;
  }
}

constexpr bool bf16_weights(variant kind) { return weight_bytes(kind) == 2 && kind != variant::ngemb_fp16; }

/// Bytes of bf16 weights the products cycle through at least: more than the last-level cache (32 MiB on the machine
/// this was written on), so every call reads its weights from memory as a model's forward does, where the other
/// layers' weights evict them, rather than from a cache that a repeated call of one small matrix keeps warm.
constexpr std::size_t cycled_bytes = std::size_t{128} << 20;

/// One shape's weights, the same values in the three types, in `copies` identical copies that successive calls
/// take in turn (cycled_bytes).
struct weights {
  std::size_t size;
  std::size_t copies;
  std::vector<float> f32;
  std::vector<ngemb::bf16> b16;
  std::vector<ngemb::fp16> h16;

  explicit weights(const shape_spec& shape)
      : size(shape.n * shape.k), copies(copies_of(shape)), f32(copies * size), b16(f32.size()), h16(f32.size()) {
    // One generator per row, filled on all threads: the lm_head has 400M weights.
    ngemb::for_each_n(ngemb::host_policy{0, 64}, shape.n, [&](std::size_t row) {
      std::minstd_rand generator(static_cast<unsigned>(row) + 1);
      std::uniform_int_distribution<int> integer(-127, 127);
      for (std::size_t l = row * shape.k; l < (row + 1) * shape.k; ++l) {
        f32[l] = static_cast<float>(integer(generator)) / 1024.0f;
        b16[l] = ngemb::from_float<ngemb::bf16>(f32[l]);
        h16[l] = ngemb::from_float<ngemb::fp16>(f32[l]);
      }
    });
    for (std::size_t copy = 1; copy < copies; ++copy) {
      std::copy_n(f32.begin(), size, f32.begin() + static_cast<std::ptrdiff_t>(copy * size));
      std::copy_n(b16.begin(), size, b16.begin() + static_cast<std::ptrdiff_t>(copy * size));
      std::copy_n(h16.begin(), size, h16.begin() + static_cast<std::ptrdiff_t>(copy * size));
    }
  }

  static std::size_t copies_of(const shape_spec& shape) {
    const std::size_t bytes = 2 * shape.n * shape.k;
    return (cycled_bytes + bytes - 1) / bytes;
  }

  /// Bytes all the copies of the three types take.
  static double footprint(const shape_spec& shape) {
    return 8.0 * static_cast<double>(copies_of(shape) * shape.n * shape.k);
  }
};

using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The baseline: Eigen's fp32 GEMM, the output split over the threads the work pays for (at least 4M multiply-adds
/// each), rows of A when m >= n, else rows of B, as ngemb's host GEMM did before its own kernels.
void eigen_gemm_nt(std::size_t m, std::size_t n, std::size_t k, const float* a, const float* b, float* c) {
  const Eigen::Map<const row_major> lhs(a, static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(k));
  const Eigen::Map<const row_major> rhs(b, static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(k));
  Eigen::Map<row_major> result(c, static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(n));
  const std::size_t most = std::min<std::size_t>(all_threads.resolved_threads(), std::max(m, n));
  const std::size_t workers = std::clamp<std::size_t>(m * n * k >> 22, 1, most);
  const bool split_rows = m >= n;
  const std::size_t extent = split_rows ? m : n;
  ngemb::for_each_n(ngemb::host_policy{static_cast<unsigned>(workers), 1}, workers, [&](std::size_t worker) {
    const auto begin = static_cast<Eigen::Index>(extent * worker / workers);
    const auto count = static_cast<Eigen::Index>(extent * (worker + 1) / workers) - begin;
    if (split_rows) {
      result.middleRows(begin, count).noalias() = lhs.middleRows(begin, count) * rhs.transpose();
    } else {
      result.middleCols(begin, count).noalias() = lhs * rhs.middleRows(begin, count).transpose();
    }
  });
}

/// Whether the machine has `bytes` of free memory and 1 GiB to spare.
bool memory_allows(double bytes) {
  const double free_bytes = static_cast<double>(sysconf(_SC_AVPHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  return free_bytes > bytes + static_cast<double>(std::size_t{1} << 30);
}

/// One shape at one m: activations, the Eigen baseline's output and its median time.
struct product {
  std::size_t m;
  const shape_spec& shape;
  const weights& w;
  std::vector<float> a;
  std::vector<float> c;
  std::vector<float> reference;
  double eigen_seconds = 0;
  std::size_t calls = 0;

  product(std::size_t rows, std::size_t shape_index, const weights& shape_weights)
      : m(rows), shape(shapes[shape_index]), w(shape_weights), a(m * shape.k), c(m * shape.n), reference(c.size()) {
    std::minstd_rand generator(static_cast<unsigned>(m * 131 + shape_index));
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::generate(a.begin(), a.end(), [&] { return uniform(generator); });
    auto run = [this] { eigen_gemm_nt(m, shape.n, shape.k, a.data(), w.f32.data() + next_copy(), reference.data()); };
    if (flops() > big_product_flops) {  // one warm-up and one timed call, as the variants
      run();
      eigen_seconds = time_calls(run, 1);
    } else {
      eigen_seconds = ngemb_bench::median_seconds([&run](long calls) { return time_calls(run, calls); });
    }
  }

  /// The offset of the weight copy the next call reads.
  std::size_t next_copy() { return calls++ % w.copies * w.size; }

  [[nodiscard]] double flops() const { return 2.0 * static_cast<double>(m * shape.n * shape.k); }

  /// max |c - reference| / max |reference|.
  [[nodiscard]] double relative_error() const {
    double largest = 0;
    double difference = 0;
    for (std::size_t i = 0; i < c.size(); ++i) {
      largest = std::max(largest, static_cast<double>(std::abs(reference[i])));
      difference = std::max(difference, static_cast<double>(std::abs(c[i] - reference[i])));
    }
    return difference / largest;
  }
};

/// The shape being measured: its weights and products. One shape at a time (benchmarks run shape by shape), so the
/// memory holds one shape's copies, not all four.
struct shape_state {
  std::size_t index;
  weights w;
  std::array<std::unique_ptr<product>, batches.size()> products;

  explicit shape_state(std::size_t shape_index) : index(shape_index), w(shapes[shape_index]) {}
};

std::unique_ptr<shape_state>& current_shape() {
  static std::unique_ptr<shape_state> current;
  return current;
}

/// The product of `shape_index` at `m`, building the shape (and dropping the previous one) first when needed;
/// nullptr when the machine has not the memory for the shape's weights.
product* product_at(std::size_t m, std::size_t shape_index) {
  auto& current = current_shape();
  if (!current || current->index != shape_index) {
    peaks();
    read_baseline();  // the limits first, on a quiet process
    current.reset();
    if (!memory_allows(weights::footprint(shapes[shape_index]))) {
      return nullptr;
    }
    current = std::make_unique<shape_state>(shape_index);
  }
  const auto batch = static_cast<std::size_t>(std::find(batches.begin(), batches.end(), m) - batches.begin());
  auto& slot = current->products[batch];
  if (!slot) {
    slot = std::make_unique<product>(m, shape_index, current->w);
  }
  return slot.get();
}

// ---- Backends ------------------------------------------------------------------------------------------------------

#ifdef NGEMB_BENCH_OPENBLAS
/// C = A * B^T through OpenBLAS on its own threads; m = 1 as the matrix-vector product it is.
void openblas_gemm_nt(std::size_t m, std::size_t n, std::size_t k, const float* a, const float* b, std::size_t ldc,
                      float* c) {
  const auto rows = static_cast<blasint>(m);
  const auto columns = static_cast<blasint>(n);
  const auto depth = static_cast<blasint>(k);
  if (m == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, columns, depth, 1.0f, b, depth, a, 1, 0.0f, c, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, columns, depth, 1.0f, a, depth, b, depth, 0.0f, c,
                static_cast<blasint>(ldc));
  }
}

/// OpenBLAS on bf16 weights: each thread widens 1 MiB panels of its rows of B and multiplies them single-threaded.
class openblas_bf16_gemm {
 public:
  explicit openblas_bf16_gemm(const shape_spec& shape)
      : panel_rows_(std::min(shape.n, std::max<std::size_t>(1, (std::size_t{1} << 18) / shape.k))),
        panels_(all_threads.resolved_threads() * panel_rows_ * shape.k) {}

  void operator()(std::size_t m, std::size_t n, std::size_t k, const float* a, const ngemb::bf16* b, float* c) {
    const std::size_t blocks = (n + panel_rows_ - 1) / panel_rows_;
    const std::size_t threads = std::min<std::size_t>(all_threads.resolved_threads(), blocks);
    ngemb::for_each_n(ngemb::host_policy{static_cast<unsigned>(threads), 1}, threads, [&](std::size_t worker) {
      float* const panel = panels_.data() + worker * panel_rows_ * k;
      for (std::size_t block = blocks * worker / threads; block < blocks * (worker + 1) / threads; ++block) {
        const std::size_t first = block * panel_rows_;
        const std::size_t rows = std::min(panel_rows_, n - first);
        for (std::size_t l = 0; l < rows * k; ++l) {
          panel[l] = ngemb::to_float(b[first * k + l]);
        }
        openblas_gemm_nt(m, rows, k, a, panel, n, c + first);
      }
    });
  }

 private:
  std::size_t panel_rows_;
  std::vector<float> panels_;
};
#endif

#ifdef NGEMB_BENCH_ONEDNN
dnnl::engine& onednn_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

/// A oneDNN matmul C = A * B^T over the caller's arrays (B [n x k] row-major is oneDNN's k x n weights in `ba`, given
/// per call), with the activations first reordered to bf16 when `activations` is bf16.
class onednn_gemm_nt {
 public:
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;

  onednn_gemm_nt(std::size_t m, std::size_t n, std::size_t k, dt activations, dt weight_type, const float* a,
                 float* c)
      : stream_(onednn_engine()) {
    const auto rows = static_cast<dnnl::memory::dim>(m);
    const auto columns = static_cast<dnnl::memory::dim>(n);
    const auto depth = static_cast<dnnl::memory::dim>(k);
    const dnnl::memory::desc source({rows, depth}, activations, tag::ab);
    const dnnl::memory::desc weight({depth, columns}, weight_type, tag::ba);
    const dnnl::memory::desc destination({rows, columns}, dt::f32, tag::ab);
    auto& engine = onednn_engine();
#if DNNL_VERSION_MAJOR >= 3
    const dnnl::matmul::primitive_desc description(engine, source, weight, destination);
#else
    const dnnl::matmul::primitive_desc description(dnnl::matmul::desc(source, weight, destination), engine);
#endif
    implementation_ = description.impl_info_str();
    matmul_ = dnnl::matmul(description);
    const dnnl::memory user_source({{rows, depth}, dt::f32, tag::ab}, engine, const_cast<float*>(a));
    arguments_ = {{DNNL_ARG_SRC, user_source},
                  {DNNL_ARG_WEIGHTS, dnnl::memory(weight, engine, DNNL_MEMORY_NONE)},
                  {DNNL_ARG_DST, dnnl::memory(destination, engine, c)}};
    if (activations != dt::f32) {
      arguments_[DNNL_ARG_SRC] = dnnl::memory(source, engine);
      to_source_ = dnnl::reorder(user_source, arguments_[DNNL_ARG_SRC]);
      reorder_arguments_ = {{DNNL_ARG_FROM, user_source}, {DNNL_ARG_TO, arguments_[DNNL_ARG_SRC]}};
    }
  }

  void operator()(const void* b) {
    arguments_[DNNL_ARG_WEIGHTS].set_data_handle(const_cast<void*>(b));
    if (!reorder_arguments_.empty()) {
      to_source_.execute(stream_, reorder_arguments_);
    }
    matmul_.execute(stream_, arguments_);
    stream_.wait();
  }

  [[nodiscard]] const std::string& implementation() const { return implementation_; }

 private:
  dnnl::stream stream_;
  dnnl::matmul matmul_;
  dnnl::reorder to_source_;
  std::unordered_map<int, dnnl::memory> arguments_;
  std::unordered_map<int, dnnl::memory> reorder_arguments_;
  std::string implementation_;
};
#endif

// ---- Benchmarks ----------------------------------------------------------------------------------------------------

/// Times `run` (real time, like the framework) after one warm-up call and sets the counters.
template <class Run>
void time_product(benchmark::State& state, product& work, variant kind, Run&& run) {
  run();
  const double cpu_start = cpu_seconds();
  const auto start = clock_type::now();
  for (auto _ : state) {
    run();
    benchmark::ClobberMemory();
  }
  const double seconds = seconds_since(start) / static_cast<double>(state.iterations());
  const double cpu = (cpu_seconds() - cpu_start) / static_cast<double>(state.iterations());
  const double bytes = weight_bytes(kind) * static_cast<double>(work.shape.n * work.shape.k);
  const double rate = work.flops() / seconds;
  state.counters["GFLOP_per_s"] = benchmark::Counter(rate / 1e9);
  state.counters["GB_per_s"] = benchmark::Counter(bytes / seconds / 1e9);
  state.counters["GFLOP_per_cpu_s"] = benchmark::Counter(work.flops() / cpu / 1e9);
  if (peaks().fp32 > 0) {
    state.counters["vs_peak"] = benchmark::Counter(rate / peaks().fp32);
    state.counters["vs_peak_cpu"] = benchmark::Counter(work.flops() / cpu / peaks().fp32_per_cpu_second);
  }
  if (peaks().bf16 > 0 && bf16_weights(kind)) {
    state.counters["vs_bf16_peak"] = benchmark::Counter(rate / peaks().bf16);
  }
  state.counters["vs_floor"] = benchmark::Counter(seconds / (bytes / read_baseline().bandwidth()));
  state.counters["vs_eigen"] = benchmark::Counter(work.eigen_seconds / seconds);
  state.counters["rel_err"] = benchmark::Counter(work.relative_error());
  state.counters["threads"] = benchmark::Counter(static_cast<double>(all_threads.resolved_threads()));
}

void run_product(benchmark::State& state, std::size_t shape_index, std::size_t m, variant kind) {
  product* const built = product_at(m, shape_index);
  if (built == nullptr) {
    state.SkipWithError("not enough free memory for this shape's weights");
    return;
  }
  product& work = *built;
  const std::size_t n = work.shape.n;
  const std::size_t k = work.shape.k;
  const float* const a = work.a.data();
  float* const c = work.c.data();
  std::fill(work.c.begin(), work.c.end(), 0.0f);
  // Each call reads the next copy of the weights (cycled_bytes).
  const auto f32 = [&] { return work.w.f32.data() + work.next_copy(); };
  const auto b16 = [&] { return work.w.b16.data() + work.next_copy(); };
  const auto h16 = [&] { return work.w.h16.data() + work.next_copy(); };
  const std::size_t size = work.w.size;
  switch (kind) {
    case variant::ngemb_f32:
      time_product(state, work, kind, [&] {
        ngemb::gemm_nt(all_threads, m, n, k, work.a, ngemb::view<const float>(f32(), size), ngemb::view<float>(work.c));
      });
      break;
    case variant::ngemb_bf16:
      time_product(state, work, kind, [&] {
        ngemb::gemm_nt(all_threads, m, n, k, work.a, ngemb::view<const ngemb::bf16>(b16(), size),
                       ngemb::view<float>(work.c));
      });
      break;
    case variant::ngemb_fp16:
      time_product(state, work, kind, [&] {
        ngemb::gemm_nt(all_threads, m, n, k, work.a, ngemb::view<const ngemb::fp16>(h16(), size),
                       ngemb::view<float>(work.c));
      });
      break;
    case variant::eigen_f32:
      time_product(state, work, kind, [&] { eigen_gemm_nt(m, n, k, a, f32(), c); });
      break;
#ifdef NGEMB_BENCH_OPENBLAS
    case variant::openblas_f32:
      openblas_set_num_threads(static_cast<int>(all_threads.resolved_threads()));
      state.SetLabel(openblas_get_corename());
      time_product(state, work, kind, [&] { openblas_gemm_nt(m, n, k, a, f32(), n, c); });
      break;
    case variant::openblas_bf16: {
      openblas_set_num_threads(1);  // the panels are split over ngemb's threads instead
      state.SetLabel(openblas_get_corename());
      openblas_bf16_gemm gemm(work.shape);
      time_product(state, work, kind, [&] { gemm(m, n, k, a, b16(), c); });
      break;
    }
#endif
#ifdef NGEMB_BENCH_ONEDNN
    case variant::onednn_f32:
    case variant::onednn_f32_bf16:
    case variant::onednn_bf16: {
      using dt = dnnl::memory::data_type;
      const bool f32_weights = kind == variant::onednn_f32;
      try {
        const dt activations = kind == variant::onednn_bf16 ? dt::bf16 : dt::f32;
        onednn_gemm_nt gemm(m, n, k, activations, f32_weights ? dt::f32 : dt::bf16, a, c);
        state.SetLabel(gemm.implementation());
        time_product(state, work, kind, [&] {
          gemm(f32_weights ? static_cast<const void*>(f32()) : static_cast<const void*>(b16()));
        });
      } catch (const dnnl::error& failure) {
        state.SkipWithError((std::string("oneDNN: ") + failure.what()).c_str());
      }
      break;
    }
#endif
  }
#ifdef NGEMB_BENCH_OPENBLAS
  if (kind == variant::openblas_f32 || kind == variant::openblas_bf16) {
    // OpenBLAS's threads spin for ~0.1 s after a call; let them sleep before the next benchmark takes the cores.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
#endif
}

void BM_fma_peak(benchmark::State& state) {
  const compute_peaks& measured = peaks();
  for (auto _ : state) {
    benchmark::DoNotOptimize(measured.fp32);
  }
  state.SetLabel(measured.fp32_isa);
  state.counters["fp32_GFLOP_per_s"] = benchmark::Counter(measured.fp32 / 1e9);
  state.counters["fp32_GFLOP_per_cpu_s"] = benchmark::Counter(measured.fp32_per_cpu_second / 1e9);
  state.counters["bf16_GFLOP_per_s"] = benchmark::Counter(measured.bf16 / 1e9);  // 0: no AVX512_BF16
  state.counters["threads"] = benchmark::Counter(static_cast<double>(all_threads.resolved_threads()));
}

void BM_read_floor_1GiB(benchmark::State& state) {
  read_floor& floor = read_baseline();
  const auto start = clock_type::now();
  for (auto _ : state) {
    floor.read(floor.bytes());
  }
  const double per_iteration = seconds_since(start) / static_cast<double>(state.iterations());
  state.counters["GB_per_s_setup"] = benchmark::Counter(floor.bandwidth() / 1e9);  // the floor's bandwidth
  state.counters["GB_per_s"] = benchmark::Counter(static_cast<double>(floor.bytes()) / per_iteration / 1e9);
  state.counters["threads"] = benchmark::Counter(static_cast<double>(all_threads.resolved_threads()));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(floor.bytes()));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::RegisterBenchmark("BM_fma_peak", BM_fma_peak)->Iterations(1);
  benchmark::RegisterBenchmark("BM_read_floor_1GiB", BM_read_floor_1GiB)->UseRealTime()->Unit(benchmark::kMillisecond);
  for (std::size_t shape = 0; shape < shapes.size(); ++shape) {
    for (const std::size_t m : batches) {
      if (m > shapes[shape].max_m) {
        continue;
      }
      const bool big = 2.0 * static_cast<double>(m * shapes[shape].n * shapes[shape].k) > big_product_flops;
      for (const auto& [kind, name] : variants) {
        const std::string full = std::string("BM_") + name + "/" + shapes[shape].name + "/m:" + std::to_string(m);
        auto* registered = benchmark::RegisterBenchmark(
            full.c_str(), [shape, m, kind = kind](benchmark::State& state) { run_product(state, shape, m, kind); });
        registered->UseRealTime()->Unit(big ? benchmark::kMillisecond : benchmark::kMicrosecond);
        if (big) {
          registered->Iterations(1);
        } else {
          registered->MinTime(0.2);
        }
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
