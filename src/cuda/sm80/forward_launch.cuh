// ioattn sm80 forward: tile choice per head dim, and the launch. Included by the instantiation files only.
#pragma once

#include <cstdint>
#include <cstdlib>

#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include "api/problem.hpp"
#include "cuda/shared_memory.hpp"
#include "cuda/sm80/common/cuda_check.cuh"
#include "cuda/sm80/forward.cuh"
#include "cuda/sm80/forward_kernel.cuh"
#include "cuda/sm80/forward_params.cuh"
#include "cuda/sm80/forward_traits.cuh"

namespace ioattn::detail::sm80 {

template <DType kDtype>
using ElementOf = std::conditional_t<kDtype == DType::f16, cutlass::half_t, cutlass::bfloat16_t>;

// Tile shapes per head dim (kBlockM x kBlockN, warps). The accumulators of O (kBlockM x dim_v) and S
// (kBlockM x kBlockN) live in registers: 128 x 64 with 4 warps keeps both under the 255-register limit up to dim 128;
// larger dims take 8 warps so each thread's share of O stays the same. Dim 64 ran 128 x 128 until 2026-11-21: its
// S accumulator then spilled (328 bytes at 255 registers); 128 x 64 (no spills) measured 3-39% faster on an H200.
template <DType kDtype, int kDimQK, int kDimV>
struct ForwardConfig;
template <DType kDtype>
struct ForwardConfig<kDtype, 64, 64> {
  using Traits = ForwardTraits<ElementOf<kDtype>, 64, 64, 128, 64, 4>;
};
template <DType kDtype>
struct ForwardConfig<kDtype, 96, 96> {
  using Traits = ForwardTraits<ElementOf<kDtype>, 96, 96, 128, 64, 4>;
};
template <DType kDtype>
struct ForwardConfig<kDtype, 128, 128> {
  using Traits = ForwardTraits<ElementOf<kDtype>, 128, 128, 128, 64, 4>;
};
template <DType kDtype>
struct ForwardConfig<kDtype, 192, 128> {
  using Traits = ForwardTraits<ElementOf<kDtype>, 192, 128, 128, 64, 8>;
};
template <DType kDtype>
struct ForwardConfig<kDtype, 256, 256> {
  using Traits = ForwardTraits<ElementOf<kDtype>, 256, 256, 128, 64, 8>;
};

inline ForwardParams make_forward_params(const Problem& p, int block_m) {
  ForwardParams fp{};
  fp.q = p.q.ptr;
  fp.k = p.k.ptr;
  fp.v = p.v.ptr;
  fp.out = p.out.ptr;
  fp.lse = static_cast<float*>(p.lse.ptr);
  fp.q_batch_stride = p.q.batch_stride, fp.q_row_stride = p.q.seq_stride, fp.q_head_stride = p.q.head_stride;
  fp.k_batch_stride = p.k.batch_stride, fp.k_row_stride = p.k.seq_stride, fp.k_head_stride = p.k.head_stride;
  fp.v_batch_stride = p.v.batch_stride, fp.v_row_stride = p.v.seq_stride, fp.v_head_stride = p.v.head_stride;
  fp.o_batch_stride = p.out.batch_stride, fp.o_row_stride = p.out.seq_stride, fp.o_head_stride = p.out.head_stride;
  fp.lse_batch_stride = p.lse.batch_stride, fp.lse_row_stride = p.lse.seq_stride;
  fp.lse_head_stride = p.lse.head_stride;
  fp.cu_seqlens_q = p.cu_seqlens_q;
  fp.cu_seqlens_k = p.cu_seqlens_k;
  fp.total_q = p.total_q;
  fp.total_k = p.total_k;
  fp.seqlen_q = static_cast<int>(p.seqlen_q);
  fp.seqlen_k = static_cast<int>(p.seqlen_k);
  fp.group_size = static_cast<int>(p.group_size());
  fp.scale = p.scale;
  fp.softcap = p.softcap;
  fp.alibi_slopes = p.alibi_slopes;
  fp.alibi_batch_stride = p.alibi_batch_stride;
  fp.sinks = p.sinks;
  fp.window_left = p.mask.window_left;
  fp.window_right = p.mask.window_right;
  fp.top_left = p.mask.alignment == Alignment::top_left;
  fp.num_m_blocks = static_cast<int>((p.seqlen_q + block_m - 1) / block_m);
  return fp;
}

#ifdef IOATTN_FWD_VARIANTS
// Tuning builds only (CMAKE_CUDA_FLAGS=-DIOATTN_FWD_VARIANTS): IOATTN_FWD_VARIANT=N picks a candidate at each launch
// (bench/sdpa_compare.py --variants times them side by side). 1: the generic kernel on the default tiles; 2, 3: the
// candidates below. Unset or 0: what every other build runs. Measured 2026-11-21 on an H200 (bf16, the PERF.md
// grid), against the default: the generic kernel 1-7% slower (equal at dim 128, 8k non-causal); dim 64 at 64 x 64
// 17-32% slower, at 128 x 128 3-28% slower; dim 128 at 128 x 32 from 7% slower to 2% faster (512 causal), within 1%
// from 4k up; dim 128 at 64 x 64 3-15% slower, except 4% faster at 512 causal.
template <DType kDtype, int kDimQK, int kDimV>
struct ForwardVariants {
  static constexpr bool kHas = false;
};
template <DType kDtype>
struct ForwardVariants<kDtype, 64, 64> {
  static constexpr bool kHas = true;
  using Traits2 = ForwardTraits<ElementOf<kDtype>, 64, 64, 64, 64, 4>;
  static constexpr bool kPlain2 = true;
  using Traits3 = ForwardTraits<ElementOf<kDtype>, 64, 64, 128, 128, 4>;  // the tiles before 2026-11-21
  static constexpr bool kPlain3 = false;
};
template <DType kDtype>
struct ForwardVariants<kDtype, 128, 128> {
  static constexpr bool kHas = true;
  using Traits2 = ForwardTraits<ElementOf<kDtype>, 128, 128, 128, 32, 4>;
  static constexpr bool kPlain2 = true;
  using Traits3 = ForwardTraits<ElementOf<kDtype>, 128, 128, 64, 64, 4>;
  static constexpr bool kPlain3 = true;
};
#endif

template <class Traits, bool kPlain>
void launch_forward_kernel(const Problem& p) {
  constexpr int kSmem = Traits::kSmemBytes;
  auto kernel = &forward_kernel<Traits, kPlain>;

  DeviceScope device(p.device_index);
  opt_in_shared_memory(reinterpret_cast<const void*>(kernel), kSmem, p.device_index, "cuda forward");

  const ForwardParams fp = make_forward_params(p, Traits::kBlockM);
  if (fp.num_m_blocks == 0 || p.batch == 0 || p.heads_q == 0) return;
  const dim3 grid(static_cast<unsigned>(fp.num_m_blocks), static_cast<unsigned>(p.heads_q),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, Traits::kNThreads, kSmem, static_cast<cudaStream_t>(p.stream)>>>(fp);
  cuda_check(cudaGetLastError(), "forward kernel launch");
}

template <DType kDtype, int kDimQK, int kDimV>
void launch_forward(const Problem& p) {
  using Traits = typename ForwardConfig<kDtype, kDimQK, kDimV>::Traits;
  // Without softcap or ALiBi (and with a positive scale) the plain kernel runs: no score-mod code in its mainloop.
  const bool plain = !(p.softcap > 0.0f) && p.alibi_slopes == nullptr && p.scale > 0.0f;
#ifdef IOATTN_FWD_VARIANTS
  using V = ForwardVariants<kDtype, kDimQK, kDimV>;
  const char* env = std::getenv("IOATTN_FWD_VARIANT");
  const int variant = env ? std::atoi(env) : 0;
  if (variant == 1) return launch_forward_kernel<Traits, false>(p);
  if constexpr (V::kHas) {
    if (variant == 2 && (plain || !V::kPlain2)) return launch_forward_kernel<typename V::Traits2, V::kPlain2>(p);
    if (variant == 3 && (plain || !V::kPlain3)) return launch_forward_kernel<typename V::Traits3, V::kPlain3>(p);
  }
#endif
  if (plain) return launch_forward_kernel<Traits, true>(p);
  launch_forward_kernel<Traits, false>(p);
}

}  // namespace ioattn::detail::sm80
