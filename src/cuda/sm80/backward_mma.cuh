// ioattn sm80 backward: one warp's share of a tile product on the m16n8k16 tensor-core instruction, operands read
// from shared memory with ldmatrix.
//
// The backward multiplies the same shared-memory tiles in four orientations (S^T = K Q^T, dV += P^T dO,
// dK += dS^T Q, dQ = dS K), so each operand says how it is stored: A as [m][k] rows or transposed [k][m], B as
// [n][k] rows or transposed [k][n]. ldmatrix's .trans form turns a transposed store into the fragment the
// instruction expects, so no tile is ever copied just to change its orientation.
//
// Fragments of m16n8k16 (g = lane / 4, t = lane % 4): A holds (g | g+8, 2t..2t+1 | 2t+8..2t+9), B holds
// (k 2t..2t+1 | 2t+8..2t+9, n g), the fp32 accumulator (g | g+8, 2t..2t+1) as {c0, c1 | c2, c3}.
// Shared tiles use a row stride of (width + 8) elements: 16 bytes of padding put the 8 rows one ldmatrix reads in
// 8 different bank groups, for every width here (64, 96, 128, 192, 256 and the 64-wide P and dS tiles).
#pragma once

#include <cstdint>

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cutlass/numeric_types.h>

namespace ioattn::detail::sm80::bwd {

template <class Elem>
struct MmaAtom;
template <>
struct MmaAtom<cutlass::half_t> {
  using Op = cute::SM80_16x8x16_F32F16F16F32_TN;
};
template <>
struct MmaAtom<cutlass::bfloat16_t> {
  using Op = cute::SM80_16x8x16_F32BF16BF16F32_TN;
};

__device__ __forceinline__ void ldsm_x4(const void* smem, std::uint32_t (&r)[4]) {
  cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(smem), r[0], r[1], r[2], r[3]);
}
__device__ __forceinline__ void ldsm_x4_trans(const void* smem, std::uint32_t (&r)[4]) {
  cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(smem), r[0], r[1], r[2], r[3]);
}

// acc[MT][NT] += A * B over K, for a warp tile of (16 MT) x (8 NT).
//   kATrans = false: sA is [m][k] with row stride lda, pointing at (m0, 0);  true: [k][m], pointing at (0, m0).
//   kBTrans = false: sB is [n][k] with row stride ldb, pointing at (n0, 0);  true: [k][n], pointing at (0, n0).
// kPipe: fetch the fragments of k-slice kk + 1 before multiplying slice kk, so that the ldmatrix latency hides
// behind tensor-core work (costs one more set of fragment registers).
template <int MT, int NT, int K, bool kATrans, bool kBTrans, bool kPipe, class Elem>
__device__ __forceinline__ void warp_gemm(float (&acc)[MT][NT][4], const Elem* sA, int lda, const Elem* sB, int ldb,
                                          int lane) {
  static_assert(NT % 2 == 0, "B fragments are loaded two n8 tiles at a time");
  static_assert(K % 16 == 0);
  using Op = typename MmaAtom<Elem>::Op;
  constexpr int kSteps = K / 16;
  constexpr int kBufs = kPipe ? 2 : 1;
  const int l8 = lane & 7;
  const int hi8 = (lane >> 3) & 1;  // lanes 8..15 and 24..31
  const int hi16 = lane >> 4;       // lanes 16..31
  // Each lane's ldmatrix row address; see the file comment for which 8x8 matrix each lane octet names.
  const Elem* a_lane = kATrans ? sA + (l8 + hi16 * 8) * lda + hi8 * 8 : sA + (l8 + hi8 * 8) * lda + hi16 * 8;
  const Elem* b_lane = kBTrans ? sB + (l8 + hi8 * 8) * ldb + hi16 * 8 : sB + (l8 + hi16 * 8) * ldb + hi8 * 8;
  std::uint32_t a[kBufs][MT][4];
  std::uint32_t b[kBufs][NT / 2][4];
  const auto load = [&](int kk, int buf) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if constexpr (kATrans) {
        ldsm_x4_trans(a_lane + kk * 16 * lda + mt * 16, a[buf][mt]);
      } else {
        ldsm_x4(a_lane + mt * 16 * lda + kk * 16, a[buf][mt]);
      }
    }
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      if constexpr (kBTrans) {
        ldsm_x4_trans(b_lane + kk * 16 * ldb + np * 16, b[buf][np]);
      } else {
        ldsm_x4(b_lane + np * 16 * ldb + kk * 16, b[buf][np]);
      }
    }
  };
  if constexpr (kPipe) load(0, 0);
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) {
    const int buf = kPipe ? (kk & 1) : 0;
    if constexpr (kPipe) {
      if (kk + 1 < kSteps) load(kk + 1, (kk + 1) & 1);
    } else {
      load(kk, 0);
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        // Non-transposed B: x4 gives (tile 2np: k lo, k hi), (tile 2np+1: k lo, k hi) in matrix order
        // {n lo k lo, n lo k hi, n hi k lo, n hi k hi}; transposed B: {k lo n lo, k hi n lo, k lo n hi, k hi n hi}.
        // Both orders come out as b[np] = {b0, b1} of tile 2np then {b0, b1} of tile 2np+1.
        const std::uint32_t b0 = b[buf][nt / 2][(nt % 2) * 2];
        const std::uint32_t b1 = b[buf][nt / 2][(nt % 2) * 2 + 1];
        float* c = acc[mt][nt];
        Op::fma(c[0], c[1], c[2], c[3], a[buf][mt][0], a[buf][mt][1], a[buf][mt][2], a[buf][mt][3], b0, b1, c[0],
                c[1], c[2], c[3]);
      }
    }
  }
}

