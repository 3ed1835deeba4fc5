# vcpkg overlay port for ngemb, a header-only C++20 library.
set(VCPKG_BUILD_TYPE release)  # header-only: no debug configuration to build

# Where the sources come from:
#   * A local checkout (development, CI, or before a release exists): set NGEMB_SOURCE_PATH to the root of an
#     ngemb source tree, either as a CMake variable in a custom/overlay triplet
#         set(NGEMB_SOURCE_PATH "/path/to/ngemb")
#     or as an environment variable. vcpkg clears most of the environment before running a portfile (Windows),
#     so for the environment form also list it in VCPKG_KEEP_ENV_VARS, or in the triplet's VCPKG_ENV_PASSTHROUGH:
#         NGEMB_SOURCE_PATH=/path/to/ngemb VCPKG_KEEP_ENV_VARS=NGEMB_SOURCE_PATH \
#             vcpkg install ngemb --overlay-ports=/path/to/ngemb/ports
#     vcpkg does not hash a local tree into the package ABI, so after changing the checkout rebuild with
#     `vcpkg remove ngemb` (or --no-binarycaching) before installing again.
#   * A GitHub release: leave NGEMB_SOURCE_PATH unset. The tag v${VERSION} is downloaded and checked against
#     NGEMB_RELEASE_SHA512 below.
#     >>> RELEASE TODO: when tagging v${VERSION}, fill NGEMB_RELEASE_SHA512 with the archive's hash:
#     >>>   curl -L https://github.com/ngemb/ngemb/archive/v${VERSION}.tar.gz -o ngemb.tar.gz && vcpkg hash ngemb.tar.gz
#     >>> (`sha512sum ngemb.tar.gz` gives the same digits). Until then this path stops with an explanation.
set(NGEMB_RELEASE_SHA512 "")  # RELEASE TODO: SHA512 of https://github.com/ngemb/ngemb/archive/v${VERSION}.tar.gz

if(NOT DEFINED NGEMB_SOURCE_PATH AND DEFINED ENV{NGEMB_SOURCE_PATH})
  set(NGEMB_SOURCE_PATH "$ENV{NGEMB_SOURCE_PATH}")
endif()

if(NGEMB_SOURCE_PATH)
  if(NOT EXISTS "${NGEMB_SOURCE_PATH}/CMakeLists.txt")
    message(FATAL_ERROR "NGEMB_SOURCE_PATH='${NGEMB_SOURCE_PATH}' is not an ngemb source tree (no CMakeLists.txt)")
  endif()
  set(SOURCE_PATH "${NGEMB_SOURCE_PATH}")
  message(STATUS "ngemb: using the local source tree ${SOURCE_PATH}")
else()
  if(NOT NGEMB_RELEASE_SHA512)
    message(FATAL_ERROR "ngemb: no release hash yet. Set NGEMB_SOURCE_PATH to a local ngemb checkout (see the "
                        "comment at the top of ${CMAKE_CURRENT_LIST_FILE}), or fill NGEMB_RELEASE_SHA512 for "
                        "v${VERSION}.")
  endif()
  vcpkg_from_github(
    OUT_SOURCE_PATH SOURCE_PATH
    REPO ngemb/ngemb
    REF "v${VERSION}"
    SHA512 "${NGEMB_RELEASE_SHA512}"
    HEAD_REF main
  )
endif()

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    -DNGEMB_BUILD_TESTS=OFF
    -DNGEMB_BUILD_BENCHMARKS=OFF
    -DNGEMB_BUILD_EXAMPLES=OFF
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME ngemb CONFIG_PATH share/ngemb)
vcpkg_fixup_pkgconfig()  # share/pkgconfig/ngemb.pc: vcpkg's own prefix and its Requires: eigen3

# Header-only: nothing configuration-specific, and the license goes to share/ngemb/copyright instead.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug" "${CURRENT_PACKAGES_DIR}/share/doc")

vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
