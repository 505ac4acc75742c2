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

// A 4 x 4 byte transpose: byte j of in[i] becomes byte i of out[j ^ swap] (swap 0 or 1: the word pairs come out
// exchanged at no cost, by the last permutes' selectors). The V transpose reads four keys' words of 4 dims each and
// writes four dims' words of 4 keys each.
IOATTN_FP8_KEY_ORDER_HD void fp8_transpose_4x4(const std::uint32_t (&in)[4], std::uint32_t (&out)[4], int swap = 0) {
  const std::uint32_t lo01 = fp8_byte_perm(in[0], in[1], 0x5140), hi01 = fp8_byte_perm(in[0], in[1], 0x7362);
  const std::uint32_t lo23 = fp8_byte_perm(in[2], in[3], 0x5140), hi23 = fp8_byte_perm(in[2], in[3], 0x7362);
  const std::uint32_t even = swap ? 0x7632 : 0x5410, odd = swap ? 0x5410 : 0x7632;
  out[0] = fp8_byte_perm(lo01, lo23, even);
  out[1] = fp8_byte_perm(lo01, lo23, odd);
  out[2] = fp8_byte_perm(hi01, hi23, even);
  out[3] = fp8_byte_perm(hi01, hi23, odd);
}

// The transposing threads take 4 x 4 blocks four at a time: slot `slot` takes key block `key_block` and dim blocks
// dim_block + 8 s, s = 0..3 (a tile of `key_blocks` key blocks, a multiple of 16; the dim blocks a multiple of 32).
// The lanes are placed for the shared-memory banks, with the lanes that have bit 4 set storing their four rows in
// the order 1, 0, 3, 2 (fp8_kernel.cuh, transpose_v):
//  - reading V (128-byte swizzle), a word's bank is (dim block & 3) + 4 chunk with chunk = (dim block >> 2) ^
//    (row & 7), and row & 7 = 2 (key block & 3) + (key & 1) under fp8_physical_key;
//  - writing Vt, bank (key block & 3) + 4 ((key block >> 2) ^ (Vt row & 7)) with the 128-byte swizzle, or, for
//    64-key rows (64-byte swizzle), 16 (row & 1) + 4 ((key block >> 2) ^ ((row >> 1) & 3)) + (key block & 3).
// Lane bits x0-x4 give key block bits 0-3 = x0-x3 and dim block bits 0-2 = x4, x2, x3: every read and write of a warp
// then touches 32 distinct banks (tests/cuda/sm90_fp8_layout_test.cpp counts them). Successive 32-slot groups flip
// dim block bits 1-2, so that over four groups the bits the lanes share cover every pair, then step through the
// remaining key blocks and dim blocks (bit 5 up; bits 3-4 are the four sub-blocks).
IOATTN_FP8_KEY_ORDER_HD void fp8_transpose_quad(int slot, int key_blocks, int& key_block, int& dim_block) {
  const int lane = slot & 31, group = slot >> 5, rest = group >> 2;
  const int x2 = (lane >> 2) & 1, x3 = (lane >> 3) & 1, x4 = lane >> 4;
  key_block = (lane & 15) + 16 * (rest % (key_blocks / 16));
  dim_block = x4 + 2 * (x2 ^ (group & 1)) + 4 * (x3 ^ ((group >> 1) & 1)) + 32 * (rest / (key_blocks / 16));
}

// Byte offsets of the four words of one 4 x 4 block in one stage of V and of Vt, as cute's layouts in fp8_traits.cuh
// place them (tests/cuda/sm90_fp8_layout_test.cpp compares them), computed directly: cute's general layout
// arithmetic cost ~180 integer instructions per block, more issue slots than the consumers' softmax (SASS,
// 2026-11-21). Both buffers are 1024-byte aligned, so the swizzle of address bits is the swizzle of these offsets.
//  - Reads: V (key, dim), 128-byte swizzle, K-major: 8 x 128-byte atoms, the atom grid column-major over (keys,
//    dims / 128), the 16-byte chunk index XORed with the row & 7. Logical keys 4 key_block + i sit on physical rows
//    r0 + {0, 1, 8, 9} (fp8_physical_key).
//  - Writes: Vt (dim, key), rows of `keys` bytes; 128 keys: the 128-byte swizzle; 64 keys: the 64-byte swizzle
//    (chunk bits 4-5 XORed with (row >> 1) & 3). Word j goes to row d0 + (j ^ swap).
// Sub-block s of a quad (dims + 32 s, whose bits 5-6 are clear in d0) moves the read's chunk index by 2 s under the
// XOR swizzle, so its offsets are the first block's XOR 32 s; its Vt rows are 32 s further down, with the same
// swizzle phase: + 32 s keys.
IOATTN_FP8_KEY_ORDER_HD void fp8_block_read_offsets(int key_block, int d0, int keys, int (&offset)[4]) {
  const int r0 = ((key_block >> 2) << 4) | ((key_block & 3) << 1);
  const int base = (d0 >> 7) * keys * 128 + r0 * 128 + (d0 & 15);
  const int chunk = (d0 & 127) >> 4;
  const int even = (chunk ^ (r0 & 7)) << 4, odd = (chunk ^ ((r0 & 7) | 1)) << 4;
  offset[0] = base + even;
  offset[1] = base + 128 + odd;
  offset[2] = base + 1024 + even;
  offset[3] = base + 1152 + odd;
}
IOATTN_FP8_KEY_ORDER_HD void fp8_block_write_offsets(int key_block, int d0, int swap, int keys, int (&offset)[4]) {
  const int chunk = key_block >> 2;
  const int base = d0 * keys + ((key_block & 3) << 2);
  for (int j = 0; j < 4; ++j) {
    const int jj = j ^ swap;  // row d0 + jj
    const int swizzled = keys == 128 ? chunk ^ ((d0 & 4) | jj) : chunk ^ (((d0 >> 1) & 2) | (jj >> 1));
    offset[j] = base + jj * keys + (swizzled << 4);
  }
}
IOATTN_FP8_KEY_ORDER_HD int fp8_sub_block_read(int first_offset, int s) { return first_offset ^ (s << 5); }
IOATTN_FP8_KEY_ORDER_HD int fp8_sub_block_write(int first_offset, int s, int keys) {
  return first_offset + 32 * s * keys;
}

}  // namespace ioattn::detail::sm90
