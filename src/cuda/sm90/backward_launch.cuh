// ioattn sm90 backward: tile choice per head dim, the tensor maps, and the launch of the main kernel. Included by
// the instantiation files only.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include "api/problem.hpp"
#include "cuda/shared_memory.hpp"
#include "cuda/sm80/common/cuda_check.cuh"
#include "cuda/sm90/backward.hpp"
#include "cuda/sm90/backward_kernel.cuh"
#include "cuda/sm90/backward_traits.cuh"
#include "cuda/sm90/tma_view.cuh"
#include "cuda/sm90/varlen_isolation.hpp"

namespace ioattn::detail::sm90 {

template <DType kDtype>
using BackwardElement = std::conditional_t<kDtype == DType::f16, cutlass::half_t, cutlass::bfloat16_t>;

// Query tile per head dim (keys: 128 per CTA). Head dim 64 takes 128 queries: S^T and dP^T are 64 registers a
// thread each, dK and dV 32; head dim 128 takes 64 queries: S^T, dP^T 32, dK and dV 64 each.
template <int kDim>
constexpr int backward_block_m() {
  return kDim == 64 ? 128 : 64;
}

template <class Traits>
BackwardParams<Traits> make_backward_params(const BackwardProblem& p, const BackwardBuffers& buffers) {
  const bool varlen = p.is_varlen();
  const std::int64_t batches = varlen ? 1 : p.batch;
  const std::int64_t rows_q = varlen ? p.total_q : p.seqlen_q;
  const std::int64_t rows_k = varlen ? p.total_k : p.seqlen_k;
  using TileQ = Shape<Int<Traits::kBlockM>, Int<Traits::kDim>>;
  using TileK = Shape<Int<Traits::kBlockN>, Int<Traits::kDim>>;
  const auto smem_q = take<0, 2>(typename Traits::SmemLayoutQ{});

  const auto view = [&](const Operand& x, std::int64_t rows, std::int64_t heads) {
    return make_gmem_view<typename Traits::Element, Traits::kDim>(x, rows, heads, batches);
  };

  BackwardParams<Traits> bp{};
  bp.tma_q = make_tma_copy(SM90_TMA_LOAD{}, view(p.q, rows_q, p.heads_q), smem_q, TileQ{}, _1{});
  bp.tma_dout = make_tma_copy(SM90_TMA_LOAD{}, view(p.dout, rows_q, p.heads_q), smem_q, TileQ{}, _1{});
  const auto smem_kv = typename Traits::SmemLayoutK{};
  bp.tma_k = make_tma_copy(SM90_TMA_LOAD{}, view(p.k, rows_k, p.heads_kv), smem_kv, TileK{}, _1{});
  bp.tma_v = make_tma_copy(SM90_TMA_LOAD{}, view(p.v, rows_k, p.heads_kv), smem_kv, TileK{}, _1{});
  bp.map_rows_q = int(rows_q);
  bp.map_rows_k = int(rows_k);
  bp.map_batch = int(batches);
  bp.heads_q = int(p.heads_q);
  bp.heads_kv = int(p.heads_kv);
  bp.group_size = int(p.group_size());
  bp.lse2 = buffers.lse2;
  bp.delta = buffers.delta;
  bp.dq_accum = buffers.dq_accum;
  bp.rows = buffers.rows;
  bp.dk = p.dk.ptr;
  bp.dk_batch_stride = p.dk.batch_stride, bp.dk_row_stride = p.dk.seq_stride, bp.dk_head_stride = p.dk.head_stride;
  bp.dv = p.dv.ptr;
  bp.dv_batch_stride = p.dv.batch_stride, bp.dv_row_stride = p.dv.seq_stride, bp.dv_head_stride = p.dv.head_stride;
  bp.cu_seqlens_q = p.cu_seqlens_q;
  bp.cu_seqlens_k = p.cu_seqlens_k;
  bp.total_q = p.total_q;
  bp.total_k = p.total_k;
  bp.seqlen_q = int(p.seqlen_q);
  bp.seqlen_k = int(p.seqlen_k);
  bp.scale = p.scale;
  bp.scale_log2 = p.scale * 1.4426950408889634f;
  bp.window_left = p.mask.window_left;
  bp.window_right = p.mask.window_right;
  bp.top_left = p.mask.alignment == Alignment::top_left;
  bp.clear_overhang = p.is_varlen() && !unsafe_varlen_overhang_from_env();
  return bp;
}

template <DType kDtype, int kDim>
void launch_backward(const BackwardProblem& p, const BackwardBuffers& buffers) {
  using Traits = BackwardTraits<BackwardElement<kDtype>, kDim, backward_block_m<kDim>()>;
  constexpr int kSmem = Traits::kSmemBytes;
  auto kernel = &backward_kernel<Traits>;
  if (p.batch == 0 || p.seqlen_k == 0 || p.heads_kv == 0) return;

  opt_in_shared_memory(reinterpret_cast<const void*>(kernel), kSmem, p.device_index, "cuda_sm90 backward");
  const BackwardParams<Traits> bp = make_backward_params<Traits>(p, buffers);
  const dim3 grid{unsigned((p.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN), unsigned(p.heads_kv),
                  unsigned(p.batch)};
  kernel<<<grid, Traits::kThreads, kSmem, static_cast<cudaStream_t>(p.stream)>>>(bp);
  sm80::cuda_check(cudaGetLastError(), "cuda_sm90 backward kernel launch");
}

}  // namespace ioattn::detail::sm90
