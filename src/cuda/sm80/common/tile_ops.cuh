// ioattn sm80: register-tile operations shared by the forward and backward kernels.
//
// Conventions: an "acc" tensor is a TiledMMA C fragment for the m16n8k16 tensor-core instruction, laid out
// (MMA=4, MMA_M, MMA_N). Its rowcol view is ((2, MMA_M), (2, MMA_N)): rows then columns, so row statistics of the
// online softmax are plain loops. Each row of an m16n8 tile is spread over the 4 threads of a quad (lanes 4r..4r+3).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_conversion.h>
#include <cutlass/numeric_types.h>

namespace ioattn::detail::sm80 {

using namespace cute;

// (MMA=4, MMA_M, MMA_N) -> ((2, MMA_M), (2, MMA_N)): the accumulator indexed by (row, column).
template <class Layout>
__forceinline__ __device__ auto acc_rowcol_layout(Layout acc_layout) {
  static_assert(decltype(size<0>(acc_layout))::value == 4);
  static_assert(decltype(rank(acc_layout))::value == 3);
  auto l = logical_divide(acc_layout, Shape<_2>{});  // ((2, 2), MMA_M, MMA_N)
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)), make_layout(get<0, 0>(l), get<2>(l)));
}

// (MMA=4, MMA_M, MMA_N) -> ((4, 2), MMA_M, MMA_N / 2): an m16n8 accumulator pair re-read as the A operand of the next
// m16n8k16 product. This is what lets P = softmax(S) feed P.V from registers without a trip through shared memory.
template <class Layout>
__forceinline__ __device__ auto acc_as_a_operand_layout(Layout acc_layout) {
  static_assert(decltype(size<0>(acc_layout))::value == 4);
  static_assert(decltype(rank(acc_layout))::value == 3);
  auto l = logical_divide(acc_layout, Shape<Underscore, Underscore, _2>{});  // (4, MMA_M, (2, MMA_N / 2))
  return make_layout(make_layout(get<0>(l), get<2, 0>(l)), get<1>(l), get<2, 1>(l));
}

// A register tensor of `To` with the same layout, converted in pairs (cvt.rn.{bf16x2,f16x2}.f32).
template <class To, class Engine, class Layout>
__forceinline__ __device__ auto convert_tensor(Tensor<Engine, Layout> const& src) {
  using From = typename Engine::value_type;
  constexpr int kNumel = decltype(size(src))::value;
  cutlass::NumericArrayConverter<To, From, kNumel> convert_op;
  Tensor dst = make_tensor<To>(src.layout());
  *reinterpret_cast<cutlass::Array<To, kNumel>*>(dst.data()) =
      convert_op(*reinterpret_cast<const cutlass::Array<From, kNumel>*>(src.data()));
  return dst;
}

// acc += A(smem) * B(smem), k-slice by k-slice, loading slice k+1 through ldmatrix while slice k multiplies.
template <class Acc, class RegA, class RegB, class SmemA, class SmemB, class TiledMma, class CopyA, class CopyB,
          class ThrCopyA, class ThrCopyB>
__forceinline__ __device__ void gemm_ss(Acc& acc, RegA& tCrA, RegB& tCrB, SmemA const& tCsA, SmemB const& tCsB,
                                        TiledMma tiled_mma, CopyA copy_a, CopyB copy_b, ThrCopyA thr_copy_a,
                                        ThrCopyB thr_copy_b) {
  Tensor tCrA_view = thr_copy_a.retile_D(tCrA);
  Tensor tCrB_view = thr_copy_b.retile_D(tCrB);
  cute::copy(copy_a, tCsA(_, _, _0{}), tCrA_view(_, _, _0{}));
  cute::copy(copy_b, tCsB(_, _, _0{}), tCrB_view(_, _, _0{}));
  CUTE_UNROLL
  for (int i = 0; i < size<2>(tCrA); ++i) {
    if (i < size<2>(tCrA) - 1) {
      cute::copy(copy_a, tCsA(_, _, i + 1), tCrA_view(_, _, i + 1));
      cute::copy(copy_b, tCsB(_, _, i + 1), tCrB_view(_, _, i + 1));
    }
    cute::gemm(tiled_mma, tCrA(_, _, i), tCrB(_, _, i), acc);
  }
}

// acc += A(registers) * B(smem): the P.V product, P already in registers.
template <class Acc, class RegA, class RegB, class SmemB, class TiledMma, class CopyB, class ThrCopyB>
__forceinline__ __device__ void gemm_rs(Acc& acc, RegA& tCrA, RegB& tCrB, SmemB const& tCsB, TiledMma tiled_mma,
                                        CopyB copy_b, ThrCopyB thr_copy_b) {
  Tensor tCrB_view = thr_copy_b.retile_D(tCrB);
  cute::copy(copy_b, tCsB(_, _, _0{}), tCrB_view(_, _, _0{}));
  CUTE_UNROLL
  for (int i = 0; i < size<2>(tCrA); ++i) {
    if (i < size<2>(tCrA) - 1) cute::copy(copy_b, tCsB(_, _, i + 1), tCrB_view(_, _, i + 1));
    cute::gemm(tiled_mma, tCrA(_, _, i), tCrB(_, _, i), acc);
  }
}

// Global -> shared tile copy that predicates whole rows: rows at or past `valid_rows` are zero-filled in shared
// memory instead of read. Zeros matter: a stale V row times a zero probability is still NaN if the row held NaN.
// tSc holds the (row, col) coordinates of the source partition; the column extent always fits (head dims are
// compile-time and multiples of the 8-element vector).
template <class TiledCopy, class Src, class Dst, class Coord>
__forceinline__ __device__ void copy_rows_zfill(TiledCopy tiled_copy, Src const& src, Dst& dst, Coord const& tSc,
                                                int valid_rows) {
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src); ++m) {
    if (get<0>(tSc(0, m, 0)) < valid_rows) {
      CUTE_UNROLL
      for (int k = 0; k < size<2>(src); ++k) cute::copy(tiled_copy, src(_, m, k), dst(_, m, k));
    } else {
      cute::clear(dst(_, m, _));
    }
  }
}

// Shared -> global tile copy of the rows below `valid_rows` only.
template <class TiledCopy, class Src, class Dst, class Coord>
__forceinline__ __device__ void copy_rows_store(TiledCopy tiled_copy, Src const& src, Dst& dst, Coord const& tSc,
                                                int valid_rows) {
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src); ++m) {
    if (get<0>(tSc(0, m, 0)) < valid_rows) {
      CUTE_UNROLL
      for (int k = 0; k < size<2>(src); ++k) cute::copy(tiled_copy, src(_, m, k), dst(_, m, k));
    }
  }
}

// Reductions across the 4 threads of a quad, which together hold one accumulator row.
__forceinline__ __device__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
}
__forceinline__ __device__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x + __shfl_xor_sync(0xffffffffu, x, 1);
}

// 2^x on the special-function unit (about 2 ulp; 2^-inf = +0, which the masked scores rely on).
__forceinline__ __device__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 1/x on the special-function unit (about 1 ulp, no slow path for denormals; 1/inf = 0).
__forceinline__ __device__ float fast_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace ioattn::detail::sm80
