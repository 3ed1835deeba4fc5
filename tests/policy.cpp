// policy/: for_each_n covers every index exactly once on any thread count; input_checks raise typed errors; the
// mixed-precision gemm_nt matches an fp64 product; sort_pairs is a stable sort; the execution_policy concept is
// complete (library code runs under a third policy written from it alone); buffers come from the policy's memory
// resource and none go around it; the task runner runs uneven tasks once each, from its workers' arenas once warm,
// and rethrows a worker's exception on the caller.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <latch>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../examples/demo_model.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/input_checks.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/policy/detail/host_tasks.hpp"
#include "ngemb/policy/detail/sort_pairs.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/memory_resource.hpp"
#include "ngemb/policy/policy.hpp"
#include "ngemb/policy/weight_matrix.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "serial_policy.hpp"
#include "temp_folder.hpp"
#include "token_batch.hpp"

static_assert(ngemb::execution_policy<ngemb::host_policy>);
static_assert(ngemb::detail::check_execution_policy<ngemb_test::serial_policy>());
static_assert(!ngemb::execution_policy<int>);

TEST_CASE("host for_each_n visits every index once, serial and threaded") {
  for (unsigned threads : {1u, 2u, 3u, 0u}) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{100003}}) {
      std::vector<std::atomic<int>> visits(n);
      const ngemb::host_policy policy{threads, 1000};
      ngemb::for_each_n(policy, n, [&](std::size_t i) { visits[i].fetch_add(1); });
      std::size_t wrong = 0;
      for (auto& count : visits) {
        wrong += count.load() != 1;
      }
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("host for_each_n rethrows a worker's exception") {
  const ngemb::host_policy policy{4, 10};
  CHECK_THROWS_AS(ngemb::for_each_n(policy, 1000,
                                    [](std::size_t i) {
                                      if (i == 977) {
                                        throw std::runtime_error("element 977");
                                      }
                                    }),
                  std::runtime_error);
}

TEST_CASE("host for_each_n: nested loops and concurrent callers share the pool and each completes") {
  // A loop inside a loop's element (the inner caller claims its own chunks, so it never waits on busy threads),
  // from several user threads at once.
  constexpr std::size_t outer = 8;
  constexpr std::size_t inner = 5000;
  const ngemb::host_policy policy{4, 1};
  std::vector<std::thread> callers;
  std::array<std::vector<std::atomic<int>>, 3> visits;
  for (auto& caller_visits : visits) {
    caller_visits = std::vector<std::atomic<int>>(outer * inner);
  }
  for (std::size_t caller = 0; caller < visits.size(); ++caller) {
    callers.emplace_back([&, caller] {
      for (int repeat = 0; repeat < 20; ++repeat) {
        ngemb::for_each_n(policy, outer, [&](std::size_t o) {
          ngemb::for_each_n(ngemb::host_policy{4, 100}, inner,
                            [&](std::size_t i) { visits[caller][o * inner + i].fetch_add(1); });
        });
      }
    });
  }
  for (std::thread& caller : callers) {
    caller.join();
  }
  for (const auto& caller_visits : visits) {
    std::size_t wrong = 0;
    for (const auto& count : caller_visits) {
      wrong += count.load() != 20;
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE("input_checks name the first bad offset and the first bad token") {
  const ngemb::host_policy policy{2, 8};
  const std::vector<std::int32_t> tokens{1, 2, 3, 4, 99, 5, -3};
  const auto message_of = [&](auto&& run) -> std::string {
    try {
      run();
    } catch (const ngemb::error& failure) {
      return failure.what();
    }
    return "no exception";
  };
  const std::vector<std::int64_t> good{0, 2, 2, 7};
  const std::vector<std::int64_t> decreasing{0, 3, 2, 7};
  const std::vector<std::int64_t> short_end{0, 2, 6};
  const std::vector<std::int64_t> bad_start{1, 2, 7};
  const auto check_offsets = [&](const std::vector<std::int64_t>& offsets) {
    return message_of([&] {
      ngemb::input_checks<ngemb::host_policy> checks(policy);
      checks.ragged(ngemb::ragged_view<const std::int32_t>(tokens, offsets), "batch");
      checks.raise_if_failed();
    });
  };
  CHECK(check_offsets(good) == "no exception");
  CHECK(check_offsets(decreasing) == "batch: offsets[2] = 2 is less than offsets[1] = 3");
  CHECK(check_offsets(short_end) == "batch: offsets[2] = 6 but there are 7 values");
  CHECK(check_offsets(bad_start) == "batch: offsets[0] = 1 but must be 0");
  CHECK(check_offsets({}) == "batch: offsets must hold num_sequences + 1 entries, got none");

  ngemb::input_checks<ngemb::host_policy> checks(policy);
  checks.ragged(ngemb::ragged_view<const std::int32_t>(tokens, good), "tokens");
  checks.in_vocabulary(ngemb::ragged_view<const std::int32_t>(tokens, good), 50, "tokens");
  CHECK_THROWS_WITH_AS(checks.raise_if_failed(),
                       "tokens: token id 99 at sequence 2, position 2 (flat index 4) is outside [0, 50)",
                       ngemb::invalid_argument);
}

namespace {

/// C = A * B^T in fp64 from the values A and B hold.
template <class W>
std::vector<double> reference_gemm_nt(std::size_t m, std::size_t n, std::size_t k, const std::vector<float>& a,
                                      const std::vector<W>& b) {
  std::vector<double> c(m * n, 0.0);
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      for (std::size_t l = 0; l < k; ++l) {
        c[i * n + j] += static_cast<double>(a[i * k + l]) * static_cast<double>(ngemb::to_float(b[j * k + l]));
      }
    }
  }
  return c;
}

template <class W>
void check_mixed_gemm(const ngemb::host_policy& policy, std::size_t m, std::size_t n, std::size_t k) {
  std::mt19937 random(static_cast<unsigned>(m * 7919 + n * 31 + k));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> a(m * k);
  std::vector<W> b(n * k);
  std::generate(a.begin(), a.end(), [&] { return normal(random); });
  std::generate(b.begin(), b.end(), [&] { return W(normal(random)); });
  std::vector<float> c(m * n, -7.0f);
  ngemb::gemm_nt(policy, m, n, k, ngemb::view<const float>(a), ngemb::view<const W>(b), ngemb::view<float>(c));
  const auto want = reference_gemm_nt(m, n, k, a, b);
  // fp32 accumulation of k products of N(0, 1) values: errors grow like sqrt(k) * 6e-8 * |terms|; k <= 700 here
  // keeps them below 1e-5 * sqrt(k), against sums of magnitude about sqrt(k).
  double worst = 0.0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    worst = std::max(worst, std::abs(c[i] - want[i]));
  }
  INFO("m = " << m << ", n = " << n << ", k = " << k << ", threads = " << policy.threads << ": worst error " << worst);
  CHECK(worst <= 1e-5 * std::sqrt(static_cast<double>(k)));
}

}  // namespace

TEST_CASE("mixed-precision gemm_nt (fp32 x bf16/fp16 -> fp32) matches an fp64 product") {
  for (const unsigned threads : {1u, 2u}) {
    const ngemb::host_policy policy{threads};
    for (const auto& [m, n, k] : {std::array<std::size_t, 3>{1, 1, 1}, {1, 300, 700}, {3, 257, 129},
                                  {17, 64, 500}, {70, 513, 33}, {5, 4, 0}, {0, 4, 5}}) {
      check_mixed_gemm<ngemb::bf16>(policy, m, n, k);
      check_mixed_gemm<ngemb::fp16>(policy, m, n, k);
    }
  }
  const std::vector<float> a(6);
  const std::vector<ngemb::bf16> b(8);
  std::vector<float> c(4);
  CHECK_THROWS_WITH_AS(ngemb::gemm_nt(ngemb::host_policy{}, 2, 2, 3, ngemb::view<const float>(a),
                                      ngemb::view<const ngemb::bf16>(b), ngemb::view<float>(c)),
                       doctest::Contains("gemm_nt: B must hold 2 x 3 = 6 values, got 8"), ngemb::shape_mismatch);
}

namespace {

/// Runs the host kernels on one instruction set for its lifetime (tests only: the setting is process-wide).
class scoped_host_isa {
 public:
  explicit scoped_host_isa(ngemb::detail::host_isa isa) : saved_(ngemb::detail::host_isa_limit().exchange(isa)) {}
  ~scoped_host_isa() { ngemb::detail::host_isa_limit().store(saved_); }
  scoped_host_isa(const scoped_host_isa&) = delete;
  scoped_host_isa& operator=(const scoped_host_isa&) = delete;

 private:
  ngemb::detail::host_isa saved_;
};

/// C = A * B^T with B's rows `ldb` apart (ldb == k: the dense overload) against fp64, with the error bound of
/// check_mixed_gemm.
template <class W>
void check_gemm_nt_kernel(const ngemb::host_policy& policy, std::size_t m, std::size_t n, std::size_t k,
                          std::size_t ldb) {
  std::mt19937 random(static_cast<unsigned>(m * 7919 + n * 31 + k * 3 + ldb));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> a(m * k);
  std::vector<W> b(n == 0 || k == 0 ? 0 : (n - 1) * ldb + k);
  std::generate(a.begin(), a.end(), [&] { return normal(random); });
  std::generate(b.begin(), b.end(), [&] { return W(normal(random)); });
  std::vector<float> c(m * n, -7.0f);
  if (ldb == k) {
    ngemb::gemm_nt(policy, m, n, k, ngemb::view<const float>(a), ngemb::view<const W>(b), ngemb::view<float>(c));
  } else {
    ngemb::gemm_nt(policy, m, n, k, ngemb::view<const float>(a), ngemb::view<const W>(b), ldb, ngemb::view<float>(c));
  }
  double worst = 0.0;
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      double want = 0.0;
      for (std::size_t l = 0; l < k; ++l) {
        want += static_cast<double>(a[i * k + l]) * static_cast<double>(ngemb::to_float(b[j * ldb + l]));
      }
      worst = std::max(worst, std::abs(c[i * n + j] - want));
    }
  }
  INFO("m = " << m << ", n = " << n << ", k = " << k << ", ldb = " << ldb << ", threads = " << policy.threads
              << ": worst error " << worst);
  CHECK(worst <= 1e-5 * std::sqrt(static_cast<double>(std::max<std::size_t>(k, 1))));
}

}  // namespace

