// ioattn sm90 FP8 forward: the key order of Vt and of P's A operand (fp8_kernel.cuh), for host and device code.
//
// cute's ALayout_64x32 gives thread t (lane % 4) of a quad the A values (v0, v1, v2) at row +8 v1, logical key
// 16 v2 + 4 t + v0 of a 32-key k-slice; the S accumulator (CLayout_64xN) gives it the values (c0, c1, c) at row
// +8 c1, key 8 c + 2 t + c0. Putting accumulator value (v0 & 1, v1, 2 v2 + (v0 >> 1)) of the k-slice in A slot
// (v0, v1, v2) keeps every value in its thread; that slot then holds physical key 16 v2 + 8 (v0 >> 1) + 2 t +
// (v0 & 1), which is this map of its logical key (tests/cuda/sm90_fp8_layout_test.cpp checks it against cute's
// layouts for every thread and slot).
#pragma once

#include <cstdint>

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

// Byte n of the result is byte (selector nibble n) of the 8 bytes {x, y} (x's bytes 0-3, y's 4-7): PTX prmt's
// default mode, which __byte_perm compiles to.
IOATTN_FP8_KEY_ORDER_HD std::uint32_t fp8_byte_perm(std::uint32_t x, std::uint32_t y, std::uint32_t selector) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, selector);
#else
  const std::uint64_t bytes = (std::uint64_t(y) << 32) | x;
  std::uint32_t out = 0;
  for (int n = 0; n < 4; ++n) out |= std::uint32_t((bytes >> (8 * ((selector >> (4 * n)) & 7))) & 0xff) << (8 * n);
  return out;
#endif
}

// A 4 x 4 byte transpose: byte j of in[i] becomes byte i of out[j]. The V transpose reads four keys' words of 4
// dims each and writes four dims' words of 4 keys each.
IOATTN_FP8_KEY_ORDER_HD void fp8_transpose_4x4(const std::uint32_t (&in)[4], std::uint32_t (&out)[4]) {
  const std::uint32_t lo01 = fp8_byte_perm(in[0], in[1], 0x5140), hi01 = fp8_byte_perm(in[0], in[1], 0x7362);
  const std::uint32_t lo23 = fp8_byte_perm(in[2], in[3], 0x5140), hi23 = fp8_byte_perm(in[2], in[3], 0x7362);
  out[0] = fp8_byte_perm(lo01, lo23, 0x5410);
  out[1] = fp8_byte_perm(lo01, lo23, 0x7632);
  out[2] = fp8_byte_perm(hi01, hi23, 0x5410);
  out[3] = fp8_byte_perm(hi01, hi23, 0x7632);
}

// The 4 x 4 block (key block, dim block) that transposing thread slot `blk` takes, for a tile of `key_blocks` key
// blocks (a multiple of 16; the dim blocks a multiple of 8). Chosen for the shared-memory banks, with the lanes that
// have bit 4 set storing their four rows in the order 1, 0, 3, 2 (fp8_kernel.cuh, transpose_v):
//  - reading V (128-byte swizzle), a word's bank is (dim block & 3) + 4 chunk with chunk = (dim block >> 2) ^
//    (row & 7), and row & 7 = 2 (key block & 3) + (key & 1) under fp8_physical_key;
//  - writing Vt, bank (key block & 3) + 4 ((key block >> 2) ^ (Vt row & 7)) with the 128-byte swizzle, or, for
//    64-key rows (64-byte swizzle), 16 (row & 1) + 4 ((key block >> 2) ^ ((row >> 1) & 3)) + (key block & 3).
// Lane bits x0-x4 give key block bits 0-3 = x0-x3 and dim block bits 0-2 = x4, x2, x3: every read and write of a warp
// then touches 32 distinct banks (tests/cuda/sm90_fp8_layout_test.cpp counts them). Successive 32-slot groups flip
// dim block bits 1-2, so that over four groups the bits the lanes share cover every pair, then step through the
// remaining key and dim blocks.
IOATTN_FP8_KEY_ORDER_HD void fp8_transpose_block(int blk, int key_blocks, int& key_block, int& dim_block) {
  const int lane = blk & 31, group = blk >> 5, rest = group >> 2;
  const int x2 = (lane >> 2) & 1, x3 = (lane >> 3) & 1, x4 = lane >> 4;
  key_block = (lane & 15) + 16 * (rest % (key_blocks / 16));
  dim_block = x4 + 2 * (x2 ^ (group & 1)) + 4 * (x3 ^ ((group >> 1) & 1)) + 8 * (rest / (key_blocks / 16));
}

}  // namespace ioattn::detail::sm90
