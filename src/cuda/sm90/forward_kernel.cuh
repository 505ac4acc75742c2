// ioattn sm90 forward kernel: one CTA per (query tile of 128 rows, head, batch); warp-specialized.
//
// Producer warpgroup: gives its registers away (setmaxnreg) and one thread issues TMA loads: the Q tile once (on
// its own mbarrier), then K and V of each visible key tile, from the last down to the first, into a kStages-deep
// ring (PipelineTmaAsync: "full" barriers complete on the loads' byte counts, "empty" barriers on the consumers'
// releases).
// Consumer warpgroups (64 query rows each): forward_mainloop.cuh (S = Q K^T by wgmma from shared memory, the online
// softmax, O += P V with P from registers); then the epilogue here divides O by the row sum once, through
// core::SoftmaxState (sinks, rows that saw nothing), and stores O and the LSE.
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include "ioattn/core/mask.hpp"
#include "ioattn/core/seqlen.hpp"
#include "ioattn/core/softmax_state.hpp"
#include "cuda/sm80/common/score_mod.cuh"
#include "cuda/sm80/common/tile_ops.cuh"
#include "cuda/sm90/forward_mainloop.cuh"
#include "cuda/sm90/forward_traits.cuh"
#include "cuda/sm90/wgmma_ops.cuh"

namespace ioattn::detail::sm90 {

using namespace cute;

// Offsets in device memory were never seen by the argument checks: keep a bad one from reaching outside the packed
// tensors (the result is then wrong, but no memory is touched that the call was not given).
__forceinline__ __device__ core::SeqSpan clamp_span(core::SeqSpan s, std::int64_t total_q, std::int64_t total_k) {
  s.q_offset = s.q_offset < 0 ? 0 : (s.q_offset > total_q ? total_q : s.q_offset);
  s.k_offset = s.k_offset < 0 ? 0 : (s.k_offset > total_k ? total_k : s.k_offset);
  s.q_len = s.q_len < 0 ? 0 : (s.q_len > total_q - s.q_offset ? total_q - s.q_offset : s.q_len);
  s.k_len = s.k_len < 0 ? 0 : (s.k_len > total_k - s.k_offset ? total_k - s.k_offset : s.k_len);
  return s;
}

template <class Traits, ForwardSchedule kSchedule>
__global__ void __launch_bounds__(Traits::kThreads, 1) forward_kernel(CUTE_GRID_CONSTANT ForwardParams<Traits> const p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Element = typename Traits::Element;
  using Pipeline = typename Traits::Pipeline;
  using PipelineState = cutlass::PipelineState<Traits::kStages>;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDim = Traits::kDim;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  auto& storage = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);

  // Heavy query tiles first: under a causal mask the last tiles see the most keys.
  const int m_block = p.num_m_blocks - 1 - int(blockIdx.x);
  const int h = blockIdx.y;
  const int b = blockIdx.z;

  core::SeqSpan span = core::seq_span(b, p.cu_seqlens_q, p.cu_seqlens_k, p.seqlen_q, p.seqlen_k);
  if (p.cu_seqlens_q != nullptr) span = clamp_span(span, p.total_q, p.total_k);
  const int q_len = int(span.q_len);
  const int k_len = int(span.k_len);
  const int row0 = m_block * kBlockM;
  if (row0 >= q_len) return;  // varlen: this sequence is shorter than the longest (uniform over the CTA)
  const int rows_here = min(kBlockM, q_len - row0);

  const core::MaskRule rule = core::MaskRule::make(p.window_left, p.window_right, p.top_left, q_len, k_len);
  int n_block_min = 0, n_block_max = 0;  // key tiles any row of this tile can see
  if (k_len > 0) {
    const std::int64_t key_lo = rule.tile_key_begin(row0);
    const std::int64_t key_hi = rule.tile_key_end(row0 + rows_here);
    if (key_hi > key_lo) {
      n_block_min = int(key_lo / kBlockN);
      n_block_max = int((key_hi + kBlockN - 1) / kBlockN);
    }
  }

