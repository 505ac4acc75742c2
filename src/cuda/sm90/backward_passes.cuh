// ioattn sm90 backward: the passes before and after the main kernel, for head dims 64, 128 and 256 (included by
// backward_dispatch.cu only).
//
// Pre-pass: delta = rowsum(dO * O) and lse2 = lse log2(e) of every (query row, head), and the fp32 dQ accumulator
// zeroed, in one launch. Post-pass: dq = scale * accumulator in the output dtype. Both are bandwidth-bound: at 16k
// tokens and hidden 2048 the pre-pass moves 256 MB, the post-pass 192 MB (measured on an H200, 2026-11-21, by ncu:
// 70 us at D 128 and 76 us at D 64 for the pre-pass, 45 us for the post-pass, where the sm80 pre-pass took 85 and
// 164 us plus the memset, its post-pass 58 us), a fifth of the whole backward at 512 tokens a sequence under a causal
// mask. So every thread moves 16 bytes of each operand (a group of kDim / 8 threads per (row, head), reduced by
// shuffles; every lane busy at head dim 64 too) and the index arithmetic is 32-bit (the sm80 pre-pass ran at 72% of
// the SMs' throughput and 34% of DRAM's, with 64-bit divisions per row); problems whose thread count does not fit
// 31 bits run the sm80 passes instead.
#pragma once

#include <cmath>
#include <cstdint>

#include <cuda_runtime.h>

#include "api/problem.hpp"

namespace ioattn::detail::sm90 {

// An operand's element strides (batch, row, head), as api/problem.hpp's Operand holds them.
struct PassStrides {
  std::int64_t batch, row, head;
  static PassStrides of(const Operand& x) { return {x.batch_stride, x.seq_stride, x.head_stride}; }
  __device__ std::int64_t offset(std::int64_t b, std::int64_t r, std::int64_t h) const {
    return b * batch + r * row + h * head;
  }
};

struct PassRows {
  std::uint32_t rows;      // flat query rows: batch * seqlen_q (dense) or total_q (varlen)
  std::uint32_t heads;     // query heads
  std::uint32_t seqlen_q;  // dense: rows of a sequence (flat row r is row r % seqlen_q of sequence r / seqlen_q)
  bool varlen;             // the flat row is the packed row of batch 0

  __device__ void locate(std::uint32_t r, std::int64_t& b, std::int64_t& row) const {
    if (varlen) {
      b = 0, row = r;
    } else {
      const std::uint32_t bb = r / seqlen_q;
      b = bb, row = r - bb * seqlen_q;
    }
  }
};

struct BackwardPrepassArgs {
  const void* out;
  const void* dout;
  const float* lse;
  PassStrides o_stride, do_stride, lse_stride;
  float* lse2;                              // [heads][rows]
  float* delta;                             // [heads][rows]
  float* dq_accum;                          // [rows][heads][kDim]
  PassRows map;
};

// Thread (group g = (head, row) head-major, lane c of kDim / 8): head-major so that the lse reads and the lse2 and
// delta writes of neighbouring groups are contiguous; each group's O and dO row and accumulator row are contiguous.
template <class Elem, int kDim>
__global__ void __launch_bounds__(256) backward_prepass_kernel(const BackwardPrepassArgs a) {
  constexpr int kLanes = kDim / 8;
  static_assert(kLanes <= 32 && 32 % kLanes == 0);
  const std::uint32_t gtid = blockIdx.x * 256u + threadIdx.x;
  const std::uint32_t group = gtid / kLanes;
  const int lane = int(gtid % kLanes);
  const bool live = group < a.map.rows * a.map.heads;  // a group is live or not as a whole
  const std::uint32_t h = live ? group / a.map.rows : 0;
  const std::uint32_t r = live ? group - h * a.map.rows : 0;
  std::int64_t b, row;
  a.map.locate(r, b, row);
  float sum = 0.0f;
  if (live) {
    const uint4 ov = *reinterpret_cast<const uint4*>(static_cast<const Elem*>(a.out) + a.o_stride.offset(b, row, h) +
                                                     lane * 8);
    const uint4 dv = *reinterpret_cast<const uint4*>(static_cast<const Elem*>(a.dout) +
                                                     a.do_stride.offset(b, row, h) + lane * 8);
    const Elem* oe = reinterpret_cast<const Elem*>(&ov);
    const Elem* de = reinterpret_cast<const Elem*>(&dv);
#pragma unroll
    for (int e = 0; e < 8; ++e) sum = fmaf(float(oe[e]), float(de[e]), sum);
    float4* acc = reinterpret_cast<float4*>(a.dq_accum + (std::int64_t(r) * a.map.heads + h) * kDim + lane * 8);
    acc[0] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    acc[1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (live && lane == 0) {
    const float lse = a.lse[a.lse_stride.offset(b, row, h)];
    // A row that saw nothing has lse = -inf and only -inf scores; 0 keeps exp2(-inf - lse2) at 0 instead of NaN.
    a.lse2[group] = lse == -INFINITY ? 0.0f : lse * 1.4426950408889634f;
    a.delta[group] = sum;
  }
}

struct BackwardPostpassArgs {
  const float* dq_accum;  // [rows][heads][kDim]
  void* dq;
  PassStrides dq_stride;
  float scale;
  PassRows map;
};

// Thread (group g = (row, head) row-major, as the accumulator; lane c): 8 consecutive dims, two 16-byte loads and
// two 8-byte stores (backward_unsupported guarantees dq's 4-element alignment, not 8).
template <class Elem, int kDim>
__global__ void __launch_bounds__(256) backward_postpass_kernel(const BackwardPostpassArgs a) {
  constexpr int kLanes = kDim / 8;
  const std::uint32_t gtid = blockIdx.x * 256u + threadIdx.x;
  const std::uint32_t group = gtid / kLanes;
  const int lane = int(gtid % kLanes);
  if (group >= a.map.rows * a.map.heads) return;
  const std::uint32_t r = group / a.map.heads;
  const std::uint32_t h = group - r * a.map.heads;
  std::int64_t b, row;
  a.map.locate(r, b, row);
  const float4* acc = reinterpret_cast<const float4*>(a.dq_accum + std::int64_t(group) * kDim + lane * 8);
  const float4 x = acc[0], y = acc[1];
  Elem out[8] = {Elem(x.x * a.scale), Elem(x.y * a.scale), Elem(x.z * a.scale), Elem(x.w * a.scale),
                 Elem(y.x * a.scale), Elem(y.y * a.scale), Elem(y.z * a.scale), Elem(y.w * a.scale)};
  uint2* dst = reinterpret_cast<uint2*>(static_cast<Elem*>(a.dq) + a.dq_stride.offset(b, row, h) + lane * 8);
  dst[0] = reinterpret_cast<const uint2*>(out)[0];
  dst[1] = reinterpret_cast<const uint2*>(out)[1];
}

}  // namespace ioattn::detail::sm90
