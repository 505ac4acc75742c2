// ioattn sm90 backward kernel: warp-specialized CTAs, each taking one or more items (key tile of 128, kv head,
// sequence) in the order of backward_scheduler.cuh.
//
// Producer warpgroup (registers given away):
//  - warp 0 loads: per item, K and V of its key tile by TMA (once the consumers released the last item's); then, for
//    each query tile that sees a key of the tile (for every query head of the kv head's GQA group), Q and dO by TMA
//    and the rows' lse2 and delta by plain loads into a kStages-deep ring that runs on across items. A stage's
//    "full" barrier completes on the arrive of each of the warp's lanes (after its own lse2 / delta stores, which
//    the arrive releases) and the TMA bytes; its "empty" barrier on the arrive of every consumer thread.
//  - warp 1 stores dQ: per query tile, once the consumers put the fp32 dQ tile in shared memory, one TMA reduce-add
//    into the global accumulator (deterministic: in its turn, DqTurn); the buffer is handed back when the TMA unit
//    has read it. At head dim 256, warps 1 and 2 each serve one consumer warpgroup, in 32-column pieces.
// Consumers (two warpgroups, 64 keys each; at head dim 256 the same 64 keys, half the columns each:
// backward_traits.cuh), per query tile:
//   S^T, dP^T by wgmma; P^T = 2^(S^T scale log2(e) - lse2) (masked entries 0); dS^T = P^T (dP^T - delta) (with
//   softcap or ALiBi: the logits and the softcap's derivative in between, backward_scores.cuh);
//   dV += P^T dO and dK += dS^T Q by wgmma with P^T, dS^T from registers; dS^T also to shared memory; after a
//   named barrier (both halves of dS written), dQ = dS K by wgmma, then to shared memory for warp 1. dK and dV stay
//   in registers to the item's end: the CTA owns its keys for every query head of the group, so they need no
//   atomics. A whole key tile's dK and dV then go by stmatrix into K's and V's shared memory and out by one TMA
//   store each, after which K and V are released for the next item; a partial tile's (or where dk, dv allow no
//   tensor map) go straight from registers, K and V released before, so the next item's loads run under them.
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "ioattn/core/mask.hpp"
#include "ioattn/core/seqlen.hpp"
#include "cuda/sm80/common/tile_ops.cuh"
#include "cuda/sm90/backward_scheduler.cuh"
#include "cuda/sm90/backward_scores.cuh"
#include "cuda/sm90/backward_traits.cuh"
#include "cuda/sm90/wgmma_ops.cuh"

namespace ioattn::detail::sm90 {

using namespace cute;

// Named barriers (after CUTLASS's reserved ones). kDsReady: the consumer warpgroups, once both wrote their dS.
// kDqEmpty / kDqFull: the consumers and the dQ warp, handing the shared dQ tile back and forth. kZeroRows: the
// consumer warpgroups, once both zeroed the rows past a varlen sequence (zero_rows_past). kEpilogue: the consumer
// warpgroups around writing dK and dV into K's and V's shared memory.
constexpr std::uint32_t kDsReadyBarrier = 1;
constexpr std::uint32_t kDqEmptyBarrier = 2;
constexpr std::uint32_t kDqFullBarrier = 3;
constexpr std::uint32_t kZeroRowsBarrier = 4;
constexpr std::uint32_t kEpilogueBarrier = 5;
// Head dim 256 (kSplitDim): each consumer warpgroup hands dQ to a dQ warp of its own; kDqEmpty / kDqFull are
// warpgroup 0's, these warpgroup 1's.
constexpr std::uint32_t kDqEmptyBarrier1 = 6;
constexpr std::uint32_t kDqFullBarrier1 = 7;

// How dQ reaches the global fp32 accumulator (the kernel's kDqMode: one kernel each, so that each carries only its
// own path's registers). Measured on an H200 at d 128 (2026-11-21): the TMA reduce-add is 5-17% faster than the
// consumers' atomics, and a producer warp's red.global.add.v4 from shared memory was half as fast (removed).
constexpr int kDqTmaReduce = 0;  // consumers -> shared memory -> one TMA reduce-add per tile (warp 1)
constexpr int kDqRegisters = 1;  // consumers' red.global.add.v2 straight from the accumulator

__forceinline__ __device__ void red_add_v2(float* dst, float a, float b) {
  asm volatile("red.relaxed.gpu.global.add.v2.f32 [%0], {%1, %2};" ::"l"(dst), "f"(a), "f"(b) : "memory");
}

// Varlen isolation, as in the forward (zero_v_rows): a tensor map bounds only the packed tensor, so the rows of a
// partial last tile past the sequence's end hold the next sequence's K, V, Q or dO. Their P and dS are 0, but the
// products still multiply those rows, and 0 x Inf = NaN would carry a neighbour's non-finite K (through dQ = dS K),
// V (dS = P (dP - delta)), Q (dK += dS^T Q) or dO (dV += P^T dO) into this sequence's gradients. So rows
// [first_row, kRows) of the tile `rows` ((kRows, kDim) in shared memory, 128-byte swizzled, which keeps whole
// 16-byte chunks contiguous) are zeroed by all consumer threads, then published before any product reads them.
template <int kRows, int kDim, int kConsumerThreads, class SmemTile>
__forceinline__ __device__ void zero_rows_past(SmemTile rows, int first_row, int ctid) {
  constexpr int kChunks = kDim / 8;  // 16-byte chunks of 16-bit elements
  for (int item = first_row * kChunks + ctid; item < kRows * kChunks; item += kConsumerThreads) {
    const std::uint32_t addr =
        cute::cast_smem_ptr_to_uint(raw_pointer_cast(&rows(item / kChunks, item % kChunks * 8)));
    asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(addr), "r"(0) : "memory");
  }
}

