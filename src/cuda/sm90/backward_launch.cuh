// ioattn sm90 backward: tile choice per head dim, the tensor maps, and the launch of the main kernel. Included by
// the instantiation files only.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include "api/problem.hpp"
#include "cuda/device_attribute.hpp"
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

// IOATTN_SM90_BWD_DQ (read once) picks how dQ reaches the accumulator, for side-by-side timing: 0 (the default),
// TMA reduce-adds (one per tile; at head dim 256 one per 32-column piece); 1, the consumers' two-wide atomics from
// registers.
constexpr int kDefaultDqMode = kDqTmaReduce;
inline int dq_mode_from_env() {
  static const int mode = [] {
    const char* env = std::getenv("IOATTN_SM90_BWD_DQ");
    const int m = env && *env ? std::atoi(env) : kDefaultDqMode;
    return m == kDqTmaReduce || m == kDqRegisters ? m : kDefaultDqMode;
  }();
  return mode;
}

// IOATTN_SM90_BWD_ORDER (read once) picks the item order (backward_scheduler.cuh), for side-by-side timing: 0, a CTA
// per item (the default); 2, heavy-first persistent. Measured on an H200 (2026-11-21, bf16, D 64 and 128, 512-16k
// tokens, causal and not): heavy-first was no faster anywhere (D 64 within 2%, D 128 1-7% slower from 512 to 4k,
// and 30% slower at 16k causal, where a section of one pair leaves the heavy items unsorted across CTAs). Two more
// tries, same day, not kept: a zigzag persistent order over this order's items (no faster at D 128 from 512 to 8k,
// 30% slower at 16k causal), and at D 64 two K and V buffers, so that the next item's loads run under the whole of
// this one (the kernel's spills went from 200 to 344 bytes and D 64 lost 5-12% in both orders).
constexpr BackwardOrder kDefaultBackwardOrder = BackwardOrder::one_per_cta;
inline BackwardOrder backward_order_from_env() {
  static const BackwardOrder order = [] {
    const char* env = std::getenv("IOATTN_SM90_BWD_ORDER");
    const int o = env && *env ? std::atoi(env) : int(kDefaultBackwardOrder);
    return o == int(BackwardOrder::one_per_cta) || o == int(BackwardOrder::heavy_first) ? BackwardOrder(o)
                                                                                          : kDefaultBackwardOrder;
  }();
  return order;
}

