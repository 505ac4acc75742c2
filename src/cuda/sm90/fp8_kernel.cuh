// ioattn sm90 FP8 forward kernel: one CTA per (query tile of 128 rows, head, sequence), warp-specialized; with
// packed GQA (packed_gqa.cuh), per (tile of 128 / group tokens, kv head's group of query heads, sequence).
//
// Producer warpgroup (registers given away):
//  - warp 0, one thread: TMA loads of the Q tile, then K (into a PipelineTmaAsync ring) and V (into a staging ring
//    with its own barriers) of each visible key tile, from the last down to the first;
//  - warps 1-3: transpose each staged V tile into Vt (head dim x keys, the K-major B operand of P V), in the key
//    order p_as_a_operand needs, then hand Vt to the consumers and the staging slot back to warp 0.
// Consumer warpgroups (64 query rows each), per key tile: S = Q K^T by wgmma from shared memory, the mask, the
// online softmax in base 2 with the descales folded into the exponent's scale, P into the A operand's registers,
// O += P Vt by wgmma. Epilogue: O divided by the row sum once (core::SoftmaxState: sinks, rows that see nothing),
// times V's descale, stored in the output type with the LSE.
// Three schedules (kSchedule, ForwardSchedule of the bf16 forward): serial (each consumer warpgroup waits for its S
// before the softmax, and for its P V before the next S); overlapped_no_pingpong (S(n + 1) issued together with
// P(n) V(n), so the softmax of one tile runs while the tensor cores work on the other); overlapped, the same with
// the two warpgroups taking turns to issue their GEMMs (WarpgroupTurns), so one's softmax runs under the other's.
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/numeric_conversion.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include "ioattn/core/mask.hpp"
#include "ioattn/core/softmax_state.hpp"
#include "cuda/sm80/common/score_mod.cuh"
#include "cuda/sm80/common/tile_ops.cuh"
#include "cuda/sm90/forward_mainloop.cuh"
#include "cuda/sm90/fp8_key_order.hpp"
#include "cuda/sm90/fp8_traits.cuh"
#include "cuda/sm90/out_store.cuh"
#include "cuda/sm90/packed_gqa.cuh"
#include "cuda/sm90/tile_scheduler.cuh"
#include "cuda/sm90/wgmma_ops.cuh"