// Ordinary stores that wgmma (the async proxy) reads next: a proxy fence in every writing thread, then the barrier
// that both consumer warpgroups pass.
template <int kConsumerThreads>
__forceinline__ __device__ void publish_zeroed_rows() {
  cutlass::arch::fence_view_async_shared();
  cutlass::arch::NamedBarrier::sync(kConsumerThreads, kZeroRowsBarrier);
}

// The work of one CTA: its keys and the query tiles that see any of them.
struct KeyTileWork {
  core::SeqSpan span;
  core::MaskRule rule;
  int key0;            // first key of the tile, in the sequence
  int m_lo, n_m;       // query tiles [m_lo, m_lo + n_m) of every query head of the group
  std::int64_t flat_q0;  // flat row (workspace index) of the sequence's first query
};

template <class Traits, class Params>
__forceinline__ __device__ KeyTileWork resolve_key_tile(const Params& p, int n_block, int b) {
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN;
  KeyTileWork w;
  w.span = core::seq_span(b, p.cu_seqlens_q, p.cu_seqlens_k, p.seqlen_q, p.seqlen_k);
  if (p.cu_seqlens_q != nullptr) w.span = core::clamp_to_packed(w.span, p.total_q, p.total_k);
  w.rule = core::MaskRule::make(p.window_left, p.window_right, p.top_left, w.span.q_len, w.span.k_len);
  w.key0 = n_block * kBlockN;
  w.flat_q0 = p.cu_seqlens_q != nullptr ? w.span.q_offset : std::int64_t(b) * p.seqlen_q;
  w.m_lo = w.n_m = 0;
  const std::int64_t q_len = w.span.q_len;
  if (w.key0 >= w.span.k_len || q_len == 0) return w;
  const std::int64_t key_end = w.span.k_len - w.key0 < kBlockN ? w.span.k_len : w.key0 + kBlockN;
  const core::MaskRule::TileRun run = w.rule.query_tiles_seeing(w.key0, key_end, kBlockM, q_len);
  w.m_lo = run.first;
  w.n_m = run.last - run.first;
  return w;
}

// The deterministic order of dQ (BackwardParams::dq_sem): the key tiles that see query tile m of head h form one run
// [key_begin(first row of m) / kBlockN, ceil(key_end(last row of m) / kBlockN)) (core::MaskRule::query_tiles_seeing),
// and each adds its dQ tile only when the semaphore counts every later one of the run as added, so the fp32 sums
// happen in key-tile order, from the last down, on every run. From the last down because that is the order in which
// they arrive under a causal mask or a window: key tile n reaches its query tiles from its diagonal on, so the
// diagonal key tile of m gets there first and key tile 0 last (in key order, every key tile would wait for key tile
// 0: measured at half the speed of the unordered backward). The schedule launches one CTA per item, each pair's key
// tiles from the last down, so a CTA waits only on CTAs launched before it (the hardware starts CTAs in index
// order, as the sm80 backward's deterministic order also assumes): no cycle, however many waves.
struct DqTurn {
  int* sem = nullptr;
  int mine = 0;

  // hand: which of the `hands` dQ warps (kSplitDim: one per consumer warpgroup, each adding its own columns, so
  // each keeps its own order).
  template <class Params>
  __forceinline__ __device__ static DqTurn wait(const Params& p, const KeyTileWork& w, const BackwardItem& item,
                                                int h, int m_block, int block_m, int block_n, int hand, int hands) {
    DqTurn t;
    const int query_tiles = (p.seqlen_q + block_m - 1) / block_m;  // of the longest sequence (backward_dispatch.cu)
    t.sem = p.dq_sem + ((std::int64_t(item.b) * p.heads_q + h) * query_tiles + m_block) * hands + hand;
    const std::int64_t rows_end = std::int64_t(m_block + 1) * block_m;
    const std::int64_t last_row = (rows_end < w.span.q_len ? rows_end : w.span.q_len) - 1;
    t.mine = int((w.rule.key_end(last_row) - 1) / block_n) - item.n_block;
    int seen;
    do {
      asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(seen) : "l"(t.sem) : "memory");
    } while (seen != t.mine);
    // The earlier adds were made by other CTAs' TMA units (the async proxy); order this thread's acquire before the
    // async-proxy reduce-add it issues next.
    asm volatile("fence.proxy.async.global;" ::: "memory");
    return t;
  }

  // After issuing this tile's reduce-add: wait until it is complete (not only until its source was read), then
  // hand the turn on.
  __forceinline__ __device__ void pass() const {
    asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
    asm volatile("fence.proxy.async.global;" ::: "memory");
    asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(sem), "r"(mine + 1) : "memory");
  }
};