TEST_CASE("host gemm_nt kernels (streaming and blocked, AVX2 and portable) match an fp64 product") {
  std::vector<ngemb::detail::host_isa> isas{ngemb::detail::host_isa::generic};
  if (ngemb::detail::detect_host_isa() != ngemb::detail::host_isa::generic) {
    isas.push_back(ngemb::detail::detect_host_isa());
  }
  MESSAGE("host kernels tested: " << std::string(isas.size() == 2 ? "AVX2/FMA and portable" : "portable only (no AVX2/FMA here)"));
  for (const auto isa : isas) {
    const scoped_host_isa chosen(isa);
    for (const unsigned threads : {1u, 2u}) {
      const ngemb::host_policy policy{threads};
      // Every tile tail of the streaming kernel: rows of A 1..small_gemm_max_rows (tiles of 3, tails 1 and 2; one row
      // takes 8 rows of B at a time), rows of B not a multiple of 8 or 4, k not a multiple of 8, strided B; then the
      // blocked path just above the streaming kernel's rows.
      for (std::size_t m = 1; m <= ngemb::detail::small_gemm_max_rows + 1; ++m) {
        for (const auto& dims : {std::array<std::size_t, 3>{13, 37, 37}, {29, 64, 80}, {2, 9, 9}, {1, 1, 1},
                                 {70, 300, 304}}) {
          const std::size_t n = dims[0];  // named copies: clang 14 cannot capture structured bindings (INFO does)
          const std::size_t k = dims[1];
          const std::size_t ldb = dims[2];
          INFO("isa = " << static_cast<int>(isa));
          check_gemm_nt_kernel<float>(policy, m, n, k, ldb);
          check_gemm_nt_kernel<ngemb::bf16>(policy, m, n, k, ldb);
          check_gemm_nt_kernel<ngemb::fp16>(policy, m, n, k, ldb);
        }
      }
      // Enough weights to split the streaming kernel over both threads (min_streamed_weights_per_thread).
      check_gemm_nt_kernel<ngemb::bf16>(policy, 2, 1030, 2051, 2051);
      check_gemm_nt_kernel<float>(policy, 1, 1030, 2051, 2051);
      // The packed kernel past one block of every loop (kc = 256 columns of k, mc = 72 rows of A, nc = 768 rows of
      // B), split by rows of B (n large) and by rows of A (n small).
      check_gemm_nt_kernel<ngemb::bf16>(policy, 150, 800, 600, 603);
      check_gemm_nt_kernel<ngemb::fp16>(policy, 150, 800, 600, 600);
      check_gemm_nt_kernel<float>(policy, 300, 20, 513, 513);
    }
  }
  const std::vector<float> a(6);
  const std::vector<ngemb::bf16> b(8);
  std::vector<float> c(4);
  CHECK_THROWS_WITH_AS(ngemb::gemm_nt(ngemb::host_policy{}, 2, 2, 3, ngemb::view<const float>(a),
                                      ngemb::view<const ngemb::bf16>(b), 2, ngemb::view<float>(c)),
                       "gemm_nt: ldb must be >= k = 3, got 2", ngemb::invalid_argument);
}

