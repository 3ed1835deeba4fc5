#pragma once
// NGEMB_HD marks the element operations shared by host and device code: under nvcc they are compiled for both,
// under a host compiler the macro vanishes so the same headers stay plain C++20.
#if defined(__CUDACC__)
#define NGEMB_HD __host__ __device__
#define NGEMB_DEVICE_ENABLED 1
#else
#define NGEMB_HD
#define NGEMB_DEVICE_ENABLED 0
#endif

// True only while nvcc compiles the device side of a translation unit.
#if defined(__CUDA_ARCH__)
#define NGEMB_IN_DEVICE_CODE 1
#else
#define NGEMB_IN_DEVICE_CODE 0
#endif