// The items and their order; CTAs: one per item, or (heavy-first) one per SM, at most one per item.
template <class Traits>
BackwardSchedule make_backward_schedule(const BackwardProblem& p, BackwardOrder order, int& ctas) {
  BackwardSchedule s{};
  // The deterministic dQ order has each query tile take its key tiles' adds from the last down, and a CTA wait only
  // on CTAs launched before it (backward_kernel.cuh, DqTurn): one CTA per item, each pair's key tiles descending.
  if (p.deterministic) order = BackwardOrder::one_per_cta;
  s.order = int(order);
  s.keys_descending = p.deterministic;
  s.num_n_blocks = int((p.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN);
  s.pairs = int(p.heads_kv * p.batch);
  s.num_items = std::int64_t(s.num_n_blocks) * s.pairs;
  // heavy-first sorts the items of as many (kv head, sequence) pairs together as have their Q and dO (all heads of
  // the group) and K and V in half the L2, at least one.
  const std::int64_t l2 = device_attribute<cudaDevAttrL2CacheSize>(p.device_index, 50 << 20,
                                                                   "cudaDeviceGetAttribute(L2 cache size)");
  const std::int64_t pair_bytes = 2 * (p.group_size() * p.seqlen_q + p.seqlen_k) * std::int64_t(Traits::kDim) *
                                  std::int64_t(sizeof(typename Traits::Element));
  s.section_pairs = int(std::clamp<std::int64_t>(l2 / 2 / std::max<std::int64_t>(pair_bytes, 1), 1, s.pairs));
  if (order == BackwardOrder::one_per_cta) {
    ctas = int(s.num_items);
  } else {
    const int sms = device_attribute<cudaDevAttrMultiProcessorCount>(
        p.device_index, 132, "cudaDeviceGetAttribute(multiprocessor count)");
    ctas = int(std::min<std::int64_t>(s.num_items, sms));
  }
  return s;
}

// IOATTN_SM90_BWD_DKV_STORE (read once) picks how dK and dV leave, for side-by-side timing: 0 (the default), by
// TMA store from shared memory where the tensors allow a tensor map; 1, always straight from registers.
inline bool dkv_tma_from_env() {
  static const bool tma = [] {
    const char* env = std::getenv("IOATTN_SM90_BWD_DKV_STORE");
    return !(env && *env && std::atoi(env) == 1);
  }();
  return tma;
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
  // dq_accum [rows][heads_q][dim] (fp32) seen as (rows, dim, heads, batch), dense rows per sequence.
  const std::int64_t accum_row_stride = p.heads_q * std::int64_t(Traits::kDim);
  Tensor accum = make_tensor(make_gmem_ptr(buffers.dq_accum),
                             make_shape(int(rows_q > 1 ? rows_q : 1), int(Traits::kDim), int(p.heads_q), int(batches)),
                             make_stride(accum_row_stride, _1{}, std::int64_t(Traits::kDim),
                                         batches > 1 ? rows_q * accum_row_stride : std::int64_t(Traits::kDim)));
  bp.tma_dq = make_tma_copy(SM90_TMA_REDUCE_ADD{}, accum, typename Traits::SmemLayoutdQ{},
                            Shape<Int<Traits::kBlockM>, Int<Traits::kDqPiece>>{}, _1{});
  constexpr std::int64_t kElementBytes = sizeof(typename Traits::Element);
  bp.dkv_tma = dkv_tma_from_env() && tma_describable(p.dk, rows_k, p.heads_kv, batches, kElementBytes) &&
               tma_describable(p.dv, rows_k, p.heads_kv, batches, kElementBytes);
  if (bp.dkv_tma) {
    bp.tma_dk = make_tma_copy(SM90_TMA_STORE{}, view(p.dk, rows_k, p.heads_kv), smem_kv, TileK{}, _1{});
    bp.tma_dv = make_tma_copy(SM90_TMA_STORE{}, view(p.dv, rows_k, p.heads_kv), smem_kv, TileK{}, _1{});
  }
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
  bp.dq_sem = buffers.dq_sem;
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
  bp.softcap = p.softcap;
  bp.alibi_slopes = p.alibi_slopes;
  bp.alibi_batch_stride = p.alibi_batch_stride;
  bp.window_left = p.mask.window_left;
  bp.window_right = p.mask.window_right;
  bp.top_left = p.mask.alignment == Alignment::top_left;
  bp.clear_overhang = p.is_varlen() && !unsafe_varlen_overhang_from_env();
  return bp;
}

template <class Traits, int kDqMode, bool kScoreMod = false>
void launch_backward_kernel(const BackwardProblem& p, const BackwardBuffers& buffers) {
  constexpr int kSmem = Traits::kSmemBytes;
  auto kernel = &backward_kernel<Traits, kDqMode, kScoreMod>;
  opt_in_shared_memory(reinterpret_cast<const void*>(kernel), kSmem, p.device_index, "cuda_sm90 backward");
  BackwardParams<Traits> bp = make_backward_params<Traits>(p, buffers);
  int ctas = 0;
  bp.schedule = make_backward_schedule<Traits>(p, backward_order_from_env(), ctas);
  if (ctas == 0) return;
  kernel<<<dim3(unsigned(ctas)), Traits::kThreads, kSmem, static_cast<cudaStream_t>(p.stream)>>>(bp);
  sm80::cuda_check(cudaGetLastError(), "cuda_sm90 backward kernel launch");
}

template <DType kDtype, int kDim>
void launch_backward(const BackwardProblem& p, const BackwardBuffers& buffers) {
  using Traits = BackwardTraits<BackwardElement<kDtype>, kDim, backward_block_m(kDim)>;
  if (p.batch == 0 || p.seqlen_k == 0 || p.heads_kv == 0) return;
  if constexpr (Traits::kSplitDim) {
    // Head dim 256: dQ in pieces (backward_traits.cuh); the deterministic order is the TMA reduce-add's.
    if (p.softcap > 0.0f || p.alibi_slopes != nullptr) {
      launch_backward_kernel<Traits, kDqTmaReduce, true>(p, buffers);
    } else if (buffers.dq_sem != nullptr || dq_mode_from_env() == kDqTmaReduce) {
      launch_backward_kernel<Traits, kDqTmaReduce>(p, buffers);
    } else {
      launch_backward_kernel<Traits, kDqRegisters>(p, buffers);
    }
  } else if (p.softcap > 0.0f || p.alibi_slopes != nullptr) {
    // Softcap and ALiBi have one kernel, with the TMA reduce-add (IOATTN_SM90_BWD_DQ does not apply): each dQ mode
    // more would be one more kernel to compile per head dim and dtype for a timing comparison.
    launch_backward_kernel<Traits, kDqTmaReduce, true>(p, buffers);
  } else if (buffers.dq_sem != nullptr) {
    // The deterministic order waits on the dQ warp's semaphores: the TMA reduce-add path only.
    launch_backward_kernel<Traits, kDqTmaReduce>(p, buffers);
  } else if (dq_mode_from_env() == kDqTmaReduce) {
    launch_backward_kernel<Traits, kDqTmaReduce>(p, buffers);
  } else {
    launch_backward_kernel<Traits, kDqRegisters>(p, buffers);
  }
}

}  // namespace ioattn::detail::sm90