namespace ioattn::detail::sm90 {

using namespace cute;

// Four floats to four e4m3 bytes of one 32-bit word (a in the lowest byte), each pair by one cvt with the rounding
// and saturation of cutlass's converter (round to nearest, satfinite).
__forceinline__ __device__ std::uint32_t pack_e4m3x4(float a, float b, float c, float d) {
  std::uint32_t word;
  asm("{\n"
      "  .reg .b16 lo, hi;\n"
      "  cvt.rn.satfinite.e4m3x2.f32 lo, %2, %1;\n"
      "  cvt.rn.satfinite.e4m3x2.f32 hi, %4, %3;\n"
      "  mov.b32 %0, {lo, hi};\n"
      "}"
      : "=r"(word)
      : "f"(a), "f"(b), "f"(c), "f"(d));
  return word;
}

// P (the S accumulator after the softmax: probabilities times kPScale, the softmax's bias) into the A operand of
// P V, in the key order of fp8_key_order.hpp: A slot (v0, v1, v2) of k-slice s takes accumulator value (v0 & 1, v1,
// 4 s + 2 v2 + (v0 >> 1)). Slots v0 = 0..3 are the four bytes of one register, written as one word: writing them
// byte by byte compiled to about 150 extra LOP3 / SHF / PRMT / IMAD a tile (ncu, D 128: 22% of the consumers'
// instructions).
template <class AccS, class FragA>
__forceinline__ __device__ void p_as_a_operand(const AccS& acc_s, FragA& frag) {
  static_assert(std::is_same_v<typename FragA::value_type, cutlass::float_e4m3_t>);
  using FragLayout = std::decay_t<decltype(frag.layout())>;
  static_assert(decltype(size<0, 0>(FragLayout{}))::value == 4 && decltype(stride<0, 0>(FragLayout{}))::value == 1,
                "the A fragment's slots v0 = 0..3 must be the bytes of one register");
  auto* words = reinterpret_cast<std::uint32_t*>(raw_pointer_cast(frag.data()));
  constexpr int kSlices = decltype(size<2>(frag))::value;
  CUTE_UNROLL
  for (int s = 0; s < kSlices; ++s) {
    CUTE_UNROLL
    for (int v1 = 0; v1 < 2; ++v1) {
      CUTE_UNROLL
      for (int v2 = 0; v2 < 2; ++v2) {
        const int c = 4 * s + 2 * v2;  // accumulator columns c (slots v0 = 0, 1) and c + 1 (v0 = 2, 3)
        const int byte = frag.layout()(make_coord(0, v1, v2), 0, s);
        words[byte / 4] = pack_e4m3x4(acc_s(make_coord(0, v1, c), 0, 0), acc_s(make_coord(1, v1, c), 0, 0),
                                      acc_s(make_coord(0, v1, c + 1), 0, 0), acc_s(make_coord(1, v1, c + 1), 0, 0));
      }
    }
  }
}

// Staged V (key, dim) of `stage` -> Vt (dim, logical key), by the transposing warps: units of 16 keys x 32 dims,
// each by one ldmatrix .trans, four byte permutes and one stmatrix (fp8_key_order.hpp says how the bytes move). The
// reads are free of bank conflicts; each stored matrix's 8 rows (every other dim) fall on 4 swizzle phases, 2-way.
template <class Traits>
__forceinline__ __device__ void transpose_v(std::uint32_t v_stage, std::uint32_t vt_stage, int tid) {
  constexpr int kKeys = Traits::kBlockN, kUnits = kKeys / 16 * (Traits::kDim / 32);
  constexpr int kWarps = Traits::kTransposeThreads / 32;
  static_assert(kKeys == 64 || kKeys == 128, "Vt rows of 64 or 128 bytes (fp8_traits.cuh)");
  const Fp8TransposeLane lane = fp8_transpose_lane(tid % 32, kKeys);
  for (int unit = tid / 32; unit < kUnits; unit += kWarps) {
    std::uint32_t r[4], out[4];
    const std::uint32_t read = v_stage + std::uint32_t(fp8_unit_read_offset(lane, unit, kKeys));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(read)
                 : "memory");
    fp8_pair_bytes(r[0], r[1], out[0], out[1]);
    fp8_pair_bytes(r[2], r[3], out[2], out[3]);
    const std::uint32_t write = vt_stage + std::uint32_t(fp8_unit_write_offset(lane, unit, kKeys));
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(write), "r"(out[0]),
                 "r"(out[1]), "r"(out[2]), "r"(out[3])
                 : "memory");
  }
}

