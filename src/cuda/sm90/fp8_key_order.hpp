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

// The V transpose (fp8_kernel.cuh, transpose_v) moves units of 16 keys x 32 dims, one unit per warp and step: one
// ldmatrix.x4.trans, two pairs of byte permutes, one stmatrix.x4. ldmatrix .trans reads 16-bit elements, two dims
// of one key: its four 8 x 8 matrices are keys (8 apart) x 16 dims (two matrices per 16-dim chunk), and it gives
// lane t, of matrix i, column t / 4 (dims 2c, 2c + 1) of rows 2q, 2q + 1 (q = t % 4): bytes (key 2q: dim 2c, 2c + 1;
// key 2q + 1: dim 2c, 2c + 1). Permuting the bytes of the matrices of keys 0-7 and 8-15 together (fp8_pair_bytes)
// leaves the lane dim 2c (even) and dim 2c + 1 (odd) of physical keys 2q, 2q + 1, 2q + 8, 2q + 9: logical keys 4q
// to 4q + 3 under fp8_physical_key, which is the layout stmatrix stores from (lane t holds bytes 4q..4q + 3 of row
// t / 4). So the stored matrices are the even and the odd dims of each 16-dim chunk, rows of Vt.
//
// Byte offsets, as cute's layouts in fp8_traits.cuh place them (tests/cuda/sm90_fp8_layout_test.cpp emulates the
// instructions on them): V (key, dim) with the 128-byte swizzle, K-major, the atom grid column-major over (keys,
// dims / 128): (dim / 128) keys 128 + key 128 + ((dim % 128 / 16) ^ (key % 8)) 16; Vt (dim, logical key), rows of
// `keys` bytes: 128 keys: dim 128 + ((key / 16) ^ (dim % 8)) 16; 64 keys (64-byte swizzle): dim 64 + ((key / 16) ^
// ((dim / 2) % 4)) 16. Both buffers are 1024-byte aligned, so the swizzle of the offsets is that of the addresses.
// A lane's row of a unit keeps its swizzle phase in every unit (units are 16 keys and 32 dims apart), so each
// offset is a per-lane base moved by the unit: an add and an XOR.
struct Fp8TransposeLane {
  int read;   // the lane's ldmatrix row in unit 0: matrix lane / 8 (keys + 8 (i & 1), dims + 16 (i / 2)), row lane % 8
  int write;  // its stmatrix row in unit 0: matrix i = lane / 8 holds dims 16 (i / 2) + 2 r + (i & 1), r = lane % 8
};

IOATTN_FP8_KEY_ORDER_HD Fp8TransposeLane fp8_transpose_lane(int lane, int keys) {
  const int i = lane >> 3, r = lane & 7;
  Fp8TransposeLane l;
  l.read = (8 * (i & 1) + r) * 128 + (((i >> 1) ^ r) << 4);
  const int dim = 16 * (i >> 1) + 2 * r + (i & 1);
  l.write = keys == 128 ? dim * 128 + ((dim & 7) << 4) : dim * 64 + (((dim >> 1) & 3) << 4);
  return l;
}

// Unit u: key group u % (keys / 16), dim group u / (keys / 16).
IOATTN_FP8_KEY_ORDER_HD int fp8_unit_read_offset(const Fp8TransposeLane& l, int unit, int keys) {
  const int key_group = unit % (keys / 16), dim_group = unit / (keys / 16);
  return (l.read + key_group * 2048 + (dim_group >> 2) * keys * 128) ^ ((dim_group & 3) << 5);
}
IOATTN_FP8_KEY_ORDER_HD int fp8_unit_write_offset(const Fp8TransposeLane& l, int unit, int keys) {
  const int key_group = unit % (keys / 16), dim_group = unit / (keys / 16);
  return (l.write + dim_group * 32 * keys) ^ (key_group << 4);
}

// Two ldmatrix .trans registers of the same dims, keys 2q, 2q + 1 (a) and 2q + 8, 2q + 9 (b), to the even dim's
// four keys and the odd dim's.
IOATTN_FP8_KEY_ORDER_HD void fp8_pair_bytes(std::uint32_t a, std::uint32_t b, std::uint32_t& even, std::uint32_t& odd) {
  even = fp8_byte_perm(a, b, 0x6420);
  odd = fp8_byte_perm(a, b, 0x7531);
}

}  // namespace ioattn::detail::sm90
