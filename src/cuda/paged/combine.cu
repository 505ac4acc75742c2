// ioattn cuda paged: the combine of split-KV chunks. One warp per (query row, head) of a sequence with more than one
// chunk: the chunks' partial results (each normalized by its own sum, lse without the sink) are merged through
// core::SoftmaxState::add_partial in chunk order, the sink is added once, and out and lse are written. Every order
// is fixed, so the result depends only on the chunks, never on timing (no atomics).
//
// The combine runs after the decode grid has finished, so its latency is on the critical path: the rows of the first
// kBatch chunks are requested together with the lse, before the lse are folded, so up to kBatch chunks cost one
// round trip to L2 (the partial results were just written there).
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/paged/decode.hpp"
#include "cuda/paged/decode_kernel.cuh"
#include "cuda/sm80/common/cuda_check.cuh"

namespace ioattn::detail::paged {
namespace {

constexpr int kCombineWarps = 4;

// kVec float4s per lane: dim_v up to 128 * kVec. kBatch chunk rows in flight per lane: 16 float4 registers.
template <class Element, int kVec>
__global__ void __launch_bounds__(kCombineWarps * 32) paged_combine_kernel(const DecodeParams p, int dim_v) {
  using Mma = MmaOp<Element>;
  constexpr int kBatch = 16 / kVec;
  static_assert(32 % kBatch == 0, "batches tile a block of 32 chunks (one lse per lane)");
  const int lane = threadIdx.x % 32;
  const int b = blockIdx.y;
  const int item = blockIdx.x * kCombineWarps + threadIdx.x / 32;
  const int i = item / p.heads_q, h = item % p.heads_q;
  const int q_offset = p.cu_seqlens_q ? p.cu_seqlens_q[b] : 0;
  const int q_len = p.cu_seqlens_q ? p.cu_seqlens_q[b + 1] - q_offset : p.seqlen_q;
  if (i >= q_len) return;
  const int chunks = chunk_count(sequence_length(p, b), p.split_tokens);
  if (chunks == 1) return;  // the decode kernel wrote this row directly

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as the decode kernel's programmatic dependent: wait for its grid to complete (and its writes to be
  // visible) before reading the partial results. A no-op when launched without the dependency.
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  const std::int64_t prow = (p.cu_seqlens_q ? 0 : static_cast<std::int64_t>(b) * p.seqlen_q) + q_offset + i;
  const std::int64_t split_stride = static_cast<std::int64_t>(p.rows) * p.heads_q;  // slots per chunk
  const std::int64_t slot0 = prow * p.heads_q + h;

  // Rows of chunks s0 .. s0 + kBatch - 1 (zeros past the last chunk).
  float4 part[kBatch][kVec];
  auto load_rows = [&](int s0) {
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const float* row = p.partial_out + ((s0 + k) * split_stride + slot0) * dim_v;
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        const int c = (lane + 32 * v) * 4;
        part[k][v] = s0 + k < chunks && c < dim_v ? *reinterpret_cast<const float4*>(row + c)
                                                  : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
    }
  };
  auto load_lse = [&](int s0) {  // chunk s0 + lane's
    return s0 + lane < chunks ? p.partial_lse[(s0 + lane) * split_stride + slot0] : -INFINITY;
  };
  load_rows(0);
  const float lse_first = load_lse(0);

  // Pass 1, scalars only: fold the chunks' lse in chunk order (32 at a time, one per lane, handed round by
  // shuffles), then the sink. That fixes the row's final max and sum.
  core::SoftmaxState<float> state;
  for (int s0 = 0; s0 < chunks; s0 += 32) {
    const float lse_lane = s0 == 0 ? lse_first : load_lse(s0);
    const int n = min(32, chunks - s0);
    for (int k = 0; k < n; ++k) {
      float weight;
      state.add_partial(__shfl_sync(0xffffffffu, lse_lane, k), weight);
    }
  }
  if (p.sinks) state.add_sink(p.sinks[h]);
  const float offset = state.offset(), inv_sum = state.inv_sum();

  // Pass 2: out = sum over chunks, in chunk order, of exp(lse_s - max) / sum * o_s (what the sequential merge
  // computes, with every chunk's final weight known up front).
  float4 o[kVec];
#pragma unroll
  for (int v = 0; v < kVec; ++v) o[v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int s0 = 0; s0 < chunks; s0 += 32) {
    const float lse_lane = s0 == 0 ? lse_first : load_lse(s0);
    const float coef_lane = __expf(lse_lane - offset) * inv_sum;  // an empty chunk (lse -inf) weighs 0
    const int n = min(32, chunks - s0);
    for (int k0 = 0; k0 < n; k0 += kBatch) {
      if (s0 + k0 > 0) load_rows(s0 + k0);
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const float coef = __shfl_sync(0xffffffffu, coef_lane, k0 + k);
        if (k0 + k >= n) break;
#pragma unroll
        for (int v = 0; v < kVec; ++v) {
          o[v].x += coef * part[k][v].x, o[v].y += coef * part[k][v].y;
          o[v].z += coef * part[k][v].z, o[v].w += coef * part[k][v].w;
        }
      }
    }
  }
  Element* out = static_cast<Element*>(p.out) + b * p.o_batch_stride + (q_offset + i) * p.o_row_stride +
                 h * p.o_head_stride;
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
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
}

}  // namespace

// On sm90 and later the combine is launched as a programmatic dependent of the decode kernel: its CTAs are
// scheduled while the decode's last CTAs run and wait on the device, so the launch gap between the two kernels
// leaves the critical path.
template <class Element>
void launch_combine(const DecodeParams& p, int dim_v, void* stream, bool programmatic) {
  const std::int64_t items = static_cast<std::int64_t>(p.seqlen_q) * p.heads_q;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>((items + kCombineWarps - 1) / kCombineWarps),
                        static_cast<unsigned>(p.batch));
  config.blockDim = dim3(kCombineWarps * 32);
  config.stream = static_cast<cudaStream_t>(stream);
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = programmatic ? 1 : 0;
  const cudaError_t status = dim_v <= 128 ? cudaLaunchKernelEx(&config, paged_combine_kernel<Element, 1>, p, dim_v)
                                          : cudaLaunchKernelEx(&config, paged_combine_kernel<Element, 2>, p, dim_v);
  sm80::cuda_check(status, "paged combine kernel launch");
}

template void launch_combine<__nv_bfloat16>(const DecodeParams&, int, void*, bool);
template void launch_combine<__half>(const DecodeParams&, int, void*, bool);

}  // namespace ioattn::detail::paged
