// ioattn core: what lets one header serve the CPU and CUDA backends alike.
#pragma once

#if defined(__CUDACC__)
#define IOATTN_HD __host__ __device__ __forceinline__
#else
#define IOATTN_HD inline
#endif