// Block descales: the largest v descale of (sequence b, kv head h), reduced by all consumer threads together over
// the sequence's blocks (through `partial`, one slot per consumer warp, and a consumer-wide named barrier). 1 when
// there is no positive one (no keys, or zero descales).
constexpr std::uint32_t kFp8DescaleBarrier = 4;  // after WarpgroupTurns' 1 and 2 (3: the bf16 forward's zeroing)
template <class Params>
__forceinline__ __device__ float largest_v_descale(const Params& p, float* partial, int b, int h, int ctid) {
  constexpr int kThreads = 256;  // the two consumer warpgroups
  float m = 0.0f;
  for (int blk = ctid; blk < p.descale_blocks_k; blk += kThreads) {
    m = fmaxf(m, p.v_descale.at(b, h, blk << p.v_descale.block_shift));
  }
  CUTE_UNROLL
  for (int offset = 16; offset > 0; offset >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
  if (ctid % 32 == 0) partial[ctid / 32] = m;
  cutlass::arch::NamedBarrier::sync(kThreads, kFp8DescaleBarrier);
  m = 0.0f;
  CUTE_UNROLL
  for (int wi = 0; wi < kThreads / 32; ++wi) m = fmaxf(m, partial[wi]);
  return m > 0.0f ? m : 1.0f;
}

template <class Traits, ForwardSchedule kSchedule, bool kBlockScales>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    fp8_forward_kernel(CUTE_GRID_CONSTANT Fp8ForwardParams<Traits> const p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Element = typename Traits::Element;
  using OutElement = typename Traits::OutElement;
  using PipelineK = typename Traits::PipelineK;
  using PipelineState = cutlass::PipelineState<Traits::kStages>;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  using PlainBarrier = cutlass::arch::ClusterBarrier;
  constexpr bool kOverlap = kSchedule != ForwardSchedule::serial;
  constexpr bool kPingPong = kSchedule == ForwardSchedule::overlapped;
  static_assert(!kBlockScales || !kOverlap, "block descales: the serial schedule only");
  static_assert(!kBlockScales || Traits::kConsumerThreads == 256, "largest_v_descale reduces over 256 threads");
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDim = Traits::kDim;
  constexpr int kStages = Traits::kStages;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  auto& storage = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);

  // Every role derives the same work from the tile index.
  const TileWork w = resolve_tile<kBlockM, kBlockN, TileOrder::one_per_cta>(p, blockIdx.x);
  const int n_tiles = w.valid ? w.n_block_max - w.n_block_min : 0;  // key tiles, visited from the last down
  const int h_kv = w.h / p.group_size;

  Tensor sQ = make_tensor(make_smem_ptr(storage.q.data()), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(storage.k.data()), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(make_smem_ptr(storage.v.data()), typename Traits::SmemLayoutV{});
  Tensor sVt = make_tensor(make_smem_ptr(storage.vt.data()), typename Traits::SmemLayoutVt{});

  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int warpgroup = warp_idx / 4;
  if (threadIdx.x == 0) {
    Barrier::init(&storage.bar_q, 1);
    CUTE_UNROLL
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(&storage.v_full[s], 1);
      PlainBarrier::init(&storage.v_empty[s], Traits::kTransposeThreads);
      PlainBarrier::init(&storage.vt_full[s], Traits::kTransposeThreads);
      PlainBarrier::init(&storage.vt_empty[s], Traits::kConsumerThreads);
    }
  }
  typename PipelineK::Params pipe_params;
  pipe_params.role = warpgroup == 0 ? PipelineK::ThreadCategory::Producer : PipelineK::ThreadCategory::Consumer;
  pipe_params.is_leader = threadIdx.x == 0;
  pipe_params.num_consumers = Traits::kConsumerThreads;
  pipe_params.transaction_bytes = Traits::kBytesKV;
  PipelineK pipe_k(storage.pipe_k, pipe_params, Shape<_1, _1, _1>{});  // initializes its barriers (warp 0)
  cutlass::arch::fence_barrier_init();
  __syncthreads();

  if (warpgroup == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegisters>();
    if (warp_idx == 0) {
      // ---------------------------------------------------------------- loads (one thread)
      if (threadIdx.x != 0 || n_tiles == 0) return;
      cute::prefetch_tma_descriptor(p.pack_gqa > 1 ? &p.tma_q_packed : p.tma_q.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
      Tensor mQ = p.tma_q.get_tma_tensor(make_shape(p.map_rows_q, kDim, p.heads_q, p.batch))(_, _, w.h, w.b);
      Tensor mK = p.tma_k.get_tma_tensor(make_shape(p.map_rows_k, kDim, p.heads_kv, p.batch))(_, _, h_kv, w.b);
      Tensor mV = p.tma_v.get_tma_tensor(make_shape(p.map_rows_k, kDim, p.heads_kv, p.batch))(_, _, h_kv, w.b);
      Tensor gQ = local_tile(mQ, Shape<Int<kBlockM>, Int<kDim>>{}, make_coord(w.m_block, _0{}));
      Tensor gK = local_tile(mK, Shape<Int<kBlockN>, Int<kDim>>{}, make_coord(_, _0{}));
      Tensor gV = local_tile(mV, Shape<Int<kBlockN>, Int<kDim>>{}, make_coord(_, _0{}));
      auto [tQgQ, tQsQ] = tma_partition(p.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
      auto [tKgK, tKsK] = tma_partition(p.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
      auto [tVgV, tVsV] = tma_partition(p.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));
      PipelineState write = cutlass::make_producer_start_state<PipelineK>();
      for (int i = 0; i < n_tiles; ++i) {
        const int n_block = w.n_block_max - 1 - i;
        const int stage = i % kStages;
        pipe_k.producer_acquire(write);
        copy(p.tma_k.with(*pipe_k.producer_get_barrier(write)), tKgK(_, n_block), tKsK(_, write.index()));
        if (i == 0 && p.pack_gqa > 1) {
          Barrier::arrive_and_expect_tx(&storage.bar_q, p.q_tile_bytes);
          load_packed_q<kBlockM, kDim>(&p.tma_q_packed, &storage.bar_q, storage.q.data(), w.row0, h_kv, w.b);
        } else if (i == 0) {
          Barrier::arrive_and_expect_tx(&storage.bar_q, Traits::kBytesQ);
          copy(p.tma_q.with(storage.bar_q), tQgQ, tQsQ);
        }
        if (i >= kStages) PlainBarrier::wait(&storage.v_empty[stage], ((i / kStages) - 1) & 1);
        Barrier::arrive_and_expect_tx(&storage.v_full[stage], Traits::kBytesKV);
        copy(p.tma_v.with(storage.v_full[stage]), tVgV(_, n_block), tVsV(_, stage));
        ++write;
      }
      return;
    }
    // ---------------------------------------------------------------- V transposes (warps 1-3)
    const int tid = int(threadIdx.x) - 32;
    const auto v_smem = static_cast<std::uint32_t>(__cvta_generic_to_shared(storage.v.data()));
    const auto vt_smem = static_cast<std::uint32_t>(__cvta_generic_to_shared(storage.vt.data()));
    for (int i = 0; i < n_tiles; ++i) {
      const int stage = i % kStages;
      Barrier::wait(&storage.v_full[stage], (i / kStages) & 1);
      if (i >= kStages) PlainBarrier::wait(&storage.vt_empty[stage], ((i / kStages) - 1) & 1);
      transpose_v<Traits>(v_smem + stage * Traits::kBytesKV, vt_smem + stage * Traits::kBytesKV, tid);
      // Ordinary stores that wgmma (the async proxy) reads next: a proxy fence in every writing thread before its
      // arrive.
      cutlass::arch::fence_view_async_shared();
      PlainBarrier::arrive(&storage.v_empty[stage]);
      PlainBarrier::arrive(&storage.vt_full[stage]);
    }
    return;
  }

  // ---------------------------------------------------------------- consumers
  cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegisters>();
  const int ctid = int(threadIdx.x) - 128;
  typename Traits::TiledMmaQK mma_qk;
  typename Traits::TiledMmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(ctid);
  auto thr_pv = mma_pv.get_thread_slice(ctid);
  Tensor tSrQ = thr_qk.partition_fragment_A(sQ);    // descriptors
  Tensor tSrK = thr_qk.partition_fragment_B(sK);    // (MMA, MMA_N, MMA_K, stage)
  Tensor tOrVt = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stage)
  Tensor acc_o = partition_fragment_C(mma_pv, Shape<Int<kBlockM>, Int<kDim>>{});
  Tensor acc_s = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor tOrP = make_tensor<Element>(partition_shape_A(mma_pv, Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor cS = thr_qk.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor rC = make_tensor(cS.data(), gmma_rowcol_layout(cS.layout()));
  constexpr int kRows = decltype(size<0>(rC))::value;
  Tensor cO = thr_pv.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kDim>>{}));
  Tensor rS = make_tensor(acc_s.data(), gmma_rowcol_layout(acc_s.layout()));
  Tensor rO = make_tensor(acc_o.data(), gmma_rowcol_layout(acc_o.layout()));
  if (!w.valid) return;

  // Packed GQA with a group that does not divide kBlockM: the tile's last rows hold no query and no load writes
  // them; zero them once, so that the products never read stale or uninitialized shared memory.
  if (const int packed_rows = kBlockM / p.pack_gqa * p.pack_gqa; packed_rows < kBlockM) {
    zero_smem_rows<Traits::kConsumerThreads>(sQ, packed_rows, ctid);
  }
  const TileRows rows = TileRows::of(w, p.pack_gqa);
  // A warpgroup whose 64 rows hold no query (a tile of at most 64 rows: decoding, few queries per head) issues no
  // product and no softmax; it only keeps its place in the barriers, so that the other one runs at its own pace.
  const bool active = (warpgroup - 1) * 64 < rows.valid;

  // The dequantized logit of codes q, k is (q qd) (k kd) scale. One descale per (batch, head): they fold into each
  // row's softmax scale (rows of a packed tile belong to different query heads). Block descales (never packed):
  // each thread's rows take their q descale (row_qd) and each tile's columns their k descale (scale_scores), on S
  // before the mask and the softmax.
  float row_qd[kRows];
  float v_max = 1.0f;  // block descales: the largest v descale of the sequence's kv head (see below)
  if constexpr (kBlockScales) {
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) {
      const int row = get<0>(rC(mi, 0));
      row_qd[mi] = row < w.rows_here ? p.q_descale.at(w.b, w.h, int(w.row0) + row) : 1.0f;
    }
    v_max = largest_v_descale(p, storage.v_descale_max, w.b, h_kv, ctid);
  }
  float score_scale[kRows];
  OnlineSoftmax<kRows, true> softmax(0.0f, Traits::kPScaleLog2);
  CUTE_UNROLL
  for (int mi = 0; mi < kRows; ++mi) {
    const int head = rows.head(get<0>(rC(mi, 0)));
    score_scale[mi] = kBlockScales ? p.scale : p.scale * p.q_descale.at(w.b, head) * p.k_descale.at(w.b, h_kv);
    softmax.set_row_scale(mi, score_scale[mi] * 1.4426950408889634f);
  }
  // Block descales. Before the softmax: S (mi, ni) times row_qd[mi] and the k descale of its key. After it: P's key
  // column times v descale / v_max, so that P V, accumulated in V's codes, carries each key's v descale relative
  // to the largest (P stays within e4m3's range: the factors are at most 1); the epilogue multiplies v_max back.
  // Keys past the sequence take factor 1 (their S is masked, their P is 0).
  auto key_of = [&](int n_block, int ni) { return n_block * kBlockN + get<1>(rC(0, ni)); };
  auto scale_scores = [&](int n_block) {
    if constexpr (kBlockScales) {
      CUTE_UNROLL
      for (int ni = 0; ni < size<1>(rS); ++ni) {
        const int key = key_of(n_block, ni);
        const float kd = key < p.seqlen_k ? p.k_descale.at(w.b, h_kv, key) : 1.0f;
        CUTE_UNROLL
        for (int mi = 0; mi < kRows; ++mi) rS(mi, ni) *= row_qd[mi] * kd;
      }
    }
  };
  auto scale_probabilities = [&](int n_block) {
    if constexpr (kBlockScales) {
      const float inv_v_max = 1.0f / v_max;
      CUTE_UNROLL
      for (int ni = 0; ni < size<1>(rS); ++ni) {
        const int key = key_of(n_block, ni);
        const float vd = key < p.seqlen_k ? p.v_descale.at(w.b, h_kv, key) * inv_v_max : 1.0f;
        CUTE_UNROLL
        for (int mi = 0; mi < kRows; ++mi) rS(mi, ni) *= vd;
      }
    }
  };
  float alpha[kRows];
  clear(acc_o);
  // Key tiles every row of the tile sees whole, inside the sequence, need no mask (as in the bf16 forward).
  const std::int64_t full_lo = (w.rule.key_begin(w.row0 + w.rows_here - 1) + kBlockN - 1) / kBlockN;
  const std::int64_t key_end_first = w.rule.key_end(w.row0);
  const std::int64_t full_hi = key_end_first > 0 ? key_end_first / kBlockN : 0;
  if (n_tiles > 0) Barrier::wait(&storage.bar_q, 0);
  PipelineState read;
  auto mask = [&](int n_block) {
    if (n_block < full_lo || n_block >= full_hi) {
      sm80::apply_mask(rS, rC, w.rule, w.row0, n_block * kBlockN, p.pack_gqa);
    }
  };
  // O += P Vt of key tile i (the i-th visited), once its Vt is written.
  auto issue_pv = [&](int i) {
    PlainBarrier::wait(&storage.vt_full[i % kStages], (i / kStages) & 1);
    if (active) wgmma_gemm<false>(mma_pv, tOrP, tOrVt(_, _, _, i % kStages), acc_o);
  };
  auto issue_s = [&] {
    if (active) wgmma_gemm<true>(mma_qk, tSrQ, tSrK(_, _, _, read.index()), acc_s);
  };
  auto release_vt = [&](int i) { PlainBarrier::arrive(&storage.vt_empty[i % kStages]); };
  if constexpr (!kOverlap) {
    for (int i = 0; i < n_tiles; ++i) {
      pipe_k.consumer_wait(read);
      issue_s();
      warpgroup_wait<0>();
      pipe_k.consumer_release(read);
      if (active) {
        scale_scores(w.n_block_max - 1 - i);
        mask(w.n_block_max - 1 - i);
        softmax.fold(rS, alpha);
        softmax.template rescale<true>(rO, alpha);
        scale_probabilities(w.n_block_max - 1 - i);
        p_as_a_operand(acc_s, tOrP);
      }
      issue_pv(i);
      warpgroup_wait<0>();
      release_vt(i);
      ++read;
    }
  } else if (n_tiles > 0) {
    const WarpgroupTurns turns{warpgroup - 1};
    if constexpr (kPingPong) turns.start();
    // The first tile: S alone (O is still zero: no rescale).
    if constexpr (kPingPong) turns.wait_turn();
    pipe_k.consumer_wait(read);
    issue_s();
    if constexpr (kPingPong) turns.pass_turn();
    warpgroup_wait<0>();
    pipe_k.consumer_release(read);
    ++read;
    if (active) {
      mask(w.n_block_max - 1);
      softmax.fold(rS, alpha);
      p_as_a_operand(acc_s, tOrP);
    }
    // Steady state: S(i) and P(i - 1) Vt(i - 1) in flight together; the softmax of S(i) runs under the P V. P is in
    // registers apart from S, so S(i) may overwrite the accumulator while P(i - 1) is still being read.
    for (int i = 1; i < n_tiles; ++i) {
      if constexpr (kPingPong) turns.wait_turn();
      pipe_k.consumer_wait(read);
      issue_s();
      issue_pv(i - 1);
      if constexpr (kPingPong) turns.pass_turn();
      warpgroup_wait<1>();  // batches retire in order: S(i) is done, P V may still run
      pipe_k.consumer_release(read);
      ++read;
      if (active) {
        mask(w.n_block_max - 1 - i);
        softmax.fold(rS, alpha);
      }
      warpgroup_wait<0>();  // P(i - 1) V done: its registers and O may be touched again
      release_vt(i - 1);
      if (active) {
        softmax.template rescale<true>(rO, alpha);  // O so far, P(i - 1) V included, is relative to the old row max
        p_as_a_operand(acc_s, tOrP);
      }
    }
    issue_pv(n_tiles - 1);
    warpgroup_wait<0>();
    release_vt(n_tiles - 1);
  }

  // Epilogue: each row through core::SoftmaxState (sink, rows that saw nothing); O / (row sum x kPScale) x V's
  // descale, stored with the LSE.
  const float v_descale = kBlockScales ? v_max : p.v_descale.at(w.b, h_kv);
  float row_lse[kRows];
  CUTE_UNROLL
  for (int mi = 0; mi < kRows; ++mi) {
    core::SoftmaxState<float> state;
    state.m = softmax.row_max[mi] == -INFINITY ? -INFINITY : softmax.row_max[mi] * score_scale[mi];
    state.l = sm80::quad_sum(softmax.row_sum[mi]) * (1.0f / Traits::kPScale);  // exact: a power of two
    const float keep = p.sinks ? state.add_sink(p.sinks[rows.head(get<0>(rC(mi, 0)))]) : 1.0f;
    const float factor = keep * state.inv_sum() * (v_descale / Traits::kPScale);
    row_lse[mi] = state.lse();
    CUTE_UNROLL
    for (int ni = 0; ni < size<1>(rO); ++ni) rO(mi, ni) *= factor;
  }
  store_lse(p, w.b, rows, row_lse, rC);
  if (store_out_tile<typename Traits::OutStore>(p, storage.out.data(), acc_o, w, rows, cO, warpgroup - 1, ctid)) {
    out_store_drain(ctid);
  }
#endif
}

}  // namespace ioattn::detail::sm90