namespace {

/// weight_matrix<W> from random fp32 values: the product, a block of columns and a save/load round trip against
/// fp64 over the values W holds (bf16/fp16 round at construction, then the products are exact).
template <class W>
void check_weight_matrix(const ngemb::host_policy& policy) {
  constexpr std::int64_t rows = 37;
  constexpr std::int64_t cols = 45;
  constexpr std::size_t m = 5;
  std::mt19937 random(99);
  std::normal_distribution<float> normal;
  std::vector<float> values(rows * cols);
  std::vector<float> a(m * cols);
  std::generate(values.begin(), values.end(), [&] { return normal(random); });
  std::generate(a.begin(), a.end(), [&] { return normal(random); });
  const ngemb::weight_matrix<W> weight(policy, rows, cols, ngemb::view<const float>(values));
  REQUIRE(weight.rows() == rows);
  REQUIRE(weight.cols() == cols);
  CHECK(weight.bytes() == static_cast<std::size_t>(rows * cols) * sizeof(W));
  const auto stored = [&](std::size_t i) { return static_cast<double>(static_cast<float>(W(values[i]))); };
  const auto check_product = [&](const ngemb::weight_matrix<W>& matrix, std::int64_t first, std::int64_t count) {
    std::vector<float> block(m * static_cast<std::size_t>(count));
    for (std::size_t i = 0; i < m; ++i) {
      for (std::int64_t l = 0; l < count; ++l) {
        block[i * static_cast<std::size_t>(count) + static_cast<std::size_t>(l)] = a[i * cols + static_cast<std::size_t>(first + l)];
      }
    }
    std::vector<float> c(m * rows, -3.0f);
    if (count == cols) {
      matrix.multiply(policy, m, ngemb::view<const float>(block), ngemb::view<float>(c));
    } else {
      matrix.multiply_columns(policy, m, first, count, ngemb::view<const float>(block), ngemb::view<float>(c));
    }
    double worst = 0.0;
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < static_cast<std::size_t>(rows); ++j) {
        double want = 0.0;
        for (std::int64_t l = 0; l < count; ++l) {
          want += static_cast<double>(block[i * static_cast<std::size_t>(count) + static_cast<std::size_t>(l)]) *
                  stored(j * cols + static_cast<std::size_t>(first + l));
        }
        worst = std::max(worst, std::abs(c[i * rows + j] - want));
      }
    }
    INFO("columns [" << first << ", " << first + count << ")");
    CHECK(worst <= 1e-5 * std::sqrt(static_cast<double>(cols)));
  };
  check_product(weight, 0, cols);
  check_product(weight, 7, 20);

  const ngemb_test::temp_folder folder;
  ngemb::tensor_collection tensors;
  weight.save(policy, "w", tensors);
  ngemb::write_safetensors(folder / "w.safetensors", tensors.tensors());
  const ngemb::safetensors_checkpoint checkpoint(folder / "w.safetensors");
  CHECK(checkpoint.info("w").dtype == std::string(ngemb::name_of(ngemb::dtype_of<W>)));
  const auto loaded = ngemb::weight_matrix<W>::load(policy, checkpoint, "w", rows, cols);
  CHECK(std::equal(loaded.values().begin(), loaded.values().end(), weight.values().begin()));
  check_product(loaded, 0, cols);
  CHECK_THROWS_WITH_AS(ngemb::weight_matrix<W>::load(policy, checkpoint, "w", cols, rows),
                       doctest::Contains("tensor \"w\" has shape [37, 45], expected [45, 37]"), ngemb::format_error);
  CHECK_THROWS_WITH_AS(weight.multiply_columns(policy, m, 40, 6, ngemb::view<const float>(a), ngemb::view<float>()),
                       "weight_matrix::multiply_columns: columns [40, 46) are not inside [0, 45)",
                       ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS((ngemb::weight_matrix<W>(policy, 2, 3, ngemb::view<const float>(values).subview(0, 5))),
                       "weight_matrix: 2 x 3 = 6 values expected, got 5", ngemb::shape_mismatch);
}

}  // namespace

