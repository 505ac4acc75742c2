// ioattn sm90: register-tile helpers for wgmma accumulators.
//
// A wgmma accumulator fragment (per thread, one warpgroup's 64 x N tile) is laid out ((2, 2, N / 8), MMA_M, MMA_N):
// two adjacent columns, two rows 8 apart, then one pair per 8-column group. Each row is shared by the 4 threads of
// a quad, as on sm80, so the quad reductions of sm80/common/tile_ops.cuh apply unchanged.
#pragma once

#include <type_traits>

#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>

namespace ioattn::detail::sm90 {

using namespace cute;

// ((2, 2, V), MMA_M, MMA_N) -> ((2, MMA_M), (2, V, MMA_N)): the accumulator indexed by (row, column).
template <class Layout>
__forceinline__ __device__ auto gmma_rowcol_layout(Layout acc) {
  static_assert(decltype(rank<0>(acc))::value == 3);
  static_assert(decltype(rank(acc))::value == 3);
  return make_layout(make_layout(get<0, 1>(acc), get<1>(acc)),
                     make_layout(get<0, 0>(acc), get<0, 2>(acc), get<2>(acc)));
}

// ((2, 2, V), MMA_M, MMA_N) -> ((2, 2, 2), MMA_M, V / 2 * MMA_N): the S accumulator re-read as the register A
// operand of the next wgmma (16-bit types). A k-slice of 16 is two 8-column groups of the accumulator, in the same
// per-thread order, so P feeds P V without a trip through shared memory.
template <class Layout>
__forceinline__ __device__ auto gmma_acc_as_a_layout(Layout acc) {
  static_assert(decltype(rank<0>(acc))::value == 3);
  static_assert(decltype(size<0, 2>(acc))::value % 2 == 0);
  auto v = logical_divide(get<0, 2>(acc), Tile<_2>{});  // ((2, V / 2))
  return make_layout(make_layout(get<0, 0>(acc), get<0, 1>(acc), get<0, 0>(v)), get<1>(acc),
                     coalesce(make_layout(get<0, 1>(v), get<2>(acc))));
}

// tC (+)= A B over every k-slice, issued as one wgmma batch; returns without waiting (warpgroup_wait<0> does).
// kZeroInit: the first slice overwrites tC instead of adding to it.
template <bool kZeroInit, class TiledMma, class TA, class TB, class TC>
__forceinline__ __device__ void wgmma_gemm(TiledMma& mma, TA& tA, TB const& tB, TC& tC) {
  // Operands in shared memory arrive as wgmma descriptors (not registers to fence); P arrives as 16-bit values.
  constexpr bool kARegisters = !std::is_same_v<typename TA::iterator, GMMA::DescriptorIterator>;
  if constexpr (kARegisters) warpgroup_fence_operand(tA);
  warpgroup_fence_operand(tC);
  warpgroup_arrive();
  if constexpr (kZeroInit) mma.accumulate_ = GMMA::ScaleOut::Zero;
  CUTE_UNROLL
  for (int k = 0; k < size<2>(tA); ++k) {
    cute::gemm(mma, tA(_, _, k), tB(_, _, k), tC);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  warpgroup_fence_operand(tC);
  if constexpr (kARegisters) warpgroup_fence_operand(tA);
}

}  // namespace ioattn::detail::sm90
