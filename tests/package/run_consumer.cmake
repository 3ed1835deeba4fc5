# Builds and runs one consumer project of ngemb (cmake -P). Every step must succeed; otherwise this script stops
# with message(FATAL_ERROR) and the step's output, which fails the ctest test that runs it.
#
#   cmake -DNGEMB_CONSUMER=find_package|fetchcontent|cuda   which consumer under tests/package/ to build
#         -DNGEMB_SOURCE_DIR=<ngemb source tree>
#         -DNGEMB_BINARY_DIR=<ngemb build tree>          scratch space lives under <build>/package-tests/<consumer>
#         [-DNGEMB_CONFIG=<config>]                      passed to `cmake --install --config` when not empty
#         [-DNGEMB_CXX_COMPILER=<path>]                  the consumer's CMAKE_CXX_COMPILER
#         [-DNGEMB_GENERATOR=<name>] [-DNGEMB_MAKE_PROGRAM=<path>]
#         [-DNGEMB_PREFIX_PATH=<a|b|...>]                extra prefixes for ngemb's dependencies, '|'-separated
#         [-DNGEMB_VERSION=<version>]                    what the consumer's ngemb/version.hpp must say
#         [-DNGEMB_CUDA_COMPILER=<nvcc>] [-DNGEMB_CUDA_ARCHITECTURES=<list>]   for the cuda consumer
#         -P run_consumer.cmake
#
# find_package and cuda: `cmake --install <build> --prefix <scratch>/prefix`, then the consumer is configured with
# CMAKE_PREFIX_PATH=<scratch>/prefix. fetchcontent: the consumer adds <source tree> with FetchContent. The cuda
# consumer exits 77 where no GPU is present; this script then prints "no CUDA device" and succeeds (ctest: skipped).
cmake_minimum_required(VERSION 3.25)

foreach(required IN ITEMS NGEMB_CONSUMER NGEMB_SOURCE_DIR NGEMB_BINARY_DIR)
  if(NOT DEFINED ${required} OR "${${required}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: -D${required}=... is required")
  endif()
endforeach()
if(NOT NGEMB_CONSUMER MATCHES "^(find_package|fetchcontent|cuda)$")
  message(FATAL_ERROR
          "run_consumer.cmake: NGEMB_CONSUMER must be find_package, fetchcontent or cuda, got '${NGEMB_CONSUMER}'")
endif()
set(installed_package OFF)
if(NGEMB_CONSUMER MATCHES "^(find_package|cuda)$")
  set(installed_package ON)
endif()

set(consumer_source "${CMAKE_CURRENT_LIST_DIR}/${NGEMB_CONSUMER}")
set(scratch "${NGEMB_BINARY_DIR}/package-tests/${NGEMB_CONSUMER}")
set(prefix "${scratch}/prefix")
set(consumer_build "${scratch}/build")
set(consumer_bin "${scratch}/bin")
file(REMOVE_RECURSE "${scratch}")
file(MAKE_DIRECTORY "${scratch}")