TEST_CASE("weight_matrix (fp32, bf16, fp16) multiplies, takes a block of columns and saves and loads its dtype") {
  for (const unsigned threads : {1u, 2u}) {
    const ngemb::host_policy policy{threads};
    check_weight_matrix<float>(policy);
    check_weight_matrix<ngemb::bf16>(policy);
    check_weight_matrix<ngemb::fp16>(policy);
  }
}

TEST_CASE("gemm_nn (B's rows a stride apart) matches an fp64 product, threaded or not; bad operands are errors") {
  for (const unsigned threads : {1u, 2u}) {
    const ngemb::host_policy policy{threads};
    // {m, n, k, ldb}: a decode's few rows, rows of A split (m >= n) and columns of B split (n > m) across threads.
    for (const auto& dims : {std::array<std::size_t, 4>{1, 1, 1, 1}, {32, 512, 300, 576}, {300, 70, 513, 70},
                             {64, 400, 257, 401}, {5, 4, 0, 6}, {0, 4, 5, 4}}) {
      const std::size_t m = dims[0];  // named copies: clang 14 cannot capture structured bindings (INFO does)
      const std::size_t n = dims[1];
      const std::size_t k = dims[2];
      const std::size_t ldb = dims[3];
      std::mt19937 random(static_cast<unsigned>(m * 7919 + n * 31 + k));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> a(m * k);
      std::vector<float> b(k == 0 ? 0 : (k - 1) * ldb + n);
      std::generate(a.begin(), a.end(), [&] { return normal(random); });
      std::generate(b.begin(), b.end(), [&] { return normal(random); });
      std::vector<float> c(m * n, -7.0f);
      ngemb::gemm_nn(policy, m, n, k, ngemb::view<const float>(a), ngemb::view<const float>(b), ldb,
                     ngemb::view<float>(c));
      double worst = 0.0;
      for (std::size_t i = 0; i < m; ++i) {
        for (std::size_t j = 0; j < n; ++j) {
          double want = 0.0;
          for (std::size_t l = 0; l < k; ++l) {
            want += static_cast<double>(a[i * k + l]) * static_cast<double>(b[l * ldb + j]);
          }
          worst = std::max(worst, std::abs(c[i * n + j] - want));
        }
      }
      INFO("m = " << m << ", n = " << n << ", k = " << k << ", ldb = " << ldb << ", threads = " << threads);
      CHECK(worst <= 1e-5 * std::sqrt(static_cast<double>(std::max<std::size_t>(k, 1))));
    }
  }
  const std::vector<float> a(6);
  std::vector<float> b(8);
  std::vector<float> c(4);
  const auto multiply = [&](std::size_t ldb, std::size_t b_size) {
    ngemb::gemm_nn(ngemb::host_policy{}, 2, 2, 3, ngemb::view<const float>(a), ngemb::view<const float>(b.data(), b_size),
                   ldb, ngemb::view<float>(c));
  };
  CHECK_NOTHROW(multiply(3, 8));
  CHECK_THROWS_WITH_AS(multiply(1, 8), "gemm_nn: ldb must be >= n = 2, got 1", ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(multiply(3, 7), "gemm_nn: B must hold (3 - 1) x 3 + 2 = 8 values, got 7", ngemb::shape_mismatch);
}

TEST_CASE("gemm_nt with B's rows a stride apart (a block of W's columns) matches an fp64 product") {
  for (const unsigned threads : {1u, 2u}) {
    const ngemb::host_policy policy{threads};
    // {m, n, k, ldb}: a decode row, rows of A split (m >= n), columns split (n > m), no columns at all.
    for (const auto& dims : {std::array<std::size_t, 4>{1, 1, 1, 1}, {1, 300, 96, 288}, {300, 70, 129, 513},
                             {16, 512, 256, 3072}, {5, 4, 0, 6}, {0, 4, 5, 5}}) {
      const std::size_t m = dims[0];  // named copies: clang 14 cannot capture structured bindings (INFO does)
      const std::size_t n = dims[1];
      const std::size_t k = dims[2];
      const std::size_t ldb = dims[3];
      std::mt19937 random(static_cast<unsigned>(m * 7919 + n * 31 + k));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> a(m * k);
      std::vector<float> b(n == 0 || k == 0 ? 0 : (n - 1) * ldb + k);
      std::generate(a.begin(), a.end(), [&] { return normal(random); });
      std::generate(b.begin(), b.end(), [&] { return normal(random); });
      std::vector<float> c(m * n, -7.0f);
      ngemb::gemm_nt(policy, m, n, k, ngemb::view<const float>(a), ngemb::view<const float>(b), ldb,
                     ngemb::view<float>(c));
      double worst = 0.0;
      for (std::size_t i = 0; i < m; ++i) {
        for (std::size_t j = 0; j < n; ++j) {
          double want = 0.0;
          for (std::size_t l = 0; l < k; ++l) {
            want += static_cast<double>(a[i * k + l]) * static_cast<double>(b[j * ldb + l]);
          }
          worst = std::max(worst, std::abs(c[i * n + j] - want));
        }
      }
      INFO("m = " << m << ", n = " << n << ", k = " << k << ", ldb = " << ldb << ", threads = " << threads);
      CHECK(worst <= 1e-5 * std::sqrt(static_cast<double>(std::max<std::size_t>(k, 1))));
    }
  }
  const std::vector<float> a(6);
  std::vector<float> b(8);
  std::vector<float> c(4);
  const auto multiply = [&](std::size_t ldb, std::size_t b_size) {
    ngemb::gemm_nt(ngemb::host_policy{}, 2, 2, 3, ngemb::view<const float>(a), ngemb::view<const float>(b.data(), b_size),
                   ldb, ngemb::view<float>(c));
  };
  CHECK_NOTHROW(multiply(5, 8));
  CHECK_THROWS_WITH_AS(multiply(2, 8), "gemm_nt: ldb must be >= k = 3, got 2", ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(multiply(5, 7), "gemm_nt: B must hold (2 - 1) x 5 + 3 = 8 values, got 7", ngemb::shape_mismatch);
}

TEST_CASE("host sort_pairs is a stable sort by key") {
  const std::vector<std::int32_t> keys = {3, 1, 3, 0, 1, 3, 2, 0};
  const std::vector<std::int32_t> values = {0, 1, 2, 3, 4, 5, 6, 7};
  std::vector<std::int32_t> sorted_keys(keys.size());
  std::vector<std::int32_t> sorted_values(keys.size());
  ngemb::host_buffer<std::byte> temp;
  ngemb::sort_pairs(ngemb::host_policy{}, ngemb::view<const std::int32_t>(keys), ngemb::view<const std::int32_t>(values),
                    ngemb::view<std::int32_t>(sorted_keys), ngemb::view<std::int32_t>(sorted_values), 2, temp);
  CHECK(sorted_keys == std::vector<std::int32_t>{0, 0, 1, 1, 2, 3, 3, 3});
  CHECK(sorted_values == std::vector<std::int32_t>{3, 7, 1, 4, 6, 0, 2, 5});
  CHECK_THROWS_AS(ngemb::sort_pairs(ngemb::host_policy{}, ngemb::view<const std::int32_t>(keys),
                                    ngemb::view<const std::int32_t>(values).subview(0, 7),
                                    ngemb::view<std::int32_t>(sorted_keys), ngemb::view<std::int32_t>(sorted_values), 2,
                                    temp),
                  ngemb::shape_mismatch);
}

namespace {

/// Counts what passes through it and serves it from aligned operator new, never from the default resource.
class counting_host_resource {
 public:
  void* allocate(std::size_t bytes, std::size_t alignment) {
    ++allocations;
    live_bytes += bytes;
    return ::operator new(bytes, std::align_val_t{alignment});
  }
  void deallocate(void* pointer, std::size_t bytes, std::size_t alignment) noexcept {
    live_bytes -= bytes;
    ::operator delete(pointer, std::align_val_t{alignment});
  }

  std::size_t allocations = 0;
  std::size_t live_bytes = 0;
};

/// The demo model's structure at a size the naive GEMM of serial_policy runs in a moment.
ngemb::model_config small_demo_config() {
  ngemb::model_config config = ngemb_examples::demo_config();
  config.ngram.vocab_size = 512;
  config.ngram.hidden_size = 64;
  config.num_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 16;
  config.ffn_hidden_size = 96;
  config.expert_ffn_hidden_size = 32;
  config.n_routed_experts = 8;
  config.zero_expert_num = 4;
  config.moe_topk = 2;
  config.max_position_embeddings = 64;
  return config;
}

ngemb_test::token_batch random_token_batch(std::int32_t vocab_size, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<std::int32_t> token(0, vocab_size - 1);
  std::uniform_int_distribution<int> length(1, 9);
  ngemb_test::token_batch batch;
  for (int s = 0; s < 6; ++s) {
    std::vector<std::int32_t> sequence(static_cast<std::size_t>(length(random)));
    std::vector<std::int32_t> earlier(static_cast<std::size_t>(length(random) - 1));
    std::generate(sequence.begin(), sequence.end(), [&] { return token(random); });
    std::generate(earlier.begin(), earlier.end(), [&] { return token(random); });
    batch.add(sequence, earlier);
  }
  return batch;
}

ngemb::generation_options greedy(int new_tokens) {
  ngemb::generation_options options;
  options.max_new_tokens = new_tokens;
  return options;
}

/// Every-token logits of one ragged prefill, then greedy generation, under `policy`.
template <class Policy>
std::pair<std::vector<float>, std::vector<std::vector<std::int32_t>>> run_demo_model(const Policy& policy) {
  const ngemb::model_config config = small_demo_config();
  auto model = ngemb_examples::random_model(policy, config, 11);
  const ngemb_test::token_batch batch = random_token_batch(static_cast<std::int32_t>(config.vocab_size()), 5);
  std::vector<std::int32_t> sequences;
  for (std::size_t s = 0; s + 1 < batch.offsets.size(); ++s) {
    sequences.push_back(model.start_sequence());
  }
  const std::size_t values = batch.tokens.size() * static_cast<std::size_t>(config.vocab_size());
  typename Policy::template buffer<float> logits(policy, values);
  model.forward(policy, ngemb::view<const std::int32_t>(sequences), batch.token_view(), logits.as_view());
  std::vector<float> host_logits(values);
  copy_to_host(policy, ngemb::view<const float>(logits.as_view()), ngemb::view<float>(host_logits));
  for (const std::int32_t sequence : sequences) {
    model.end_sequence(sequence);
  }
  const std::vector<std::vector<std::int32_t>> prompts{{5, 17, 42, 9}, {300}, {7, 7, 7, 7, 7, 7, 7}};
  auto generated = ngemb::generate(policy, model, prompts, greedy(6));
  return {std::move(host_logits), std::move(generated.tokens)};
}

}  // namespace

TEST_CASE("library code asks a policy only for the concept: hash_tokens and a model run the same under serial_policy") {
  const ngemb_test::serial_policy serial;
  const ngemb::host_policy host{2, 16};

  const ngemb::ngram_config config = small_demo_config().ngram;
  const ngemb::longcat_hash hasher(config);
  const ngemb_test::token_batch batch = random_token_batch(static_cast<std::int32_t>(config.vocab_size), 3);
  const std::size_t count = batch.tokens.size() * static_cast<std::size_t>(hasher.num_tables());
  std::vector<std::int64_t> host_ids(count);
  std::vector<std::int64_t> serial_ids(count);
  ngemb::hash_tokens(host, hasher, batch.token_view(), batch.context_view(), ngemb::view<std::int64_t>(host_ids));
  ngemb::hash_tokens(serial, hasher, batch.token_view(), batch.context_view(), ngemb::view<std::int64_t>(serial_ids));
  CHECK(serial_ids == host_ids);

  const auto [host_logits, host_tokens] = run_demo_model(host);
  const auto [serial_logits, serial_tokens] = run_demo_model(serial);
  REQUIRE(serial_logits.size() == host_logits.size());
  // The naive GEMM sums in another order than Eigen's blocked kernel: fp32 rounding of dot products over at most
  // 96 terms, carried through two layers, stays far below 1e-3 of logits of magnitude ~1.
  double worst = 0.0;
  double largest = 1.0;
  for (std::size_t i = 0; i < host_logits.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(serial_logits[i] - host_logits[i])));
    largest = std::max(largest, static_cast<double>(std::abs(host_logits[i])));
  }
  INFO("worst logit difference " << worst << " against logits up to " << largest);
  CHECK(worst <= 1e-3 * largest);
  CHECK(serial_tokens == host_tokens);
}

