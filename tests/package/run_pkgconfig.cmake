# Builds and runs the package consumer (consumer.cpp) without CMake, from pkg-config's flags for an installed ngemb
# (cmake -P). Every step must succeed; otherwise this script stops with message(FATAL_ERROR) and the step's output.
#
#   cmake -DNGEMB_SOURCE_DIR=<ngemb source tree> -DNGEMB_BINARY_DIR=<ngemb build tree>
#         -DNGEMB_CXX_COMPILER=<path> -DNGEMB_PKG_CONFIG=<pkg-config, empty when not found>
#         [-DNGEMB_CONFIG=<config>] [-DNGEMB_VERSION=<expected --modversion>]
#         -P run_pkgconfig.cmake
#
# `cmake --install <build> --prefix <scratch>/prefix`, then, with that prefix's pkgconfig folder first in
# PKG_CONFIG_PATH: `<compiler> -std=c++20 $(pkg-config --cflags ngemb) consumer.cpp $(pkg-config --libs ngemb)`.
# Without pkg-config it prints "pkg-config not found" and succeeds; ctest reports that as skipped.
cmake_minimum_required(VERSION 3.25)

foreach(required IN ITEMS NGEMB_SOURCE_DIR NGEMB_BINARY_DIR NGEMB_CXX_COMPILER)
  if(NOT DEFINED ${required} OR "${${required}}" STREQUAL "")
    message(FATAL_ERROR "run_pkgconfig.cmake: -D${required}=... is required")
  endif()
endforeach()
if(NOT NGEMB_PKG_CONFIG)
  message("pkg-config not found: the pkg-config consumer is skipped")
  return()
endif()

set(scratch "${NGEMB_BINARY_DIR}/package-tests/pkgconfig")
set(prefix "${scratch}/prefix")
file(REMOVE_RECURSE "${scratch}")
file(MAKE_DIRECTORY "${scratch}")

# Runs one step; on failure stops with its command line and output, otherwise leaves its stdout in step_output.
function(run_step description)
  string(REPLACE ";" " " command_line "${ARGN}")
  message(STATUS "${description}: ${command_line}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE errors)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${description} failed (${result}):\n  ${command_line}\n${output}${errors}")
  endif()
  string(STRIP "${output}" output)
  set(step_output "${output}" PARENT_SCOPE)
endfunction()

set(install_args --install "${NGEMB_BINARY_DIR}" --prefix "${prefix}")
if(NGEMB_CONFIG)
  list(APPEND install_args --config "${NGEMB_CONFIG}")
endif()
run_step("Install ngemb" "${CMAKE_COMMAND}" ${install_args})
file(GLOB pc_files "${prefix}/*/pkgconfig/ngemb.pc" "${prefix}/*/*/pkgconfig/ngemb.pc")
list(LENGTH pc_files pc_count)
if(NOT pc_count EQUAL 1)
  message(FATAL_ERROR "cmake --install should produce one ngemb.pc under ${prefix}, found: ${pc_files}")
endif()
get_filename_component(pc_dir "${pc_files}" DIRECTORY)

# Only the fresh install's ngemb.pc may answer; the system's own folders still provide eigen3.pc.
set(pkg_config "${CMAKE_COMMAND}" -E env "PKG_CONFIG_PATH=${pc_dir}" "${NGEMB_PKG_CONFIG}")
run_step("pkg-config --modversion" ${pkg_config} --modversion ngemb)
if(NGEMB_VERSION AND NOT step_output STREQUAL NGEMB_VERSION)
  message(FATAL_ERROR "pkg-config --modversion ngemb gave '${step_output}', expected '${NGEMB_VERSION}'")
endif()
run_step("pkg-config --variable=includedir" ${pkg_config} --variable=includedir ngemb)
file(REAL_PATH "${step_output}" includedir)
file(REAL_PATH "${prefix}/include" expected_includedir)
if(NOT includedir STREQUAL expected_includedir)
  message(FATAL_ERROR "ngemb.pc's includedir is '${includedir}', not the fresh install's '${expected_includedir}'")
endif()
run_step("pkg-config --cflags" ${pkg_config} --cflags ngemb)
separate_arguments(cflags UNIX_COMMAND "${step_output}")
run_step("pkg-config --libs" ${pkg_config} --libs ngemb)
separate_arguments(libs UNIX_COMMAND "${step_output}")

# The headers must come from the install, not the source tree: nothing here names it.
file(MAKE_DIRECTORY "${scratch}/bin")
set(executable "${scratch}/bin/consumer")
run_step("Compile the pkg-config consumer" "${NGEMB_CXX_COMPILER}" -std=c++20 -O1 ${cflags}
         "-DNGEMB_CONSUMER=\"pkg-config\"" "-DNGEMB_EXPECTED_VERSION=\"${NGEMB_VERSION}\""
         "${CMAKE_CURRENT_LIST_DIR}/consumer.cpp" -o "${executable}" ${libs})
run_step("Run the pkg-config consumer" "${executable}")
message(STATUS "${step_output}")
