// ioattn sm80 forward: tile shapes, shared-memory layouts and copy atoms for one (dtype, head dims) instantiation.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

namespace ioattn::detail::sm80 {

using namespace cute;

// kBlockM query rows x kBlockN keys per tile; kNWarps warps split the query rows (16 rows per warp per MMA step).
template <class Element_, int kDimQK_, int kDimV_, int kBlockM_, int kBlockN_, int kNWarps_>
struct ForwardTraits {
  using Element = Element_;
  static constexpr int kDimQK = kDimQK_;
  static constexpr int kDimV = kDimV_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kDimQK % 32 == 0 && kDimV % 32 == 0, "head dims must be multiples of 32");
  static_assert(kDimV <= kDimQK, "the output tile reuses the query tile's shared memory");
  static_assert(kBlockM % (16 * kNWarps) == 0);

  using MmaAtom = std::conditional_t<std::is_same_v<Element, cutlass::half_t>,
                                     MMA_Atom<SM80_16x8x16_F32F16F16F32_TN>, MMA_Atom<SM80_16x8x16_F32BF16BF16F32_TN>>;
  // Warps tile M only: each warp owns whole query rows, so row statistics never cross warps.
  using TiledMma = TiledMMA<MmaAtom, Layout<Shape<Int<kNWarps>, _1, _1>>, Tile<Int<16 * kNWarps>, _16, _16>>;

  // Shared tiles are rows of kSmemCols elements (128 bytes for 64 columns) swizzled so that both the 16-byte
  // cp.async writes and the ldmatrix reads of 8 rows hit 8 distinct bank groups.
  template <int kDim>
  static constexpr int kSmemCols = kDim % 64 == 0 ? 64 : 32;
  template <int kDim>
  using SmemAtom = decltype(composition(Swizzle<kSmemCols<kDim> == 64 ? 3 : 2, 3, 3>{},
                                        Layout<Shape<_8, Int<kSmemCols<kDim>>>, Stride<Int<kSmemCols<kDim>>, _1>>{}));

  using SmemLayoutQ = decltype(tile_to_shape(SmemAtom<kDimQK>{}, Shape<Int<kBlockM>, Int<kDimQK>>{}));
  using SmemLayoutK = decltype(tile_to_shape(SmemAtom<kDimQK>{}, Shape<Int<kBlockN>, Int<kDimQK>>{}));
  using SmemLayoutV = decltype(tile_to_shape(SmemAtom<kDimV>{}, Shape<Int<kBlockN>, Int<kDimV>>{}));
  // V read as (kDimV, kBlockN): the B operand of P.V, fed by transposing ldmatrix.
  using SmemLayoutVt =
      decltype(composition(SmemLayoutV{}, make_layout(Shape<Int<kDimV>, Int<kBlockN>>{}, GenRowMajor{})));
  using SmemLayoutVtNoSwizzle = decltype(get_nonswizzle_portion(SmemLayoutVt{}));
  using SmemLayoutO = decltype(tile_to_shape(SmemAtom<kDimV>{}, Shape<Int<kBlockM>, Int<kDimV>>{}));

  using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomTransposed = Copy_Atom<SM75_U16x8_LDSM_T, Element>;
  using SmemCopyAtomO = Copy_Atom<AutoVectorizingCopyWithAssumedAlignment<128>, Element>;

  // Global <-> shared: 16-byte vectors, a row of kSmemCols elements per kSmemCols/8 threads.
  static constexpr int kVec = 8;
  template <int kDim>
  using GmemThreadLayout = Layout<Shape<Int<kNThreads / (kSmemCols<kDim> / kVec)>, Int<kSmemCols<kDim> / kVec>>,
                                  Stride<Int<kSmemCols<kDim> / kVec>, _1>>;
  template <int kDim>
  using GmemCopyIn = decltype(make_tiled_copy(Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>, Element>{},
                                              GmemThreadLayout<kDim>{}, Layout<Shape<_1, Int<kVec>>>{}));
  using GmemCopyQK = GmemCopyIn<kDimQK>;
  using GmemCopyV = GmemCopyIn<kDimV>;
  using GmemCopyO = decltype(make_tiled_copy(Copy_Atom<AutoVectorizingCopyWithAssumedAlignment<128>, Element>{},
                                             GmemThreadLayout<kDimV>{}, Layout<Shape<_1, Int<kVec>>>{}));

  static constexpr int kSmemBytes =
      int(sizeof(Element)) * (int(cosize(SmemLayoutQ{})) + int(cosize(SmemLayoutK{})) + int(cosize(SmemLayoutV{})));
};

}  // namespace ioattn::detail::sm80