TEST_CASE("a host policy's buffers come from its memory resource, and none go around it") {
  counting_host_resource counting;
  const std::uint64_t defaults_before = ngemb::default_host_resource::allocation_count();
  std::vector<std::vector<std::int32_t>> generated;
  {
    const ngemb::host_policy policy = ngemb::host_policy{2}.with(counting);
    CHECK(ngemb::get_memory_resource(policy) == ngemb::host_resource_ref(counting));
    const ngemb::model_config config = small_demo_config();
    const ngemb_test::temp_folder folder;
    auto model = ngemb_examples::random_model(policy, config, 11);
    const std::vector<std::vector<std::int32_t>> prompts{{5, 17, 42, 9}, {300}};
    generated = ngemb::generate(policy, model, prompts, greedy(4)).tokens;
    model.save(policy, folder / "model");
    auto loaded = ngemb_examples::demo_model<ngemb::host_policy>::load(policy, folder / "model");
    CHECK(ngemb::generate(policy, loaded, prompts, greedy(4)).tokens == generated);
    CHECK(counting.live_bytes > 0);
  }
  CHECK(counting.allocations > 0);
  CHECK(counting.live_bytes == 0);
  CHECK(ngemb::default_host_resource::allocation_count() == defaults_before);
  // The default resource does count: one buffer moves it by one.
  { const ngemb::host_buffer<float> buffer(ngemb::host_policy{}, 3); }
  CHECK(ngemb::default_host_resource::allocation_count() == defaults_before + 1);
}

