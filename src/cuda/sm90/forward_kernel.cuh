// ioattn sm90 forward kernel: warp-specialized; one CTA per (query tile of 128 rows, head, sequence), or a
// persistent grid of one CTA per SM that walks those tiles in turn.
//
// Producer warpgroup: gives its registers away (setmaxnreg) and one thread issues TMA loads: per query tile, the Q
// tile (on its own mbarrier, once the consumers are done with the previous one), then K and V of each visible key
// tile, from the last down to the first, into a kStages-deep ring (PipelineTmaAsync: "full" barriers complete on
// the loads' byte counts, "empty" barriers on the consumers' releases).
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
#include "cuda/sm90/out_store.cuh"
#include "cuda/sm90/packed_gqa.cuh"
#include "cuda/sm90/tile_scheduler.cuh"
#include "cuda/sm90/wgmma_ops.cuh"

namespace ioattn::detail::sm90 {

using namespace cute;

// kOrder (tile_scheduler.cuh): one CTA per tile, or a persistent grid whose producer loads the next tile's K, V and
// Q while the consumers finish the last P V and the epilogue of the current one.
// kScoreMod: softcap and ALiBi (sm80::apply_score_mod on every tile, natural-unit logits); a separate kernel so
// that the plain one carries none of its code or registers.
template <class Traits, ForwardSchedule kSchedule, TileOrder kOrder, bool kScoreMod = false>
__global__ void __launch_bounds__(Traits::kThreads, 1) forward_kernel(CUTE_GRID_CONSTANT ForwardParams<Traits> const p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Element = typename Traits::Element;
  using Pipeline = typename Traits::Pipeline;
  using PipelineState = cutlass::PipelineState<Traits::kStages>;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  using PlainBarrier = cutlass::arch::ClusterBarrier;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDim = Traits::kDim;
  constexpr int kDimV = Traits::kDimV;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  auto& storage = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);
  const std::int64_t num_tiles = std::int64_t(p.num_m_blocks) * (p.heads_q / p.pack_gqa) * p.batch;
  const std::int64_t rounds = tile_rounds<kOrder>(num_tiles);

