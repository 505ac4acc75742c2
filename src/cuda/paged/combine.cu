// ioattn cuda paged: the combine of split-KV chunks. One CTA of four warps per (query row, head) of a sequence with
// more than one chunk: the chunks' partial results (each normalized by its own sum, lse without the sink) are merged
// by their lse (core::SoftmaxState), the sink is added once, and out and lse are written. Every order is fixed by
// the chunk count alone, so the result depends only on the chunks, never on timing or on the batch (no atomics).
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/paged/decode.hpp"
#include "cuda/paged/decode_kernel.cuh"
#include "cuda/paged/programmatic_launch.cuh"
#include "cuda/paged/trace.cuh"

namespace ioattn::detail::paged {
namespace {

// Warps per (row, head): each sums a quarter of the chunks, so a row's partial results are read in one round trip
// for up to 4 x kBatch chunks (one warp reading 16-32 chunks 8 at a time took 3-4 us at 1 x 32k, H200, by the
// trace of trace.cuh, against about 1 us for the rest of the combine), issued before the lse pass.
constexpr int kCombineWarps = 4;
constexpr int kMaxVecPerLane = 2;  // float4s per lane: dim_v up to 256
constexpr int kBatch = 8;          // a warp's partial rows in flight at once

template <class Element>
__global__ void __launch_bounds__(kCombineWarps * 32) paged_combine_kernel(const DecodeParams p, int dim_v) {
  using Mma = MmaOp<Element>;
  __shared__ float4 s_sums[kCombineWarps][kMaxVecPerLane][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int b = blockIdx.y;
  IOATTN_PAGED_MARK(p.trace_combine, trace::kStart);
  const int i = blockIdx.x / p.heads_q, h = blockIdx.x % p.heads_q;
  const int q_offset = p.cu_seqlens_q ? p.cu_seqlens_q[b] : 0;
  const int q_len = p.cu_seqlens_q ? p.cu_seqlens_q[b + 1] - q_offset : p.seqlen_q;
  if (i >= q_len) return;
  const int chunks = chunk_count(sequence_length(p, b), p.split_tokens);
  if (chunks == 1) return;  // the decode kernel wrote this row directly

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // No early trigger for the stream's next kernel (the next call's decode starts when this grid ends): one at the
  // start gained 0.3-0.5 us on split rows but cost 3.4 us at D 64, 1 x 32k in 32 chunks (H200, back to back).
  // Launched as the decode kernel's programmatic dependent: wait for its grid to complete (and its writes to be
  // visible) before reading the partial results. A no-op when launched without the dependency.
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  IOATTN_PAGED_MARK(p.trace_combine, trace::kFirst);
  const std::int64_t prow = (p.cu_seqlens_q ? 0 : static_cast<std::int64_t>(b) * p.seqlen_q) + q_offset + i;
  const std::int64_t split_stride = static_cast<std::int64_t>(p.rows) * p.heads_q;  // slots per chunk
  const std::int64_t slot0 = prow * p.heads_q + h;

  // Warp w sums chunks [chunks w / 4, chunks (w + 1) / 4) in chunk order, kBatch at a time. Its first batch of
  // partial rows and their lse are requested before pass 1, which needs neither: one round trip to L2 for the lot.
  const int own_begin = chunks * warp / kCombineWarps, own_end = chunks * (warp + 1) / kCombineWarps;
  float4 part[kBatch][kMaxVecPerLane];
  float batch_lse = -INFINITY;  // lane k: the lse of the batch's k-th chunk
  auto load_batch = [&](int k0) {
    const int n = min(kBatch, own_end - k0);
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const float* row = p.partial_out + ((k0 + k) * split_stride + slot0) * dim_v;
#pragma unroll
      for (int v = 0; v < kMaxVecPerLane; ++v) {
        const int c = (lane + 32 * v) * 4;
        part[k][v] = k < n && c < dim_v ? *reinterpret_cast<const float4*>(row + c)
                                        : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
    }
    batch_lse = lane < n ? p.partial_lse[(k0 + lane) * split_stride + slot0] : -INFINITY;
  };
  if (own_begin < own_end) load_batch(own_begin);

  // Pass 1, scalars only (every warp alike): the row's max and sum over all chunks' lse, then the sink. Lane l folds
  // chunks l, l + 32, ... in order, then the lanes' states merge by a butterfly; each step adds the same two terms
  // on both lanes of a pair (addition commutes exactly), so every lane ends with the same bits, fixed by the chunk
  // count alone.
  core::SoftmaxState<float> state;
  for (int s = lane; s < chunks; s += 32) {
    float weight;
    state.add_partial(p.partial_lse[s * split_stride + slot0], weight);
  }
#pragma unroll
  for (int d = 16; d >= 1; d /= 2) {
    const float m_other = __shfl_xor_sync(0xffffffffu, state.m, d);
    const float l_other = __shfl_xor_sync(0xffffffffu, state.l, d);
    state.begin_tile(m_other);
    state.l += l_other * expf(m_other - state.offset());  // m_other = -inf (nothing seen) adds 0
  }
  if (p.sinks) state.add_sink(p.sinks[h]);
  const float offset = state.offset(), inv_sum = state.inv_sum();

  // Pass 2: out = sum over chunks of exp(lse_s - max) / sum * o_s (what a sequential merge computes, with every
  // chunk's final weight known up front); the four warps' sums are then added in warp order.
  float4 o[kMaxVecPerLane];
#pragma unroll
  for (int v = 0; v < kMaxVecPerLane; ++v) o[v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int k0 = own_begin; k0 < own_end; k0 += kBatch) {
    if (k0 != own_begin) load_batch(k0);
    const int n = min(kBatch, own_end - k0);
    const float coef_lane = __expf(batch_lse - offset) * inv_sum;  // an empty chunk (lse -inf) weighs 0
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const float coef = __shfl_sync(0xffffffffu, coef_lane, k);
      if (k >= n) break;
#pragma unroll
      for (int v = 0; v < kMaxVecPerLane; ++v) {
        o[v].x += coef * part[k][v].x, o[v].y += coef * part[k][v].y;
        o[v].z += coef * part[k][v].z, o[v].w += coef * part[k][v].w;
      }
    }
  }
#pragma unroll
  for (int v = 0; v < kMaxVecPerLane; ++v) s_sums[warp][v][lane] = o[v];
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int w = 1; w < kCombineWarps; ++w) {
#pragma unroll
    for (int v = 0; v < kMaxVecPerLane; ++v) {
      const float4 x = s_sums[w][v][lane];
      o[v].x += x.x, o[v].y += x.y, o[v].z += x.z, o[v].w += x.w;
    }
  }
  Element* out = static_cast<Element*>(p.out) + b * p.o_batch_stride + (q_offset + i) * p.o_row_stride +
                 h * p.o_head_stride;
#pragma unroll
  for (int v = 0; v < kMaxVecPerLane; ++v) {
    const int c = (lane + 32 * v) * 4;
    if (c < dim_v) {
      uint2 packed;
      packed.x = Mma::pack(o[v].x, o[v].y);
      packed.y = Mma::pack(o[v].z, o[v].w);
      *reinterpret_cast<uint2*>(out + c) = packed;
    }
  }
  if (p.lse && lane == 0) {
    p.lse[b * p.lse_batch_stride + (q_offset + i) * p.lse_row_stride + h * p.lse_head_stride] = state.lse();
  }
  IOATTN_PAGED_MARK(p.trace_combine, trace::kEnd);
}

}  // namespace

// On sm90 and later the combine is launched as a programmatic dependent of the decode kernel: its CTAs are
// scheduled while the decode's last CTAs run and wait on the device, so the launch gap between the two kernels
// leaves the critical path.
template <class Element>
void launch_combine(const DecodeParams& p, int dim_v, void* stream, bool programmatic) {
  const std::int64_t items = static_cast<std::int64_t>(p.seqlen_q) * p.heads_q;  // (row, head) of a sequence
  const dim3 grid(static_cast<unsigned>(items), static_cast<unsigned>(p.batch));
  launch_maybe_programmatic(paged_combine_kernel<Element>, grid, dim3(kCombineWarps * 32), 0, stream, programmatic,
                            "paged combine kernel launch", p, dim_v);
}

template void launch_combine<__nv_bfloat16>(const DecodeParams&, int, void*, bool);
template void launch_combine<__half>(const DecodeParams&, int, void*, bool);

}  // namespace ioattn::detail::paged