  Tensor sQ = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutV{});
  Tensor sVt = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutVt{});

  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int warpgroup = warp_idx / 4;
  if (warp_idx == 0 && cute::elect_one_sync()) {
    cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
    Barrier::init(&storage.bar_q, 1);
  }
  typename Pipeline::Params pipe_params;
  pipe_params.role = warpgroup == 0 ? Pipeline::ThreadCategory::Producer : Pipeline::ThreadCategory::Consumer;
  pipe_params.is_leader = threadIdx.x == 0;  // the one producer thread
  pipe_params.num_consumers = Traits::kConsumerThreads;
  pipe_params.transaction_bytes = Traits::kBytesKV;
  Pipeline pipe_k(storage.pipe_k, pipe_params, Shape<_1, _1, _1>{});  // initializes its barriers (warp 0)
  Pipeline pipe_v(storage.pipe_v, pipe_params, Shape<_1, _1, _1>{});
  __syncthreads();  // barriers initialized and fenced before anyone waits on them

  if (warpgroup == 0) {
    // ---------------------------------------------------------------- producer
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegisters>();
    if (threadIdx.x == 0) {
      const int h_kv = h / p.group_size;
      const int bq = p.cu_seqlens_q != nullptr ? 0 : b;
      Tensor mQ = p.tma_q.get_tma_tensor(make_shape(p.map_rows_q, kDim, p.heads_q, p.map_batch))(_, _, h, bq);
      Tensor mK = p.tma_k.get_tma_tensor(make_shape(p.map_rows_k, kDim, p.heads_kv, p.map_batch))(_, _, h_kv, bq);
      Tensor mV = p.tma_v.get_tma_tensor(make_shape(p.map_rows_k, kDim, p.heads_kv, p.map_batch))(_, _, h_kv, bq);
      // (kBlockM, kDim) and (kBlockN, kDim, n_blocks), in rows of this sequence.
      Tensor gQ = local_tile(domain_offset(make_coord(int(span.q_offset), _0{}), mQ), Shape<Int<kBlockM>, Int<kDim>>{},
                             make_coord(m_block, _0{}));
      Tensor gK = local_tile(domain_offset(make_coord(int(span.k_offset), _0{}), mK), Shape<Int<kBlockN>, Int<kDim>>{},
                             make_coord(_, _0{}));
      Tensor gV = local_tile(domain_offset(make_coord(int(span.k_offset), _0{}), mV), Shape<Int<kBlockN>, Int<kDim>>{},
                             make_coord(_, _0{}));
      auto [tQgQ, tQsQ] = tma_partition(p.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
      auto [tKgK, tKsK] = tma_partition(p.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
      auto [tVgV, tVsV] = tma_partition(p.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));

      Barrier::arrive_and_expect_tx(&storage.bar_q, Traits::kBytesQ);
      copy(p.tma_q.with(storage.bar_q), tQgQ, tQsQ);
      PipelineState write = cutlass::make_producer_start_state<Pipeline>();
      for (int n_block = n_block_max - 1; n_block >= n_block_min; --n_block) {
        pipe_k.producer_acquire(write);
        copy(p.tma_k.with(*pipe_k.producer_get_barrier(write)), tKgK(_, n_block), tKsK(_, write.index()));
        pipe_v.producer_acquire(write);
        copy(p.tma_v.with(*pipe_v.producer_get_barrier(write)), tVgV(_, n_block), tVsV(_, write.index()));
        ++write;
      }
    }
  } else {
    // ---------------------------------------------------------------- consumers
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegisters>();
    const int ctid = int(threadIdx.x) - 128;
    typename Traits::TiledMmaQK mma_qk;
    typename Traits::TiledMmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(ctid);
    auto thr_pv = mma_pv.get_thread_slice(ctid);
    Tensor tSrQ = thr_qk.partition_fragment_A(sQ);   // descriptors
    Tensor tSrK = thr_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, stage)
    Tensor tOrV = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stage)
    Tensor acc_o = partition_fragment_C(mma_pv, Shape<Int<kBlockM>, Int<kDim>>{});

    // (row, col) in the query tile of each S element, rowcol view; rows include the warpgroup's 64-row offset.
    Tensor cS = thr_qk.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
    Tensor rC = make_tensor(cS.data(), gmma_rowcol_layout(cS.layout()));
    constexpr int kRows = decltype(size<0>(rC))::value;

    OnlineSoftmax<kRows> softmax(p.scale_log2);
    clear(acc_o);
    Barrier::wait(&storage.bar_q, 0);  // even with no key tile: the load must land before the CTA may exit

    // Key tiles every row of the tile sees whole, inside the sequence, need no mask: [n_full_lo, n_full_hi)
    // (MaskRule::classify's `full` test; a row's visible keys only move right as the row grows).
    const std::int64_t full_lo = (rule.key_begin(row0 + rows_here - 1) + kBlockN - 1) / kBlockN;
    const std::int64_t key_end_first = rule.key_end(row0);
    MainloopArgs<Traits, decltype(tSrQ), decltype(tSrK), decltype(tOrV), decltype(rC), decltype(acc_o)> args{
        pipe_k, pipe_v, mma_qk, mma_pv, tSrQ, tSrK, tOrV, rC, acc_o, rule, row0, n_block_min, n_block_max,
        full_lo > INT_MAX ? INT_MAX : int(full_lo), key_end_first > 0 ? int(key_end_first / kBlockN) : 0,
        warpgroup - 1};
    consumer_mainloop<Traits, kSchedule>(args, softmax);

    // Epilogue: finalize each row through core::SoftmaxState (sink, empty rows), scale O once, store O and LSE.
    const float sink = p.sinks ? p.sinks[h] : 0.0f;
    float row_lse[kRows];
    {
      Tensor rO = make_tensor(acc_o.data(), gmma_rowcol_layout(acc_o.layout()));
      CUTE_UNROLL
      for (int mi = 0; mi < kRows; ++mi) {
        core::SoftmaxState<float> state;
        state.m = softmax.row_max[mi] == -INFINITY ? -INFINITY : softmax.row_max[mi] * p.scale;
        state.l = sm80::quad_sum(softmax.row_sum[mi]);
        const float keep = p.sinks ? state.add_sink(sink) : 1.0f;
        const float factor = keep * state.inv_sum();
        row_lse[mi] = state.lse();
        CUTE_UNROLL
        for (int ni = 0; ni < size<1>(rO); ++ni) rO(mi, ni) *= factor;
      }
    }

    const std::int64_t q_row0 = span.q_offset + row0;
    if (p.lse != nullptr && get<1>(rC(0, 0)) == 0) {  // one lane of each quad writes its rows
      float* lse_ptr = p.lse + b * p.lse_batch_stride + q_row0 * p.lse_row_stride + h * p.lse_head_stride;
      CUTE_UNROLL
      for (int mi = 0; mi < kRows; ++mi) {
        const int row = get<0>(rC(mi, 0));
        if (row < rows_here) lse_ptr[row * p.lse_row_stride] = row_lse[mi];
      }
    }

    // O straight from registers: element pairs (2i, 2i+1) of the fragment are adjacent columns of one row, so
    // each store is 4 bytes at an even column of a 16-byte aligned row.
    Tensor rOut = sm80::convert_tensor<Element>(acc_o);
    Tensor cO = thr_pv.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kDim>>{}));
    Element* o_ptr = static_cast<Element*>(p.out) + b * p.o_batch_stride + q_row0 * p.o_row_stride +
                     h * p.o_head_stride;
    CUTE_UNROLL
    for (int i = 0; i < size(rOut) / 2; ++i) {
      const int row = get<0>(cO(2 * i));
      const int col = get<1>(cO(2 * i));
      if (row < rows_here) {
        *reinterpret_cast<std::uint32_t*>(o_ptr + row * p.o_row_stride + col) =
            *reinterpret_cast<const std::uint32_t*>(&rOut(2 * i));
      }
    }
  }
#endif
}

}  // namespace ioattn::detail::sm90
