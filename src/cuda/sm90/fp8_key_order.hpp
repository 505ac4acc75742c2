// ioattn sm90 FP8 forward: the key order of Vt and of P's A operand (fp8_kernel.cuh), for host and device code.
//
// cute's ALayout_64x32 gives thread t (lane % 4) of a quad the A values (v0, v1, v2) at row +8 v1, logical key
// 16 v2 + 4 t + v0 of a 32-key k-slice; the S accumulator (CLayout_64xN) gives it the values (c0, c1, c) at row
// +8 c1, key 8 c + 2 t + c0. Putting accumulator value (v0 & 1, v1, 2 v2 + (v0 >> 1)) of the k-slice in A slot
// (v0, v1, v2) keeps every value in its thread; that slot then holds physical key 16 v2 + 8 (v0 >> 1) + 2 t +
// (v0 & 1), which is this map of its logical key (tests/cuda/sm90_fp8_layout_test.cpp checks it against cute's
// layouts for every thread and slot).
#pragma once

#if defined(__CUDACC__)
#define IOATTN_FP8_KEY_ORDER_HD __host__ __device__ __forceinline__
#else
#define IOATTN_FP8_KEY_ORDER_HD inline
#endif

namespace ioattn::detail::sm90 {

// The physical key that logical key l of a tile stands for; a permutation of each 32-key slice.
IOATTN_FP8_KEY_ORDER_HD int fp8_physical_key(int l) {
  return (l & ~15) + 8 * ((l >> 1) & 1) + 2 * ((l >> 2) & 3) + (l & 1);
}

}  // namespace ioattn::detail::sm90
