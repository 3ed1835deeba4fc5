# Warning and sanitizer settings for ngemb's own programs (never imposed on consumers of ngemb::ngemb).
# -Werror only where asked (CI sets NGEMB_WARNINGS_AS_ERRORS=ON in the environment): a user's newer or older
# compiler may warn where ours does not, and that must not stop their build.
set(NGEMB_WARNINGS_AS_ERRORS_DEFAULT OFF)
if(DEFINED ENV{NGEMB_WARNINGS_AS_ERRORS})
  set(NGEMB_WARNINGS_AS_ERRORS_DEFAULT "$ENV{NGEMB_WARNINGS_AS_ERRORS}")
endif()
option(NGEMB_WARNINGS_AS_ERRORS "Treat warnings in ngemb's own tests, benchmarks and examples as errors"
       ${NGEMB_WARNINGS_AS_ERRORS_DEFAULT})

set(NGEMB_HOST_WARNINGS -Wall -Wextra -Wpedantic)
set(NGEMB_DEVICE_WARNINGS -Xcompiler=-Wall,-Wextra)
if(NGEMB_WARNINGS_AS_ERRORS)
  list(APPEND NGEMB_HOST_WARNINGS -Werror)
  set(NGEMB_DEVICE_WARNINGS --Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror)
endif()
# GCC 12 reports a known false positive, maybe-uninitialized inside Eigen's AVX-512 transpose (avx512fintrin.h via
# Eigen::internal::ptranspose in gemm_pack_lhs), from code inlined out of system headers, where
# -isystem cannot silence it. It is a false positive of the compiler on Eigen's code, never about ngemb.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  list(APPEND NGEMB_HOST_WARNINGS -Wno-maybe-uninitialized)
endif()
set(NGEMB_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

# A host program with the project's warnings.
function(ngemb_host_program target)
  target_link_libraries(${target} PRIVATE ngemb::ngemb)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${NGEMB_HOST_WARNINGS}>)
endfunction()

# A device program: what ngemb::cuda carries (as a user's target gets it), and the host compiler's warnings.
function(ngemb_device_program target)
  target_link_libraries(${target} PRIVATE ngemb::cuda)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${NGEMB_DEVICE_WARNINGS}>)
endfunction()