# Runs one step; on failure stops with its command line and output. Exit codes listed in `step_allowed_results`
# are not failures; the step's exit code is left in step_result.
set(step_allowed_results 0)
function(run_step description)
  string(REPLACE ";" " " command_line "${ARGN}")
  message(STATUS "${description}: ${command_line}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
  set(step_result "${result}" PARENT_SCOPE)
  if(NOT result IN_LIST step_allowed_results)
    message(FATAL_ERROR "${description} failed (${result}):\n  ${command_line}\n${output}")
  endif()
  set(step_output "${output}" PARENT_SCOPE)
endfunction()

# Prefixes where the consumer looks for packages; semicolon lists go through an initial cache file, never -D.
set(prefix_path "")
if(installed_package)
  list(APPEND prefix_path "${prefix}")
endif()
if(NGEMB_PREFIX_PATH)
  string(REPLACE "|" ";" extra_prefixes "${NGEMB_PREFIX_PATH}")
  list(APPEND prefix_path ${extra_prefixes})
endif()

set(init_cache "${scratch}/init-cache.cmake")
file(WRITE "${init_cache}" "# Written by run_consumer.cmake\n")
file(APPEND "${init_cache}" "set(CMAKE_BUILD_TYPE \"Release\" CACHE STRING \"\")\n")
file(APPEND "${init_cache}" "set(CMAKE_PREFIX_PATH \"${prefix_path}\" CACHE STRING \"\")\n")
# Only the prefixes above: no user or system package registry may stand in for the installed package.
file(APPEND "${init_cache}" "set(CMAKE_FIND_USE_PACKAGE_REGISTRY OFF CACHE BOOL \"\")\n")
file(APPEND "${init_cache}" "set(CMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY OFF CACHE BOOL \"\")\n")
# One known place for the executable, for single- and multi-config generators alike.
file(APPEND "${init_cache}" "set(CMAKE_RUNTIME_OUTPUT_DIRECTORY \"${consumer_bin}\" CACHE PATH \"\")\n")
file(APPEND "${init_cache}" "set(CMAKE_RUNTIME_OUTPUT_DIRECTORY_RELEASE \"${consumer_bin}\" CACHE PATH \"\")\n")
if(NGEMB_CXX_COMPILER)
  file(APPEND "${init_cache}" "set(CMAKE_CXX_COMPILER \"${NGEMB_CXX_COMPILER}\" CACHE FILEPATH \"\")\n")
endif()
if(NGEMB_CONSUMER STREQUAL "cuda")
  if(NGEMB_CUDA_COMPILER)
    file(APPEND "${init_cache}" "set(CMAKE_CUDA_COMPILER \"${NGEMB_CUDA_COMPILER}\" CACHE FILEPATH \"\")\n")
  endif()
  if(NGEMB_CUDA_ARCHITECTURES)
    string(REPLACE "|" ";" cuda_architectures "${NGEMB_CUDA_ARCHITECTURES}")
    file(APPEND "${init_cache}" "set(CMAKE_CUDA_ARCHITECTURES \"${cuda_architectures}\" CACHE STRING \"\")\n")
  endif()
endif()
if(NGEMB_MAKE_PROGRAM)
  file(APPEND "${init_cache}" "set(CMAKE_MAKE_PROGRAM \"${NGEMB_MAKE_PROGRAM}\" CACHE FILEPATH \"\")\n")
endif()

set(configure_args -S "${consumer_source}" -B "${consumer_build}" -C "${init_cache}"
                   "-DNGEMB_EXPECTED_VERSION=${NGEMB_VERSION}")
if(NGEMB_GENERATOR)
  list(APPEND configure_args -G "${NGEMB_GENERATOR}")
endif()

if(installed_package)
  set(install_args --install "${NGEMB_BINARY_DIR}" --prefix "${prefix}")
  if(NGEMB_CONFIG)
    list(APPEND install_args --config "${NGEMB_CONFIG}")
  endif()
  run_step("Install ngemb" "${CMAKE_COMMAND}" ${install_args})
  foreach(installed IN ITEMS include/ngemb/ngemb.hpp share/ngemb/ngembConfig.cmake
                             share/ngemb/ngembConfigVersion.cmake share/ngemb/ngembTargets.cmake)
    if(NOT EXISTS "${prefix}/${installed}")
      message(FATAL_ERROR "cmake --install did not produce ${prefix}/${installed}")
    endif()
  endforeach()
else()
  list(APPEND configure_args "-DNGEMB_SOURCE_DIR=${NGEMB_SOURCE_DIR}")
endif()

run_step("Configure ${NGEMB_CONSUMER} consumer" "${CMAKE_COMMAND}" ${configure_args})

if(installed_package)
  # The package must have come from the fresh install, not from anywhere else on the machine.
  file(STRINGS "${consumer_build}/CMakeCache.txt" ngemb_dir_line REGEX "^ngemb_DIR:")
  string(REGEX REPLACE "^ngemb_DIR:[A-Z]+=" "" found_dir "${ngemb_dir_line}")
  file(REAL_PATH "${prefix}/share/ngemb" expected_dir)
  if(EXISTS "${found_dir}")
    file(REAL_PATH "${found_dir}" found_dir)
  endif()
  if(NOT found_dir STREQUAL expected_dir)
    message(FATAL_ERROR "find_package(ngemb) used '${found_dir}', not the fresh install '${expected_dir}'")
  endif()
endif()

run_step("Build ${NGEMB_CONSUMER} consumer" "${CMAKE_COMMAND}" --build "${consumer_build}" --config Release)

set(executable "${consumer_bin}/consumer")
if(NOT EXISTS "${executable}" AND EXISTS "${executable}.exe")
  set(executable "${executable}.exe")
endif()
if(NOT EXISTS "${executable}")
  message(FATAL_ERROR "the ${NGEMB_CONSUMER} consumer build produced no ${consumer_bin}/consumer")
endif()
if(NGEMB_CONSUMER STREQUAL "cuda")
  set(step_allowed_results 0 77)
endif()
run_step("Run ${NGEMB_CONSUMER} consumer" "${executable}")
string(STRIP "${step_output}" step_output)
message(STATUS "${step_output}")
if(step_result EQUAL 77)
  message("no CUDA device: the cuda consumer was built but not run")
endif()
