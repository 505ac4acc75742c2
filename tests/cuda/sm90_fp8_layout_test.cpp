// The FP8 forward's key order (src/cuda/sm90/fp8_key_order.hpp) against cute's own register layouts of the wgmma
// S accumulator (CLayout_64xN) and of an 8-bit A operand from registers (ALayout_64x32): for every thread and
// every A slot, the accumulator value p_as_a_operand puts there must be on the same row, at the physical key that
// fp8_physical_key gives for the slot's logical key; the map must permute each 32-key slice; and the V transpose's
// byte shuffle must move every byte where it belongs. Host code only: it runs in CI, without a GPU.
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

// The transposing warps' byte shuffle: byte j of word i to byte i of word j (of word j ^ 1 when swapped), for every
// byte position.
TEST(Sm90Fp8KeyOrder, ByteTransposeMovesEveryByte) {
  using ioattn::detail::sm90::fp8_transpose_4x4;
  const std::uint32_t in[4] = {0x03020100u, 0x13121110u, 0x23222120u, 0x33323130u};  // byte j of word i: 0x<i><j>
  std::uint32_t out[4];
  fp8_transpose_4x4(in, out);
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ((out[j] >> (8 * i)) & 0xff, std::uint32_t(16 * i + j)) << i << ", " << j;
  }
  fp8_transpose_4x4(in, out, 1);  // the word pairs exchanged
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      EXPECT_EQ((out[j ^ 1] >> (8 * i)) & 0xff, std::uint32_t(16 * i + j)) << "swapped " << i << ", " << j;
    }
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

// The V transpose's block assignment (fp8_transpose_quad and its four sub-blocks) on the kernel's shared-memory
// layouts (as in fp8_traits.cuh: V (key, dim) with the 128-byte swizzle, Vt (dim, key) with the 128-byte swizzle at
// 128-key tiles and the 64-byte one at 64): every 4 x 4 block is taken exactly once; the offsets the kernel computes
// directly (fp8_block_read_offsets / fp8_block_write_offsets and the sub-block steps) are cute's; and each of a warp's
// four reads and four writes per sub-block (lanes with bit 4 set writing rows in the order 1, 0, 3, 2) touches 32
// distinct banks.
template <int kDim, int kBlockN>
void expect_conflict_free_transpose() {
  using namespace cute;
  using namespace ioattn::detail::sm90;
  using Element = cutlass::float_e4m3_t;
  using Atom = SM90::GMMA::Layout_K_SW128_Atom<Element>;
  using AtomVt = std::conditional_t<kBlockN % 128 == 0, Atom, SM90::GMMA::Layout_K_SW64_Atom<Element>>;
  const auto layout_v = tile_to_shape(Atom{}, Shape<Int<kBlockN>, Int<kDim>>{});
  const auto layout_vt = tile_to_shape(AtomVt{}, Shape<Int<kDim>, Int<kBlockN>>{});
  constexpr int kKeyBlocks = kBlockN / 4, kBlocks = kKeyBlocks * (kDim / 4);
  // The most 4-byte words of one instruction that share a bank (1: conflict-free).
  auto ways = [](const std::vector<int>& byte_offsets) {
    std::map<int, std::set<int>> words_of_bank;
    for (int b : byte_offsets) words_of_bank[b / 4 % 32].insert(b / 4);
    std::size_t most = 0;
    for (const auto& [bank, words] : words_of_bank) most = std::max(most, words.size());
    return int(most);
  };
  std::vector<int> taken(kBlocks, 0);
  for (int group = 0; group < kBlocks / 4 / 32; ++group) {
    int key_block[32], dim_block[32], read[32][4], write[32][4];
    for (int lane = 0; lane < 32; ++lane) {
      fp8_transpose_quad(32 * group + lane, kKeyBlocks, key_block[lane], dim_block[lane]);
      fp8_block_read_offsets(key_block[lane], 4 * dim_block[lane], kBlockN, read[lane]);
      fp8_block_write_offsets(key_block[lane], 4 * dim_block[lane], (lane >> 4) & 1, kBlockN, write[lane]);
    }
    for (int s = 0; s < 4; ++s) {
      for (int lane = 0; lane < 32; ++lane) {
        const int kb = key_block[lane], db = dim_block[lane] + 8 * s, swap = (lane >> 4) & 1;
        ASSERT_TRUE(kb >= 0 && kb < kKeyBlocks && db >= 0 && db < kDim / 4) << kb << ", " << db;
        ++taken[db * kKeyBlocks + kb];
        for (int i = 0; i < 4; ++i) {
          EXPECT_EQ(fp8_sub_block_read(read[lane][i], s), int(layout_v(fp8_physical_key(4 * kb + i), 4 * db)))
              << "read " << i << " of lane " << lane << ", group " << group << ", sub-block " << s;
          EXPECT_EQ(fp8_sub_block_write(write[lane][i], s, kBlockN), int(layout_vt(4 * db + (i ^ swap), 4 * kb)))
              << "write " << i << " of lane " << lane << ", group " << group << ", sub-block " << s;
        }
      }
      for (int i = 0; i < 4; ++i) {
        std::vector<int> reads, writes;
        for (int lane = 0; lane < 32; ++lane) {
          reads.push_back(fp8_sub_block_read(read[lane][i], s));
          writes.push_back(fp8_sub_block_write(write[lane][i], s, kBlockN));
        }
        EXPECT_EQ(ways(reads), 1) << "read " << i << " of group " << group << ", sub-block " << s;
        EXPECT_EQ(ways(writes), 1) << "write " << i << " of group " << group << ", sub-block " << s;
      }
    }
  }
  for (int blk = 0; blk < kBlocks; ++blk) EXPECT_EQ(taken[blk], 1) << "block " << blk;
}

TEST(Sm90Fp8KeyOrder, TransposeTakesEveryBlockOnceWithoutBankConflictsD128) {
  expect_conflict_free_transpose<128, 128>();
}
TEST(Sm90Fp8KeyOrder, TransposeTakesEveryBlockOnceWithoutBankConflictsD256) {
  expect_conflict_free_transpose<256, 64>();
}

}  // namespace
