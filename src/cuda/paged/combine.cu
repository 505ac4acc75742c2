// ioattn cuda paged: the combine of split-KV chunks. One warp per (query row, head) of a sequence with more than one
// chunk: the chunks' partial results (each normalized by its own sum, lse without the sink) are merged in chunk
// order through core::SoftmaxState::add_partial, the sink is added once, and out and lse are written. The order is
// fixed, so the result depends only on the chunks, never on timing (no atomics).
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/paged/decode.hpp"
#include "cuda/paged/decode_kernel.cuh"
#include "cuda/sm80/common/cuda_check.cuh"

namespace ioattn::detail::paged {
namespace {

constexpr int kCombineWarps = 4;
constexpr int kMaxVecPerLane = 2;  // float4s per lane: dim_v up to 256

template <class Element>
__global__ void __launch_bounds__(kCombineWarps * 32) paged_combine_kernel(const DecodeParams p, int dim_v) {
  using Mma = MmaOp<Element>;
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
  core::SoftmaxState<float> state;
  float4 o[kMaxVecPerLane];
#pragma unroll
  for (int v = 0; v < kMaxVecPerLane; ++v) o[v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);

  for (int s0 = 0; s0 < chunks; s0 += 32) {
    // The next 32 chunks' lse in one coalesced-ish read, then the sequential merge from registers.
    const float lse_lane = s0 + lane < chunks ? p.partial_lse[(s0 + lane) * split_stride + slot0] : -INFINITY;
    const int n = min(32, chunks - s0);
#pragma unroll 4
    for (int k = 0; k < n; ++k) {
      const float lse_s = __shfl_sync(0xffffffffu, lse_lane, k);
      const float* part = p.partial_out + ((s0 + k) * split_stride + slot0) * dim_v;
      float weight;
      const float keep = state.add_partial(lse_s, weight);
#pragma unroll
      for (int v = 0; v < kMaxVecPerLane; ++v) {
        const int c = (lane + 32 * v) * 4;
        if (c < dim_v) {
          const float4 x = *reinterpret_cast<const float4*>(part + c);
          o[v].x = o[v].x * keep + weight * x.x, o[v].y = o[v].y * keep + weight * x.y;
          o[v].z = o[v].z * keep + weight * x.z, o[v].w = o[v].w * keep + weight * x.w;
        }
      }
    }
  }
  float factor = 1.0f;
  if (p.sinks) factor = state.add_sink(p.sinks[h]);
  factor *= state.inv_sum();
  Element* out = static_cast<Element*>(p.out) + b * p.o_batch_stride + (q_offset + i) * p.o_row_stride +
                 h * p.o_head_stride;
#pragma unroll
  for (int v = 0; v < kMaxVecPerLane; ++v) {
    const int c = (lane + 32 * v) * 4;
    if (c < dim_v) {
      uint2 packed;
      packed.x = Mma::pack(o[v].x * factor, o[v].y * factor);
      packed.y = Mma::pack(o[v].z * factor, o[v].w * factor);
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
  sm80::cuda_check(cudaLaunchKernelEx(&config, paged_combine_kernel<Element>, p, dim_v), "paged combine kernel launch");
}

template void launch_combine<__nv_bfloat16>(const DecodeParams&, int, void*, bool);
template void launch_combine<__half>(const DecodeParams&, int, void*, bool);

}  // namespace ioattn::detail::paged
