# Warning and sanitizer settings for ngemb's own programs (never imposed on consumers of ngemb::ngemb).
set(NGEMB_HOST_WARNINGS -Wall -Wextra -Wpedantic -Werror)
set(NGEMB_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

# A host program with the project's warnings.
function(ngemb_host_program target)
  target_link_libraries(${target} PRIVATE ngemb::ngemb)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${NGEMB_HOST_WARNINGS}>)
endfunction()

# A device program: nvcc with the host compiler's warnings forwarded, the CUDA runtime and cuBLAS (the device GEMM).
function(ngemb_device_program target)
  target_link_libraries(${target} PRIVATE ngemb::ngemb CUDA::cudart CUDA::cublas)
  # CMake 3.25 does not know nvcc 13's language levels, so the standard is passed as a flag.
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror --expt-relaxed-constexpr>)
endfunction()