TEST_CASE("a resource out of memory (std::bad_alloc) is ngemb::out_of_memory naming the bytes") {
  struct exhausted_resource {
    void* allocate(std::size_t /*bytes*/, std::size_t /*alignment*/) { throw std::bad_alloc(); }
    void deallocate(void* /*pointer*/, std::size_t /*bytes*/, std::size_t /*alignment*/) noexcept {}
  } exhausted;
  const ngemb::host_policy policy = ngemb::host_policy{}.with(exhausted);
  CHECK_THROWS_WITH_AS(ngemb::host_buffer<float>(policy, 4), "host_buffer: cannot allocate 16 bytes",
                       ngemb::out_of_memory);
  CHECK(ngemb::host_buffer<float>(policy, 0).size() == 0);  // nothing to allocate: the resource is not asked
}

TEST_CASE("host task runner: every task once on one-thread policies, scratch from the workers' arenas once warm") {
  counting_host_resource counting;
  {
    ngemb::detail::host_task_runner runner;
    for (std::size_t workers : {std::size_t{1}, std::size_t{3}, std::size_t{8}}) {
      for (std::size_t count : {std::size_t{0}, std::size_t{2}, std::size_t{50}}) {
        std::vector<std::atomic<int>> runs(count);
        std::atomic<int> wrong_policies{0};
        const ngemb::host_policy policy = ngemb::host_policy{4, 1}.with(counting);
        // Uneven scratch: task i takes 64 (i + 1) floats and writes them all.
        const auto task = [&](std::size_t i, const ngemb::host_policy& worker_policy) {
          wrong_policies += worker_policy.threads != 1 || worker_policy.resource == policy.resource ? 1 : 0;
          ngemb::host_buffer<float> scratch(worker_policy, 64 * (i + 1), ngemb::for_overwrite);
          std::fill_n(scratch.data(), scratch.size(), static_cast<float>(i));
          runs[i].fetch_add(1);
        };
        runner.run(policy, workers, count, task);
        runner.run(policy, workers, count, task);  // the arenas grow to the largest need, on this thread
        const std::size_t allocations = counting.allocations;
        runner.run(policy, workers, count, task);
        CHECK(counting.allocations == allocations);  // warm: nothing asked of the resource
        CHECK(wrong_policies == 0);
        CHECK(std::all_of(runs.begin(), runs.end(), [](const std::atomic<int>& run) { return run.load() == 3; }));
      }
    }
  }
  CHECK(counting.live_bytes == 0);
}

TEST_CASE("host task runner rethrows a pool thread's exception on the caller") {
  ngemb::detail::host_task_runner runner;
  // Both tasks wait until both run, so they run on two threads at once, one of them the pool's; both throw.
  std::latch both_running(2);
  CHECK_THROWS_WITH_AS(runner.run(ngemb::host_policy{2, 1}, 2, 2,
                                  [&](std::size_t /*i*/, const ngemb::host_policy& /*worker_policy*/) {
                                    both_running.arrive_and_wait();
                                    throw std::runtime_error("task failed");
                                  }),
                       "task failed", std::runtime_error);
  std::atomic<int> runs{0};
  runner.run(ngemb::host_policy{2, 1}, 2, 5, [&](std::size_t, const ngemb::host_policy&) { runs.fetch_add(1); });
  CHECK(runs == 5);
}