template <int MT, int NT>
__device__ __forceinline__ void clear(float (&acc)[MT][NT][4]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
}

// Two fp32 values as one packed pair of Elem (low half = first), round to nearest even: one cvt for both.
template <class Elem>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ std::uint32_t pack2<cutlass::half_t>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}
template <>
__device__ __forceinline__ std::uint32_t pack2<cutlass::bfloat16_t>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// 2^x on the special-function unit (about 2 ulp; 2^-inf = +0, which masked scores rely on).
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// dst[0] += a, dst[1] += b in global memory, unordered. Hopper has a two-wide reduction: half the instructions and
// half the L2 sector updates of two scalar ones, for the same sums.
__device__ __forceinline__ void red_add2(float* dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.relaxed.gpu.global.add.v2.f32 [%0], {%1, %2};" ::"l"(dst), "f"(a), "f"(b) : "memory");
#else
  atomicAdd(dst, a);
  atomicAdd(dst + 1, b);
#endif
}

// dst[0..3] += v[0..3] in global memory, unordered; dst 16-byte aligned. Two two-wide reductions before Hopper.
__device__ __forceinline__ void red_add4(float* dst, float a, float b, float c, float d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.relaxed.gpu.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "f"(a), "f"(b), "f"(c), "f"(d)
               : "memory");
#else
  red_add2(dst, a, b);
  red_add2(dst + 2, c, d);
#endif
}

// Global -> shared copy of `rows` rows of `width` elements (16-byte chunks); rows at or past `valid` are
// zero-filled (cp.async with source size 0), never read: in varlen batches they belong to the next sequence.
template <int kRows, int kWidth, int kThreads, class Elem>
__device__ __forceinline__ void load_rows_async(Elem* smem, int smem_stride, const Elem* gmem, std::int64_t gmem_stride,
                                                int valid, int tid) {
  constexpr int kChunksPerRow = kWidth / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
#pragma unroll
  for (int idx = tid; idx < kChunks; idx += kThreads) {
    const int r = idx / kChunksPerRow;
    const int c = idx % kChunksPerRow;
    const bool ok = r < valid;
    const Elem* src = ok ? gmem + r * gmem_stride + c * 8 : gmem;
    cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(*reinterpret_cast<const cute::uint128_t*>(src),
                                                                 *reinterpret_cast<cute::uint128_t*>(
                                                                     smem + r * smem_stride + c * 8),
                                                                 ok);
  }
}

}  // namespace ioattn::detail::sm80::bwd
