#pragma once
// ngemb: header-only C++20 templates for N-gram Embedding language models (arXiv 2601.21204, LongCat-Flash-Lite).
// This umbrella header holds everything that compiles with a plain C++20 compiler. Device code additionally
// includes "ngemb/policy/device_policy.cuh" from nvcc-compiled sources.
#include "ngemb/cache/ngram_cache.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/input_checks.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/hash/hasher.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/io/hf_config.hpp"
#include "ngemb/policy/host_policy.hpp"