// The named barriers and thread count of one dQ hand-off: all consumers with the one dQ warp, or (kSplitDim)
// consumer warpgroup g with dQ warp g.
struct DqHandoff {
  std::uint32_t threads;
  std::uint32_t empty;
  std::uint32_t full;
};

template <class Traits>
__forceinline__ __device__ DqHandoff dq_handoff(int g) {
  if constexpr (Traits::kSplitDim) {
    return g == 0 ? DqHandoff{128 + 32, kDqEmptyBarrier, kDqFullBarrier}
                  : DqHandoff{128 + 32, kDqEmptyBarrier1, kDqFullBarrier1};
  } else {
    return DqHandoff{Traits::kConsumerThreads + 32, kDqEmptyBarrier, kDqFullBarrier};
  }
}

// Hand-off g's dQ buffer (kSplitDim: one per consumer warpgroup).
template <class Traits, class Storage>
__forceinline__ __device__ auto dq_buffer(Storage& storage, int g) {
  using Layout = typename Traits::SmemLayoutdQ;
  return make_tensor(make_smem_ptr(storage.dq.data() + g * cosize_v<Layout>), Layout{});
}

// kScoreMod: softcap and ALiBi (ScoreModGrad); a kernel of its own, so that the plain one keeps its overlap of P
// with the dP product and carries no score-mod code.
template <class Traits, int kDqMode, bool kScoreMod>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    backward_kernel(CUTE_GRID_CONSTANT BackwardParams<Traits> const p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Element = typename Traits::Element;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  using PlainBarrier = cutlass::arch::ClusterBarrier;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDim = Traits::kDim;
  constexpr int kStages = Traits::kStages;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  auto& storage = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);

  Tensor sK = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutK{});
  Tensor sQ = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(make_smem_ptr(storage.dout.data()), typename Traits::SmemLayoutQ{});

  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int warpgroup = warp_idx / 4;
  if (threadIdx.x == 0) {
    Barrier::init(&storage.bar_kv, 1);
    PlainBarrier::init(&storage.kv_empty, Traits::kConsumerThreads);
    CUTE_UNROLL
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(&storage.full[s], 32);  // every lane of the loader warp
      PlainBarrier::init(&storage.empty[s], Traits::kConsumerThreads);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  // Every role walks the same items in the same order and skips the same ones; the counters that pace the
  // barriers (query tiles, K/V loads) run on across items. An item with no query tile loads nothing; its dK and dV
  // are zeros.
  const std::int64_t rounds = backward_rounds(p.schedule);
  const auto item_at = [&](std::int64_t k, BackwardItem& item) {
    const std::int64_t t = backward_position(p.schedule, k);
    if (t >= p.schedule.num_items) return false;
    item = backward_item(p.schedule, t, p.heads_kv);
    return true;
  };

  if (warpgroup == 0) {
    // ---------------------------------------------------------------- producer
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegisters>();
    if (kDqMode != kDqRegisters && (warp_idx == 1 || (Traits::kSplitDim && warp_idx == 2))) {
      // dQ store warp (kSplitDim: warp 1 for consumer warpgroup 0 and warp 2 for warpgroup 1, each with its own
      // buffer). Before each piece the buffer is free (at first, or once the TMA unit read the last piece): one
      // arrive for the consumers' wait.
      const int lane = int(threadIdx.x) % 32;
      const int g = warp_idx - 1;
      const DqHandoff hand = dq_handoff<Traits>(g);
      Tensor sdQ = dq_buffer<Traits>(storage, g);
      constexpr int kPieces = Traits::kSplitDim ? kDim / Traits::kDqChunk * Traits::kDqPiecesPerChunk : 1;
      for (std::int64_t k = 0; k < rounds; ++k) {
        BackwardItem item;
        if (!item_at(k, item)) continue;
        const KeyTileWork w = resolve_key_tile<Traits>(p, item.n_block, item.b);
        if (w.key0 >= w.span.k_len) continue;
        const int bq = p.cu_seqlens_q != nullptr ? 0 : item.b;
        const int total = p.group_size * w.n_m;
        for (int it = 0; it < total; ++it) {
          const int h = item.h_kv * p.group_size + it / w.n_m;
          const int m_block = w.m_lo + it % w.n_m;
          DqTurn turn;  // lane 0's
          CUTE_UNROLL
          for (int piece = 0; piece < kPieces; ++piece) {
            cutlass::arch::NamedBarrier::arrive(hand.threads, hand.empty);
            cutlass::arch::NamedBarrier::sync(hand.threads, hand.full);
            if (lane == 0) {
              // The piece's columns, in kDqPiece blocks: its chunk, this warpgroup's half of it, its place there.
              constexpr int kPer = Traits::kDqPiecesPerChunk;
              const int col_block = piece / kPer * (Traits::kDqChunk / Traits::kDqPiece) + g * kPer + piece % kPer;
              Tensor mdQ =
                  p.tma_dq.get_tma_tensor(make_shape(p.map_rows_q, kDim, p.heads_q, p.map_batch))(_, _, h, bq);
              Tensor gdQ = local_tile(domain_offset(make_coord(int(w.span.q_offset), _0{}), mdQ),
                                      Shape<Int<kBlockM>, Int<Traits::kDqPiece>>{}, make_coord(m_block, col_block));
              auto cta_tma = p.tma_dq.get_slice(_0{});
              // The deterministic order: one turn per tile, taken before its first piece and passed after its last.
              const bool ordered = p.dq_sem != nullptr;
              if (ordered && piece == 0) {
                turn = DqTurn::wait(p, w, item, h, m_block, kBlockM, kBlockN, g, Traits::kDqBuffers);
              }
              copy(p.tma_dq, cta_tma.partition_S(sdQ), cta_tma.partition_D(gdQ));
              tma_store_arrive();
              if (ordered && piece + 1 == kPieces) {
                turn.pass();
              } else {
                tma_store_wait<0>();  // the TMA unit has read the buffer
              }
            }
            __syncwarp();
          }
        }
      }
      // The reductions themselves complete before the warp exits (the post-pass reads the accumulator).
      if (lane == 0) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
      return;
    }
    if (warp_idx != 0) return;
    const int lane = int(threadIdx.x);
    if (lane == 0) {
      cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_dout.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
    }
    int tile = 0;      // query tiles loaded so far, over all items: the ring's position
    int kv_loads = 0;  // items whose K and V were loaded
    for (std::int64_t k = 0; k < rounds; ++k) {
      BackwardItem item;
      if (!item_at(k, item)) continue;
      const KeyTileWork w = resolve_key_tile<Traits>(p, item.n_block, item.b);
      const int total = p.group_size * w.n_m;
      if (w.key0 >= w.span.k_len || total == 0) continue;
      const int q_len = int(w.span.q_len);
      const int bq = p.cu_seqlens_q != nullptr ? 0 : item.b;
      if (lane == 0) {
        // The last item's K and V stay until every consumer thread retired its last product that reads them.
        if (kv_loads > 0) PlainBarrier::wait(&storage.kv_empty, (kv_loads - 1) & 1);
        Tensor mK =
            p.tma_k.get_tma_tensor(make_shape(p.map_rows_k, kDim, p.heads_kv, p.map_batch))(_, _, item.h_kv, bq);
        Tensor mV =
            p.tma_v.get_tma_tensor(make_shape(p.map_rows_k, kDim, p.heads_kv, p.map_batch))(_, _, item.h_kv, bq);
        Tensor gK = local_tile(domain_offset(make_coord(int(w.span.k_offset), _0{}), mK),
                               Shape<Int<kBlockN>, Int<kDim>>{}, make_coord(item.n_block, _0{}));
        Tensor gV = local_tile(domain_offset(make_coord(int(w.span.k_offset), _0{}), mV),
                               Shape<Int<kBlockN>, Int<kDim>>{}, make_coord(item.n_block, _0{}));
        auto [tKgK, tKsK] =
            tma_partition(p.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
        auto [tVgV, tVsV] =
            tma_partition(p.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));
        Barrier::arrive_and_expect_tx(&storage.bar_kv, 2 * Traits::kBytesK);
        copy(p.tma_k.with(storage.bar_kv), tKgK, tKsK);
        copy(p.tma_v.with(storage.bar_kv), tVgV, tVsV);
      }
      ++kv_loads;
      for (int it = 0; it < total; ++it, ++tile) {
        const int stage = tile % kStages;
        const int h = item.h_kv * p.group_size + it / w.n_m;
        const int m_block = w.m_lo + it % w.n_m;
        // The stage's previous occupant (tile - kStages) must be released by every consumer thread.
        if (tile >= kStages) PlainBarrier::wait(&storage.empty[stage], ((tile / kStages) - 1) & 1);
        // Q and dO first, then the rows' lse2 and delta under them: the copies need not wait for those loads
        // (ncu at head dim 64, 512 causal: the consumers' waits for K, V and the first Q, dO were 8% of the warp
        // samples). The byte count goes in before the copies; each lane arrives after its own stores.
        if (lane == 0) {
          Tensor mQ =
              p.tma_q.get_tma_tensor(make_shape(p.map_rows_q, kDim, p.heads_q, p.map_batch))(_, _, h, bq);
          Tensor mdO =
              p.tma_dout.get_tma_tensor(make_shape(p.map_rows_q, kDim, p.heads_q, p.map_batch))(_, _, h, bq);
          Tensor gQ = local_tile(domain_offset(make_coord(int(w.span.q_offset), _0{}), mQ),
                                 Shape<Int<kBlockM>, Int<kDim>>{}, make_coord(m_block, _0{}));
          Tensor gdO = local_tile(domain_offset(make_coord(int(w.span.q_offset), _0{}), mdO),
                                  Shape<Int<kBlockM>, Int<kDim>>{}, make_coord(m_block, _0{}));
          auto [tQgQ, tQsQ] =
              tma_partition(p.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
          auto [tdOgdO, tdOsdO] =
              tma_partition(p.tma_dout, _0{}, Layout<_1>{}, group_modes<0, 2>(sdO), group_modes<0, 2>(gdO));
          Barrier::expect_transaction(&storage.full[stage], 2 * Traits::kBytesQ);
          copy(p.tma_q.with(storage.full[stage]), tQgQ, tQsQ(_, stage));
          copy(p.tma_dout.with(storage.full[stage]), tdOgdO, tdOsdO(_, stage));
        }
        // Rows past the sequence: lse2 = 0 and delta = 0 (their scores are masked, so P = 0 and dS = 0).
        const std::int64_t lse_base = std::int64_t(h) * p.rows + w.flat_q0;
        for (int r = lane; r < kBlockM; r += 32) {
          const int row = m_block * kBlockM + r;
          const bool inside = row < q_len;
          storage.lse2[stage][r] = inside ? p.lse2[lse_base + row] : 0.0f;
          storage.delta[stage][r] = inside ? p.delta[lse_base + row] : 0.0f;
        }
        Barrier::arrive(&storage.full[stage]);  // releases this lane's stores
      }
    }
  } else {
    // ---------------------------------------------------------------- consumers
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegisters>();
    const int ctid = int(threadIdx.x) - 128;
    Tensor sQt = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQt{});
    Tensor sdOt = make_tensor(make_smem_ptr(storage.dout.data()), typename Traits::SmemLayoutQt{});
    Tensor sKt = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutKt{});
    Tensor sdS = make_tensor(make_smem_ptr(storage.ds.data()), typename Traits::SmemLayoutdS{});
    Tensor sdSt = make_tensor(make_smem_ptr(storage.ds.data()), typename Traits::SmemLayoutdSt{});

    typename Traits::TiledMmaSdP mma_sdp;
    typename Traits::TiledMmaKV mma_kv;
    typename Traits::TiledMmaDq mma_dq;
    // kSplitDim: both warpgroups compute the whole S^T and dP^T (a one-warpgroup tiling; see backward_traits.cuh).
    constexpr bool kSplitDim = Traits::kSplitDim;
    const int sdp_thread = kSplitDim ? ctid % 128 : ctid;
    auto thr_sdp = mma_sdp.get_thread_slice(sdp_thread);
    auto thr_kv = mma_kv.get_thread_slice(ctid);
    auto thr_dq = mma_dq.get_thread_slice(ctid);
    Tensor tSrK = thr_sdp.partition_fragment_A(sK);     // (MMA, MMA_M, MMA_K) descriptors
    Tensor tSrQ = thr_sdp.partition_fragment_B(sQ);     // (MMA, MMA_N, MMA_K, stage)
    Tensor tdPrV = thr_sdp.partition_fragment_A(sV);
    Tensor tdPrdO = thr_sdp.partition_fragment_B(sdO);
    Tensor tdVrdO = thr_kv.partition_fragment_B(sdOt);  // (MMA, MMA_N, MMA_K, stage)
    Tensor tdKrQ = thr_kv.partition_fragment_B(sQt);
    Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);   // (MMA, MMA_M, MMA_K, buffer)
    Tensor tdQrK = thr_dq.partition_fragment_B(sKt);    // (MMA, MMA_N, MMA_K); kSplitDim: per chunk, below
    // 16-bit accumulators (dS^T; dK, dV) go to shared memory by stmatrix, four 8 x 8 blocks a warp instruction,
    // where plain copies compiled to one 4-byte generic store per element pair (by ncu, the dS and dQ stores were
    // 11% of the warp samples at head dim 64, 512 causal).
    using StoreAtom = Copy_Atom<SM90_U32x4_STSM_N, Element>;
    auto store_ds = make_tiled_copy_C(StoreAtom{}, mma_sdp);
    auto thr_store_ds = store_ds.get_thread_slice(sdp_thread);
    Tensor tdSsdS = thr_store_ds.partition_D(sdSt);  // (CPY, CPY_M, CPY_N, buffer): dS^T as this thread holds it
    auto store_kv = make_tiled_copy_C(StoreAtom{}, mma_kv);
    auto thr_store_kv = store_kv.get_thread_slice(ctid);
    Tensor tKsK = thr_store_kv.partition_D(sK);
    Tensor tVsV = thr_store_kv.partition_D(sV);

    Tensor acc_dk = partition_fragment_C(mma_kv, Shape<Int<kBlockN>, Int<kDim>>{});
    Tensor acc_dv = partition_fragment_C(mma_kv, Shape<Int<kBlockN>, Int<kDim>>{});

    // (key, query) in the tile of each S^T element, rowcol view; keys include the warpgroup's 64-row offset.
    Tensor cS = thr_sdp.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kBlockM>>{}));
    Tensor rC = make_tensor(cS.data(), gmma_rowcol_layout(cS.layout()));
    const int dq_hand = kSplitDim ? ctid / 128 : 0;  // this thread's dQ hand-off (dq_handoff)
    Tensor sdQ = dq_buffer<Traits>(storage, dq_hand);
    Tensor cdQ = thr_dq.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<Traits::kDqChunk>>{}));
    Tensor cKV = thr_kv.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kDim>>{}));

    constexpr int kConsumers = Traits::kConsumerThreads;
    int tile = 0;     // query tiles consumed so far, over all items: the ring's position and the dS buffer
    int kv_uses = 0;  // items whose K and V were waited for
    for (std::int64_t k = 0; k < rounds; ++k) {
      BackwardItem item;
      if (!item_at(k, item)) continue;
      const KeyTileWork w = resolve_key_tile<Traits>(p, item.n_block, item.b);
      if (w.key0 >= w.span.k_len) continue;  // varlen: this sequence has fewer keys than the longest
      const int q_len = int(w.span.q_len);
      const int k_len = int(w.span.k_len);
      const int total = p.group_size * w.n_m;  // (query head, query tile) pairs
      const TileMask tile_mask = TileMask::make(w.rule, q_len, k_len);
      // dK and dV of a whole tile with query tiles to see (the same for both warpgroups) leave by TMA store through
      // K's and V's shared memory, which the producer may then refill; otherwise straight from registers (a partial
      // tile: a tensor map would write past a varlen sequence into the next), and K and V are released earlier,
      // after the item's last products.
      const bool tma_epilogue = p.dkv_tma && total > 0 && w.key0 + kBlockN <= k_len;
      clear(acc_dk);
      clear(acc_dv);

      if (total > 0) {
        Barrier::wait(&storage.bar_kv, kv_uses & 1);
        if (p.clear_overhang && w.key0 + kBlockN > k_len) {
          zero_rows_past<kBlockN, kDim, kConsumers>(sK, k_len - w.key0, ctid);
          zero_rows_past<kBlockN, kDim, kConsumers>(sV, k_len - w.key0, ctid);
          publish_zeroed_rows<kConsumers>();
        }
      }
      for (int it = 0; it < total; ++it, ++tile) {
        const int stage = tile % kStages;
        const int buffer = tile & 1;
        const int row0 = (w.m_lo + it % w.n_m) * kBlockM;
        // Whole tiles inside both sequences that every (query, key) pair sees need no mask.
        const bool masked = row0 + kBlockM > q_len || w.key0 + kBlockN > k_len ||
                            w.rule.classify(row0, row0 + kBlockM, w.key0, w.key0 + kBlockN) != core::TileKind::full;

        ScoreModGrad mod{};  // its slope loads before the wait, under it
        if constexpr (kScoreMod) {
          const int h = item.h_kv * p.group_size + it / w.n_m;
          const float slope = p.alibi_slopes ? p.alibi_slopes[item.b * p.alibi_batch_stride + h] : 0.0f;
          mod = ScoreModGrad{p.scale_log2, p.softcap, slope * 1.4426950408889634f};
        }
        Barrier::wait(&storage.full[stage], (tile / kStages) & 1);
        // The sequence's last query tile, partial: alike in both consumer warpgroups, which both pass the barrier.
        if (p.clear_overhang && row0 + kBlockM > q_len) {
          zero_rows_past<kBlockM, kDim, kConsumers>(sQ(_, _, stage), q_len - row0, ctid);
          zero_rows_past<kBlockM, kDim, kConsumers>(sdO(_, _, stage), q_len - row0, ctid);
          publish_zeroed_rows<kConsumers>();
        }
        Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});
        Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});
        wgmma_gemm<true>(mma_sdp, tSrK, tSrQ(_, _, _, stage), acc_s);
        wgmma_gemm<true>(mma_sdp, tdPrV, tdPrdO(_, _, _, stage), acc_dp);
        Tensor rS = make_tensor(acc_s.data(), gmma_rowcol_layout(acc_s.layout()));
        Tensor rdP = make_tensor(acc_dp.data(), gmma_rowcol_layout(acc_dp.layout()));
        const float* lse2 = storage.lse2[stage];
        const float* delta = storage.delta[stage];
        if (kScoreMod && p.softcap > 0.0f) {
          warpgroup_wait<0>();  // S^T and dP^T done: the softcap's derivative is needed next to dP^T
          mod.softcap_probs_and_grads(masked, rS, rdP, rC, tile_mask, lse2, delta, row0, w.key0);
        } else {
          warpgroup_wait<1>();  // S^T done; dP^T may still run
          if constexpr (kScoreMod) {
            mod.alibi_probs(masked, rS, rC, tile_mask, lse2, row0, w.key0);
          } else {
            // -inf, not 0: an invisible score may be any value (even inf or NaN from a neighbour's rows).
            if (masked) tile_mask.hide(rS, rC, row0, w.key0);
            CUTE_UNROLL
            for (int i = 0; i < size(rS); ++i) {
              rS(i) = sm80::fast_exp2(fmaf(rS(i), p.scale_log2, -lse2[get<1>(rC(i))]));
            }
          }
          warpgroup_wait<0>();  // dP^T done
          CUTE_UNROLL
          for (int i = 0; i < size(rdP); ++i) rdP(i) = rS(i) * (rdP(i) - delta[get<1>(rC(i))]);
          if (masked) {
            // A hidden pair's dS is 0 even where dP is not finite (a neighbour's rows in a varlen batch).
            CUTE_UNROLL
            for (int i = 0; i < size(rdP); ++i) rdP(i) = rS(i) == 0.0f ? 0.0f : rdP(i);
          }
        }

        Tensor rP = sm80::convert_tensor<Element>(acc_s);
        Tensor tdVrP = make_tensor(rP.data(), gmma_acc_as_a_layout(rP.layout()));
        wgmma_gemm<false>(mma_kv, tdVrP, tdVrdO(_, _, _, stage), acc_dv);
        Tensor rdS = sm80::convert_tensor<Element>(acc_dp);
        Tensor tdKrdS = make_tensor(rdS.data(), gmma_acc_as_a_layout(rdS.layout()));
        // dS^T to shared memory for the dQ product; ordinary stores read next by wgmma (the async proxy): a proxy
        // fence in each writing thread, then the barrier the readers pass.
        if (!kSplitDim || ctid < 128) copy(store_ds, thr_store_ds.retile_S(rdS), tdSsdS(_, _, _, buffer));
        cutlass::arch::fence_view_async_shared();
        wgmma_gemm<false>(mma_kv, tdKrdS, tdKrQ(_, _, _, stage), acc_dk);
        cutlass::arch::NamedBarrier::sync(Traits::kConsumerThreads, kDsReadyBarrier);
        Tensor tdQrdS_now = tdQrdS(_, _, _, buffer);
        if constexpr (kSplitDim) {
          // dQ in chunks of kDqChunk columns (64 per warpgroup), each handed on once its product retired, so that
          // only one chunk's accumulator is live: as a piece for the dQ warp's TMA reduce-add (rows past the
          // sequence go too, as exact zeros, as below), or (IOATTN_SM90_BWD_DQ=1) by atomics from registers.
          const int h = item.h_kv * p.group_size + it / w.n_m;
          float* dq_tile = p.dq_accum + ((w.flat_q0 + row0) * p.heads_q + h) * std::int64_t(kDim);
          CUTE_UNROLL
          for (int c = 0; c < kDim / Traits::kDqChunk; ++c) {
            Tensor sKt_chunk = local_tile(sKt, Shape<Int<Traits::kDqChunk>, Int<kBlockN>>{}, make_coord(c, _0{}));
            Tensor tdQrK_chunk = thr_dq.partition_fragment_B(sKt_chunk);
            Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<Traits::kDqChunk>>{});
            wgmma_gemm<true>(mma_dq, tdQrdS_now, tdQrK_chunk, acc_dq);
            warpgroup_wait<0>();
            if (c + 1 == kDim / Traits::kDqChunk) {  // as below: every product of the stage retired
              PlainBarrier::arrive(&storage.empty[stage]);
              if (it + 1 == total && !tma_epilogue) PlainBarrier::arrive(&storage.kv_empty);
            }
            if constexpr (kDqMode == kDqTmaReduce) {
              // This warpgroup's 64 columns of the chunk to its dQ warp, one 32-column piece at a time. The
              // accumulator is ((2 columns, 2 rows, 8 groups of 8 columns), 1, 1): pair i (elements 2i, 2i + 1)
              // lies in column group i / 2, so piece q holds pairs [8q, 8q + 8).
              static_assert(decltype(size<0>(acc_dq))::value == Traits::kDqChunk / 2 / 2 &&
                            decltype(size<1>(acc_dq))::value == 1 && decltype(size<2>(acc_dq))::value == 1);
              constexpr int kPairs = Traits::kDqPiece / 8 * 2;
              const DqHandoff hand = dq_handoff<Traits>(dq_hand);
              CUTE_UNROLL
              for (int q = 0; q < Traits::kDqPiecesPerChunk; ++q) {
                cutlass::arch::NamedBarrier::sync(hand.threads, hand.empty);
                CUTE_UNROLL
                for (int i = q * kPairs; i < (q + 1) * kPairs; ++i) {
                  const int row = get<0>(cdQ(2 * i));
                  const int col = get<1>(cdQ(2 * i)) - dq_hand * (Traits::kDqChunk / 2) - q * Traits::kDqPiece;
                  const std::uint32_t addr = cute::cast_smem_ptr_to_uint(raw_pointer_cast(&sdQ(row, col)));
                  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(acc_dq(2 * i)),
                               "f"(acc_dq(2 * i + 1))
                               : "memory");
                }
                cutlass::arch::fence_view_async_shared();
                cutlass::arch::NamedBarrier::arrive(hand.threads, hand.full);
              }
            } else {
              CUTE_UNROLL
              for (int i = 0; i < size(acc_dq) / 2; ++i) {
                const int row = get<0>(cdQ(2 * i));
                const int col = c * Traits::kDqChunk + get<1>(cdQ(2 * i));
                if (row0 + row < q_len) {
                  red_add_v2(dq_tile + row * std::int64_t(p.heads_q) * kDim + col, acc_dq(2 * i),
                             acc_dq(2 * i + 1));
                }
              }
            }
          }
          continue;
        }
        Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kDim>>{});
        wgmma_gemm<true>(mma_dq, tdQrdS_now, tdQrK, acc_dq);
        // Every product of this stage retired: Q and dO may be replaced, and after the item's last tile K and V
        // too (the producer loads the next item's under this item's last dQ and the dK, dV epilogue). The other
        // warpgroup cannot write this dS buffer again before this one has passed the next tile's barrier, after
        // this wait.
        warpgroup_wait<0>();
        PlainBarrier::arrive(&storage.empty[stage]);
        if (it + 1 == total && !tma_epilogue) PlainBarrier::arrive(&storage.kv_empty);

        if constexpr (kDqMode == kDqRegisters) {
          const int h = item.h_kv * p.group_size + it / w.n_m;
          float* dq_tile = p.dq_accum + ((w.flat_q0 + row0) * p.heads_q + h) * std::int64_t(kDim);
          CUTE_UNROLL
          for (int i = 0; i < size(acc_dq) / 2; ++i) {
            const int row = get<0>(cdQ(2 * i));
            const int col = get<1>(cdQ(2 * i));
            if (row0 + row < q_len) {
              red_add_v2(dq_tile + row * std::int64_t(p.heads_q) * kDim + col, acc_dq(2 * i), acc_dq(2 * i + 1));
            }
          }
        } else {
          // dQ to the store warp. With the TMA reduce-add, rows past the sequence go too: they hold exact zeros
          // (their dS is 0), which in a varlen batch are added to the next sequence's rows.
          // Element pairs (2i, 2i+1) are adjacent columns of one row: 8-byte shared stores (a plain copy compiled
          // to 4-byte generic ones).
          Tensor tdQsdQ = thr_dq.partition_C(sdQ);
          cutlass::arch::NamedBarrier::sync(Traits::kConsumerThreads + 32, kDqEmptyBarrier);
          CUTE_UNROLL
          for (int i = 0; i < size(acc_dq) / 2; ++i) {
            const std::uint32_t addr = cute::cast_smem_ptr_to_uint(raw_pointer_cast(&tdQsdQ(2 * i)));
            asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(acc_dq(2 * i)), "f"(acc_dq(2 * i + 1))
                         : "memory");
          }
          cutlass::arch::fence_view_async_shared();
          cutlass::arch::NamedBarrier::arrive(Traits::kConsumerThreads + 32, kDqFullBarrier);
        }
      }
      if (total > 0) ++kv_uses;

      // Epilogue: dK = scale * sum dS^T Q (S = scale Q K^T); dV as accumulated.
      CUTE_UNROLL
      for (int i = 0; i < size(acc_dk); ++i) acc_dk(i) *= p.scale;
      Tensor rdK = sm80::convert_tensor<Element>(acc_dk);
      Tensor rdV = sm80::convert_tensor<Element>(acc_dv);
      if (tma_epilogue) {
        // Both warpgroups' last dQ products (which read all of K) retired; then the tiles in, visible to the TMA
        // unit (the async proxy) before one thread stores them. K and V are released once it has read them.
        cutlass::arch::NamedBarrier::sync(kConsumers, kEpilogueBarrier);
        copy(store_kv, thr_store_kv.retile_S(rdK), tKsK);
        copy(store_kv, thr_store_kv.retile_S(rdV), tVsV);
        cutlass::arch::fence_view_async_shared();
        cutlass::arch::NamedBarrier::sync(kConsumers, kEpilogueBarrier);
        if (ctid == 0) {
          const int bk = p.cu_seqlens_q != nullptr ? 0 : item.b;
          const auto shape = make_shape(p.map_rows_k, kDim, p.heads_kv, p.map_batch);
          const auto at_tile = [&](auto m) {
            return local_tile(domain_offset(make_coord(int(w.span.k_offset), _0{}), m(_, _, item.h_kv, bk)),
                              Shape<Int<kBlockN>, Int<kDim>>{}, make_coord(item.n_block, _0{}));
          };
          Tensor gdK = at_tile(p.tma_dk.get_tma_tensor(shape));
          Tensor gdV = at_tile(p.tma_dv.get_tma_tensor(shape));
          auto cta_dk = p.tma_dk.get_slice(_0{});
          auto cta_dv = p.tma_dv.get_slice(_0{});
          copy(p.tma_dk, cta_dk.partition_S(sK), cta_dk.partition_D(gdK));
          copy(p.tma_dv, cta_dv.partition_S(sV), cta_dv.partition_D(gdV));
          tma_store_arrive();
          tma_store_wait<0>();  // the TMA unit has read K's and V's shared memory
        }
        PlainBarrier::arrive(&storage.kv_empty);
        continue;
      }
      // Rows past the sequence are not written. Element pairs (2i, 2i+1) of the fragment are adjacent columns of
      // one row: 4-byte stores.
      const std::int64_t key_row0 = w.span.k_offset + w.key0;
      Element* dk_ptr = static_cast<Element*>(p.dk) + item.b * p.dk_batch_stride + key_row0 * p.dk_row_stride +
                        item.h_kv * p.dk_head_stride;
      Element* dv_ptr = static_cast<Element*>(p.dv) + item.b * p.dv_batch_stride + key_row0 * p.dv_row_stride +
                        item.h_kv * p.dv_head_stride;
      CUTE_UNROLL
      for (int i = 0; i < size(rdK) / 2; ++i) {
        const int row = get<0>(cKV(2 * i));
        const int col = get<1>(cKV(2 * i));
        if (w.key0 + row < k_len) {
          *reinterpret_cast<std::uint32_t*>(dk_ptr + row * p.dk_row_stride + col) =
              *reinterpret_cast<const std::uint32_t*>(&rdK(2 * i));
          *reinterpret_cast<std::uint32_t*>(dv_ptr + row * p.dv_row_stride + col) =
              *reinterpret_cast<const std::uint32_t*>(&rdV(2 * i));
        }
      }
    }
  }
#endif
}

}  // namespace ioattn::detail::sm90
