// The FP8 forward's key order (src/cuda/sm90/fp8_key_order.hpp) against cute's own register layouts of the wgmma
// S accumulator (CLayout_64xN) and of an 8-bit A operand from registers (ALayout_64x32): for every thread and
// every A slot, the accumulator value p_as_a_operand puts there must be on the same row, at the physical key that
// fp8_physical_key gives for the slot's logical key; the map must permute each 32-key slice; and the V transpose
// must move every byte where it belongs. Host code only: it runs in CI, without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <type_traits>
#include <vector>

#include <cutlass/numeric_types.h>

#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>

#include "cuda/sm90/fp8_key_order.hpp"

namespace {

using ioattn::detail::sm90::fp8_physical_key;

TEST(Sm90Fp8KeyOrder, AccumulatorValuesLandInTheirASlots) {
  using ALayout = cute::SM90::GMMA::ALayout_64x32;        // (thread, value) -> m + 64 k in a 64 x 32 tile
  using CLayout = cute::SM90::GMMA::CLayout_64xN<256>;    // (thread, value) -> m + 64 n in a 64 x 256 tile
  int checked = 0;
  for (int t = 0; t < 128; ++t) {
    for (int s = 0; s < 8; ++s) {  // the 32-key k-slices of up to 256 keys
      for (int v0 = 0; v0 < 4; ++v0) {
        for (int v1 = 0; v1 < 2; ++v1) {
          for (int v2 = 0; v2 < 2; ++v2) {
            const int a = ALayout{}(t, cute::make_coord(v0, v1, v2));
            const int a_row = a % 64, a_key = a / 64 + 32 * s;
            const int c = CLayout{}(t, cute::make_coord(v0 & 1, v1, 4 * s + 2 * v2 + (v0 >> 1)));
            const int c_row = c % 64, c_key = c / 64;
            ASSERT_EQ(a_row, c_row) << "thread " << t << " slice " << s << " slot " << v0 << v1 << v2;
            ASSERT_EQ(c_key, fp8_physical_key(a_key)) << "thread " << t << " slice " << s << " slot " << v0 << v1 << v2;
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 128 * 8 * 16);
}

// The byte permute after ldmatrix .trans: a = (key 0: dims 0, 1; key 1: dims 0, 1), b the same of keys 8 and 9;
// even = dim 0 of keys 0, 1, 8, 9; odd = dim 1 of them.
TEST(Sm90Fp8KeyOrder, PairBytesSplitsEvenAndOddDims) {
  using ioattn::detail::sm90::fp8_pair_bytes;
  const std::uint32_t a = 0x11100100u, b = 0x91908180u;  // byte = 0x<key><dim>: keys 0, 1 in a; 8, 9 in b
  std::uint32_t even = 0, odd = 0;
  fp8_pair_bytes(a, b, even, odd);
  EXPECT_EQ(even, 0x90801000u);
  EXPECT_EQ(odd, 0x91811101u);
}

TEST(Sm90Fp8KeyOrder, PermutesEachSlice) {
  for (int s = 0; s < 8; ++s) {
    std::vector<int> seen(32, 0);
    for (int l = 0; l < 32; ++l) {
      const int key = fp8_physical_key(32 * s + l) - 32 * s;
      ASSERT_TRUE(key >= 0 && key < 32) << l;
      ++seen[key];
    }
    for (int k = 0; k < 32; ++k) EXPECT_EQ(seen[k], 1) << "key " << k << " of slice " << s;
  }
}

// The V transpose (fp8_kernel.cuh, transpose_v) emulated on the kernel's shared-memory layouts (cute's, as in
// fp8_traits.cuh: V (key, dim) with the 128-byte swizzle; Vt (dim, key) with the 128-byte swizzle at 128-key tiles
// and the 64-byte one at 64): every unit's ldmatrix.x4.trans, byte permutes and stmatrix.x4, with the offsets of
// fp8_key_order.hpp. Two passes tag each V byte with its key, then with its dim. Every Vt byte must be written once,
// with the byte of V at (fp8_physical_key of its logical key, its dim); ldmatrix's reads must be free of bank
// conflicts and stmatrix's stores at most 2-way.
template <int kDim, int kBlockN>
void expect_transpose_moves_every_byte() {
  using namespace cute;
  using namespace ioattn::detail::sm90;
  using Element = cutlass::float_e4m3_t;
  using Atom = SM90::GMMA::Layout_K_SW128_Atom<Element>;
  using AtomVt = std::conditional_t<kBlockN % 128 == 0, Atom, SM90::GMMA::Layout_K_SW64_Atom<Element>>;
  const auto layout_v = tile_to_shape(Atom{}, Shape<Int<kBlockN>, Int<kDim>>{});
  const auto layout_vt = tile_to_shape(AtomVt{}, Shape<Int<kDim>, Int<kBlockN>>{});
  constexpr int kBytes = kBlockN * kDim, kUnits = kBlockN / 16 * (kDim / 32);
  // The most 4-byte words of one phase (8 rows of 16 bytes) that share a bank (1: conflict-free).
  auto ways = [](const int (&rows)[8]) {
    std::map<int, std::set<int>> words_of_bank;
    for (int row : rows) {
      for (int w = 0; w < 4; ++w) words_of_bank[(row / 4 + w) % 32].insert(row / 4 + w);
    }
    std::size_t most = 0;
    for (const auto& [bank, words] : words_of_bank) most = std::max(most, words.size());
    return int(most);
  };
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<std::uint8_t> v(kBytes), vt(kBytes, 0);
    std::vector<int> written(kBytes, 0);
    for (int key = 0; key < kBlockN; ++key) {
      for (int d = 0; d < kDim; ++d) v[layout_v(key, d)] = std::uint8_t(pass == 0 ? key : d);
    }
    for (int unit = 0; unit < kUnits; ++unit) {
      int read[4][8], write[4][8];  // the row offsets the lanes give, per matrix and row
      for (int lane = 0; lane < 32; ++lane) {
        const Fp8TransposeLane l = fp8_transpose_lane(lane, kBlockN);
        read[lane / 8][lane % 8] = fp8_unit_read_offset(l, unit, kBlockN);
        write[lane / 8][lane % 8] = fp8_unit_write_offset(l, unit, kBlockN);
      }
      for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(ways(read[i]), 1) << "ldmatrix phase " << i << " of unit " << unit;
        EXPECT_LE(ways(write[i]), 2) << "stmatrix phase " << i << " of unit " << unit;
      }
      for (int lane = 0; lane < 32; ++lane) {
        const int q = lane % 4, c = lane / 4;
        std::uint32_t r[4], out[4];
        for (int i = 0; i < 4; ++i) {  // ldmatrix .trans: column c (16-bit) of rows 2q, 2q + 1 of matrix i
          const int lo = read[i][2 * q] + 2 * c, hi = read[i][2 * q + 1] + 2 * c;
          r[i] = std::uint32_t(v[lo]) | std::uint32_t(v[lo + 1]) << 8 | std::uint32_t(v[hi]) << 16 |
                 std::uint32_t(v[hi + 1]) << 24;
        }
        fp8_pair_bytes(r[0], r[1], out[0], out[1]);
        fp8_pair_bytes(r[2], r[3], out[2], out[3]);
        for (int i = 0; i < 4; ++i) {  // stmatrix: bytes 4q..4q + 3 of row c of matrix i
          for (int b = 0; b < 4; ++b) {
            const int at = write[i][c] + 4 * q + b;
            ASSERT_TRUE(at >= 0 && at < kBytes) << at;
            vt[at] = std::uint8_t(out[i] >> (8 * b));
            ++written[at];
          }
        }
      }
    }
    for (int d = 0; d < kDim; ++d) {
      for (int l = 0; l < kBlockN; ++l) {
        const int at = layout_vt(d, l);
        EXPECT_EQ(written[at], 1) << "Vt (" << d << ", " << l << ")";
        const int want = pass == 0 ? fp8_physical_key(l) : d;
        EXPECT_EQ(int(vt[at]), want) << "Vt (" << d << ", " << l << "), pass " << pass;
      }
    }
  }
}

TEST(Sm90Fp8KeyOrder, TransposeMovesEveryByteD128) { expect_transpose_moves_every_byte<128, 128>(); }
TEST(Sm90Fp8KeyOrder, TransposeMovesEveryByteD256) { expect_transpose_moves_every_byte<256, 64>(); }

}  // namespace
