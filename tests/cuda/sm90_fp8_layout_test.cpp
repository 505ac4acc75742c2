// The FP8 forward's key order (src/cuda/sm90/fp8_key_order.hpp) against cute's own register layouts of the wgmma
// S accumulator (CLayout_64xN) and of an 8-bit A operand from registers (ALayout_64x32): for every thread and
// every A slot, the accumulator value p_as_a_operand puts there must be on the same row, at the physical key that
// fp8_physical_key gives for the slot's logical key; the map must permute each 32-key slice; and the V transpose's
// byte shuffle must move every byte where it belongs. Host code only: it runs in CI, without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

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

// The transposing warps' byte shuffle: byte j of word i to byte i of word j, for every byte position.
TEST(Sm90Fp8KeyOrder, ByteTransposeMovesEveryByte) {
  using ioattn::detail::sm90::fp8_transpose_4x4;
  const std::uint32_t in[4] = {0x03020100u, 0x13121110u, 0x23222120u, 0x33323130u};  // byte j of word i: 0x<i><j>
  std::uint32_t out[4];
  fp8_transpose_4x4(in, out);
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ((out[j] >> (8 * i)) & 0xff, std::uint32_t(16 * i + j)) << i << ", " << j;
  }
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

}  // namespace
