// ioattn cuda paged: the split-KV merge folded into the decode kernel. The CTAs of one (sequence, kv head, row
// block) each write their chunk's partial rows to the workspace; the last of them to arrive merges all the group's
// chunks and writes out and lse, so no separate combine kernel (and no launch) follows the decode.
//
// Determinism: the merge reads every chunk's partial result back from global memory (its own included) and folds
// them in chunk order with exactly the combine kernel's arithmetic (combine.cu), so the bits do not depend on which
// CTA arrives last, and equal those of the combine kernel. The arrival counter is the only atomic; no result is
// accumulated atomically.
//
// Counters: one int per group in the workspace, after partial_lse, zeroed on the stream before every launch by a
// small kernel whose programmatic dependent the decode is (backend.cu), because callers may reuse or poison their
// workspace between runs; the decode waits for the zeros only where it first needs them, at its arrival.
#pragma once

#include <cstdint>

#include "cuda/paged/params.cuh"
#include "cuda/paged/ptx.cuh"
#include "ioattn/core/softmax_state.hpp"

namespace ioattn::detail::paged {

// Called by every thread of a CTA after its partial rows are stored; true in the CTA that arrived last, whose
// threads then see all the group's partial results. `s_flag` is one int of shared memory no thread is using.
__device__ __forceinline__ bool arrived_last(const DecodeParams& p, int chunks, int* s_flag) {
  // Release: each thread's partial stores are ordered before the arrival the barrier hands to thread 0.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // Launched as the zeroing kernel's programmatic dependent: its zeros must have landed (a no-op otherwise).
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    int* counter = p.split_counters + blockIdx.x * p.counter_row_blocks + blockIdx.z;
    *s_flag = atomicAdd(counter, 1) == chunks - 1;
  }
  __syncthreads();
  const bool last = *s_flag != 0;
  // Acquire: the other CTAs' partial stores (fenced before their arrivals) are visible to the loads below.
  if (last) __threadfence();
  return last;
}

// Merges the group's `chunks` partial results for this CTA's rows r0 .. r0 + valid_rows - 1 (packed rows: row r is
// query token r / group, head hk * group + r % group) and writes out and lse. `s_scratch`: 2 * kBlockM floats of
// free shared memory. The partials are read with ld.global.cg: they were written by other SMs, whose stores L1 does
// not see.
template <class Element, int kDimV, int kBlockM, int kThreads>
__device__ void merge_split_rows(const DecodeParams& p, float* s_scratch, int b, int hk, int r0, int valid_rows,
                                 int q_offset, int chunks) {
  using Mma = MmaOp<Element>;
  constexpr int kBatch = 8;  // chunks whose loads are in flight together
  constexpr int kLseBatch = 16;
  float* s_offset = s_scratch;
  float* s_inv_sum = s_scratch + kBlockM;
  const std::int64_t split_stride = static_cast<std::int64_t>(p.rows) * p.heads_q;  // slots per chunk
  const std::int64_t row_base = p.cu_seqlens_q ? 0 : static_cast<std::int64_t>(b) * p.seqlen_q;

  // Pass 1, one thread per row: fold the chunks' lse in chunk order, then the sink (combine.cu's pass 1). That fixes
  // the row's final max and sum.
  for (int row = threadIdx.x; row < valid_rows; row += kThreads) {
    const int i = (r0 + row) / p.group, h = hk * p.group + (r0 + row) % p.group;
    const std::int64_t slot0 = (row_base + q_offset + i) * p.heads_q + h;
    core::SoftmaxState<float> state;
    for (int s0 = 0; s0 < chunks; s0 += kLseBatch) {
      float lse[kLseBatch];
#pragma unroll
      for (int k = 0; k < kLseBatch; ++k) {
        lse[k] = s0 + k < chunks ? __ldcg(p.partial_lse + (s0 + k) * split_stride + slot0) : -INFINITY;
      }
#pragma unroll
      for (int k = 0; k < kLseBatch; ++k) {
        if (s0 + k >= chunks) break;
        float weight;
        state.add_partial(lse[k], weight);
      }
    }
    if (p.sinks) state.add_sink(p.sinks[h]);
    s_offset[row] = state.offset();
    s_inv_sum[row] = state.inv_sum();
    if (p.lse) p.lse[b * p.lse_batch_stride + (q_offset + i) * p.lse_row_stride + h * p.lse_head_stride] = state.lse();
  }
  __syncthreads();

  // Pass 2, one thread per (row, 4 columns): out = sum over chunks, in chunk order, of exp(lse_s - max) / sum * o_s
  // (combine.cu's pass 2: the same coefficients and the same fused multiply-adds in the same order).
  constexpr int kVec = kDimV / 4;
  for (int idx = threadIdx.x; idx < valid_rows * kVec; idx += kThreads) {
    const int row = idx / kVec, c = (idx % kVec) * 4;
    const int i = (r0 + row) / p.group, h = hk * p.group + (r0 + row) % p.group;
    const std::int64_t slot0 = (row_base + q_offset + i) * p.heads_q + h;
    const float offset = s_offset[row], inv_sum = s_inv_sum[row];
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int s0 = 0; s0 < chunks; s0 += kBatch) {
      float coef[kBatch];
      float4 part[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const bool in = s0 + k < chunks;
        const std::int64_t slot = (s0 + k) * split_stride + slot0;
        const float lse = in ? __ldcg(p.partial_lse + slot) : -INFINITY;
        coef[k] = __expf(lse - offset) * inv_sum;  // an empty chunk (lse -inf) weighs 0
        part[k] = in ? __ldcg(reinterpret_cast<const float4*>(p.partial_out + slot * kDimV + c))
                     : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        if (s0 + k >= chunks) break;
        o.x += coef[k] * part[k].x, o.y += coef[k] * part[k].y;
        o.z += coef[k] * part[k].z, o.w += coef[k] * part[k].w;
      }
    }
    Element* out = static_cast<Element*>(p.out) + b * p.o_batch_stride + (q_offset + i) * p.o_row_stride +
                   h * p.o_head_stride + c;
    uint2 packed;
    packed.x = Mma::pack(o.x, o.y);
    packed.y = Mma::pack(o.z, o.w);
    *reinterpret_cast<uint2*>(out) = packed;
  }
}

}  // namespace ioattn::detail::paged