  Tensor sQ = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutV{});
  Tensor sVt = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutVt{});

  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int warpgroup = warp_idx / 4;
  if (warp_idx == 0 && cute::elect_one_sync()) {
    cute::prefetch_tma_descriptor(p.pack_gqa > 1 ? &p.tma_q_packed : p.tma_q.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
    Barrier::init(&storage.bar_q, 1);
    PlainBarrier::init(&storage.bar_q_empty, Traits::kConsumerThreads);
  }
  typename Pipeline::Params pipe_params;
  pipe_params.role = warpgroup == 0 ? Pipeline::ThreadCategory::Producer : Pipeline::ThreadCategory::Consumer;
  pipe_params.is_leader = threadIdx.x == 0;  // the one producer thread
  pipe_params.num_consumers = Traits::kConsumerThreads;
  pipe_params.transaction_bytes = Traits::kBytesK;
  Pipeline pipe_k(storage.pipe_k, pipe_params, Shape<_1, _1, _1>{});  // initializes its barriers (warp 0)
  pipe_params.transaction_bytes = Traits::kBytesV;
  Pipeline pipe_v(storage.pipe_v, pipe_params, Shape<_1, _1, _1>{});
  __syncthreads();  // barriers initialized and fenced before anyone waits on them

  if (warpgroup == 0) {
    // ---------------------------------------------------------------- producer
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegisters>();
    if (threadIdx.x != 0) return;
    PipelineState write = cutlass::make_producer_start_state<Pipeline>();
    int iter = 0;  // tiles with rows handled by this CTA
    for (std::int64_t round = 0; round < rounds; ++round) {
      const std::int64_t t = tile_of_round<kOrder>(round);
      if (t >= num_tiles) continue;
      const TileWork w = resolve_tile<kBlockM, kBlockN, kOrder>(p, t);
      if (!w.valid) continue;
      const int h_kv = w.h / p.group_size;
      const int bq = p.cu_seqlens_q != nullptr ? 0 : w.b;
      Tensor mQ = p.tma_q.get_tma_tensor(make_shape(p.map_rows_q, kDim, p.heads_q, p.map_batch))(_, _, w.h, bq);
      Tensor mK = p.tma_k.get_tma_tensor(make_shape(p.map_rows_k, kDim, p.heads_kv, p.map_batch))(_, _, h_kv, bq);
      Tensor mV = p.tma_v.get_tma_tensor(make_shape(p.map_rows_k, kDimV, p.heads_kv, p.map_batch))(_, _, h_kv, bq);
      // (kBlockM, kDim), (kBlockN, kDim, n_blocks) and (kBlockN, kDimV, n_blocks), in rows of this sequence.
      Tensor gQ = local_tile(domain_offset(make_coord(int(w.span.q_offset), _0{}), mQ),
                             Shape<Int<kBlockM>, Int<kDim>>{}, make_coord(w.m_block, _0{}));
      Tensor gK = local_tile(domain_offset(make_coord(int(w.span.k_offset), _0{}), mK),
                             Shape<Int<kBlockN>, Int<kDim>>{}, make_coord(_, _0{}));
      Tensor gV = local_tile(domain_offset(make_coord(int(w.span.k_offset), _0{}), mV),
                             Shape<Int<kBlockN>, Int<kDimV>>{}, make_coord(_, _0{}));
      auto [tQgQ, tQsQ] = tma_partition(p.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
      auto [tKgK, tKsK] = tma_partition(p.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
      auto [tVgV, tVsV] = tma_partition(p.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));

      // Q's buffer is free once both consumer warpgroups' last Q K^T of the previous tile has retired (before its
      // last P V and epilogue); the first K is issued before waiting for that, since its stage frees up earlier.
      auto load_q = [&] {
        if (iter > 0) PlainBarrier::wait(&storage.bar_q_empty, (iter - 1) & 1);
        if (p.pack_gqa > 1) {
          Barrier::arrive_and_expect_tx(&storage.bar_q, p.q_tile_bytes);
          load_packed_q<kBlockM, kDim>(&p.tma_q_packed, &storage.bar_q, storage.q.data(),
                                       int(w.span.q_offset) + w.row0, h_kv, bq);
        } else {
          Barrier::arrive_and_expect_tx(&storage.bar_q, Traits::kBytesQ);
          copy(p.tma_q.with(storage.bar_q), tQgQ, tQsQ);
        }
      };
      for (int n_block = w.n_block_max - 1; n_block >= w.n_block_min; --n_block) {
        pipe_k.producer_acquire(write);
        copy(p.tma_k.with(*pipe_k.producer_get_barrier(write)), tKgK(_, n_block), tKsK(_, write.index()));
        if (n_block == w.n_block_max - 1) load_q();
        pipe_v.producer_acquire(write);
        copy(p.tma_v.with(*pipe_v.producer_get_barrier(write)), tVgV(_, n_block), tVsV(_, write.index()));
        ++write;
      }
      if (w.n_block_max <= w.n_block_min) load_q();
      ++iter;
    }
  } else {
    // ---------------------------------------------------------------- consumers
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegisters>();
    const int ctid = int(threadIdx.x) - 128;
    const int consumer = warpgroup - 1;
    typename Traits::TiledMmaQK mma_qk;
    typename Traits::TiledMmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(ctid);
    auto thr_pv = mma_pv.get_thread_slice(ctid);
    Tensor tSrQ = thr_qk.partition_fragment_A(sQ);   // descriptors
    Tensor tSrK = thr_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, stage)
    Tensor tOrV = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stage)
    Tensor acc_o = partition_fragment_C(mma_pv, Shape<Int<kBlockM>, Int<kDimV>>{});

    // (row, col) in the query tile of each S element, rowcol view; rows include the warpgroup's 64-row offset.
    Tensor cS = thr_qk.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
    Tensor rC = make_tensor(cS.data(), gmma_rowcol_layout(cS.layout()));
    constexpr int kRows = decltype(size<0>(rC))::value;
    Tensor cO = thr_pv.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kDimV>>{}));

    // Packed GQA with a group that does not divide kBlockM: the tile's last rows hold no query and no load writes
    // them; zero them once, so that the products never read stale or uninitialized shared memory.
    if (const int packed_rows = kBlockM / p.pack_gqa * p.pack_gqa; packed_rows < kBlockM) {
      zero_smem_rows<Traits::kConsumerThreads>(sQ, packed_rows, ctid);
    }
    if constexpr (kSchedule == ForwardSchedule::overlapped) WarpgroupTurns{consumer}.start();
    PipelineState read;
    int iter = 0;
    for (std::int64_t round = 0; round < rounds; ++round) {
      const std::int64_t t = tile_of_round<kOrder>(round);
      if (t >= num_tiles) continue;
      const TileWork w = resolve_tile<kBlockM, kBlockN, kOrder>(p, t);
      if (!w.valid) continue;
      sm80::ScoreMod mod{p.scale, 0.0f, 0.0f, false};
      if constexpr (kScoreMod) {
        mod.softcap = p.softcap;
        mod.alibi_slope = p.alibi_slopes ? p.alibi_slopes[w.b * p.alibi_batch_stride + w.h] : 0.0f;
        mod.natural = true;
      }
      OnlineSoftmax<kRows> softmax(kScoreMod ? mod.to_log2() : p.scale_log2);
      clear(acc_o);
      Barrier::wait(&storage.bar_q, iter & 1);  // even with no key tile: the load must land before the CTA exits

      // Key tiles every row of the tile sees whole, inside the sequence, need no mask: [n_full_lo, n_full_hi)
      // (MaskRule::classify's `full` test; a row's visible keys only move right as the row grows).
      const std::int64_t full_lo = (w.rule.key_begin(w.row0 + w.rows_here - 1) + kBlockN - 1) / kBlockN;
      const std::int64_t key_end_first = w.rule.key_end(w.row0);
      // Varlen: the packed tensor map delivers the next sequence's rows past this one's end (zero_v_rows). Dense
      // maps end with the sequence, and TMA fills what lies past a map's end with zeros.
      int v_rows_first = kBlockN;
      if (p.clear_v_overhang && w.n_block_max * kBlockN > int(w.span.k_len)) {
        v_rows_first = int(w.span.k_len) - (w.n_block_max - 1) * kBlockN;
      }
      MainloopArgs<Traits, decltype(tSrQ), decltype(tSrK), decltype(tOrV), decltype(rC), decltype(acc_o)> args{
          pipe_k, pipe_v, mma_qk, mma_pv, tSrQ, tSrK, tOrV, rC, acc_o, w.rule, w.row0, p.pack_gqa, w.n_block_min,
          w.n_block_max, full_lo > INT_MAX ? INT_MAX : int(full_lo),
          key_end_first > 0 ? int(key_end_first / kBlockN) : 0, consumer, ctid, mod, v_rows_first,
          storage.v.data(), &storage.bar_q_empty};
      consumer_mainloop<Traits, kSchedule, kScoreMod>(args, softmax, read);  // arrives on bar_q_empty

      // Epilogue: finalize each row through core::SoftmaxState (sink, empty rows), scale O once, store O and LSE.
      const TileRows rows = TileRows::of(w, p.pack_gqa);
      float row_lse[kRows];
      {
        Tensor rO = make_tensor(acc_o.data(), gmma_rowcol_layout(acc_o.layout()));
        CUTE_UNROLL
        for (int mi = 0; mi < kRows; ++mi) {
          core::SoftmaxState<float> state;
          // Plain: raw-product units, scaled here; score mod: already natural-unit logits.
          const float m_natural = kScoreMod ? softmax.row_max[mi] : softmax.row_max[mi] * p.scale;
          state.m = softmax.row_max[mi] == -INFINITY ? -INFINITY : m_natural;
          state.l = sm80::quad_sum(softmax.row_sum[mi]);
          const float keep = p.sinks ? state.add_sink(p.sinks[rows.head(get<0>(rC(mi, 0)))]) : 1.0f;
          const float factor = keep * state.inv_sum();
          row_lse[mi] = state.lse();
          CUTE_UNROLL
          for (int ni = 0; ni < size<1>(rO); ++ni) rO(mi, ni) *= factor;
        }
      }

      store_lse(p, w.b, rows, row_lse, rC);
      store_out_tile<typename Traits::OutStore>(p, storage.out.data(), acc_o, w, rows, cO, consumer, ctid);
      ++iter;
    }
    out_store_drain(ctid);
  }
#endif
}

}  // namespace ioattn::detail::sm90
