// host_device.h: LOOM_HD marks a function that both compilers build, g++ for the
// CPU and nvcc for the GPU, so the two devices run the same source. Under nvcc
// it is __host__ __device__; elsewhere a plain inline function.
#pragma once

#ifdef __CUDACC__
#define LOOM_HD __host__ __device__ __forceinline__
#else
#define LOOM_HD inline
#endif
