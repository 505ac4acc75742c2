// ioattn sm90 backward: tile shapes, shared-memory layouts, the four wgmma tilings and the TMA copy types of one
// (element type, head dim, query tile) configuration.
//
// One CTA = one producer warpgroup (one warp loads, one stores dQ) + two consumer warpgroups; per item the CTA owns
// kBlockN = 128 keys of one (kv head, sequence), 64 per consumer warpgroup, and walks the query tiles that see them.
// Keys are the M dimension of every product but dQ:
//   S^T  = K Q^T      (keys x queries)   both operands in shared memory
//   dP^T = V dO^T     (keys x queries)   both operands in shared memory
//   dV  += P^T dO     (keys x dim)       P^T from registers (the S^T accumulator, converted in place)
//   dK  += dS^T Q     (keys x dim)       dS^T from registers
//   dQ   = dS K       (queries x dim)    dS from shared memory (written by both warpgroups), K read MN-major
// so the probabilities and score gradients feed dV and dK without a trip through shared memory. The fp32 dQ tile goes
// through shared memory to a TMA reduce-add into the global accumulator, issued by a warp of the producer warpgroup.
// Head dim 256 differs (kSplitDim, below): 64 keys per CTA, the warpgroups split the columns, dQ in pieces.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>

#include "cuda/sm90/backward.hpp"
#include "cuda/sm90/backward_scheduler.cuh"

namespace ioattn::detail::sm90 {

using namespace cute;

// Head dim 256 (kSplitDim): the dK and dV accumulators of 64 keys x 256 would not fit a consumer thread's registers,
// so the CTA owns 64 keys and the warpgroups split the head dim instead: each computes the whole S^T and dP^T of
// the 64 keys (the same products twice: 1.4x the minimal tensor work, but P^T and dS^T stay in registers for dV and
// dK, as above) and accumulates dK and dV for its 128 columns; dQ = dS K goes in two chunks of 128 columns, 64 per
// warpgroup. The whole dQ tile (64 KB) does not fit beside K, V and two stages of Q and dO, so each warpgroup has
// 8 KB of its own, one piece of 32 columns at a time, and a dQ warp of its own that sends each piece by a TMA
// reduce-add: four pieces per warpgroup and tile. Measured on an H200 (2026-11-22, bf16, 512-16k tokens): 224-314
// TFLOP/s against 191-257 with atomics from registers (IOATTN_SM90_BWD_DQ=1). A first version had the warpgroups
// take turns with 64-column pieces in one 16 KB buffer, ordered through the dQ warp: slower (191-300), and
// racecheck could not follow that order.
template <class Element_, int kDim_, int kBlockM_, int kStages_ = 2>
struct BackwardTraits {
  using Element = Element_;
  static constexpr int kDim = kDim_;
  static constexpr bool kSplitDim = kDim > 128;
  static constexpr int kBlockM = kBlockM_;                // queries per tile
  static constexpr int kBlockN = kSplitDim ? 64 : 128;   // keys per CTA
  static constexpr int kStages = kStages_;                // Q, dO, LSE and delta ring depth
  static constexpr int kConsumerWarpgroups = 2;
  static constexpr int kConsumerThreads = 128 * kConsumerWarpgroups;
  static constexpr int kThreads = 128 + kConsumerThreads;
  static constexpr int kProducerRegisters = 24;
  static constexpr int kConsumerRegisters = 240;
  static_assert(kBlockM == 64 || kBlockM == 128);

  // Warpgroups stacked along the keys (M) of S^T, dP^T, dK and dV; with kSplitDim, S^T and dP^T are one warpgroup's
  // tile (each computes it) and dK, dV split their columns (N).
  using AtomKeys = Layout<Shape<_2, _1, _1>>;
  using AtomSdP = std::conditional_t<kSplitDim, Layout<Shape<_1, _1, _1>>, AtomKeys>;
  using AtomKV = std::conditional_t<kSplitDim, Layout<Shape<_1, _2, _1>>, AtomKeys>;
  using TileShapeSdP = Shape<Int<kBlockN>, Int<kBlockM>, Int<kDim>>;  // (M keys, N queries, K dim)
  using TileShapeKV = Shape<Int<kBlockN>, Int<kSplitDim ? kDim / 2 : kDim>, Int<kBlockM>>;  // (M keys, N dim, K q)
  using TiledMmaSdP =
      decltype(make_tiled_mma(GMMA::ss_op_selector<Element, Element, float, TileShapeSdP>(), AtomSdP{}));
  using TiledMmaKV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, TileShapeKV, GMMA::Major::K, GMMA::Major::MN>(), AtomKV{}));
  // dQ (queries x dim): a 128-query tile splits its rows between the warpgroups, a 64-query tile its columns.
  // Either way each warpgroup's share of K (the MN-major B operand) is whole 64-column swizzle atoms. kSplitDim:
  // in chunks of kDqChunk columns (64 per warpgroup), one after the other.
  static constexpr int kDqChunk = kSplitDim ? 128 : kDim;
  static constexpr int kDqAtomM = kBlockM / 64;
  static constexpr int kDqAtomN = 2 / kDqAtomM;
  using TileShapeDqAtom = Shape<Int<kBlockM / kDqAtomM>, Int<kDqChunk / kDqAtomN>, Int<kBlockN>>;
  using TiledMmaDq = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, TileShapeDqAtom, GMMA::Major::MN, GMMA::Major::MN>(),
      Layout<Shape<Int<kDqAtomM>, Int<kDqAtomN>, _1>>{}));
  static_assert(kDqChunk / kDqAtomN % 64 == 0);

  using SmemAtomK = GMMA::Layout_K_SW128_Atom<Element>;
  using SmemLayoutK = decltype(tile_to_shape(SmemAtomK{}, Shape<Int<kBlockN>, Int<kDim>>{}));  // also V
  using SmemLayoutQ = decltype(tile_to_shape(SmemAtomK{}, Shape<Int<kBlockM>, Int<kDim>, Int<kStages>>{}));  // also dO
  // Transposed views: (dim, keys) and (dim, queries, stage), the MN-major B operands of dQ, dK and dV.
  using SmemLayoutKt =
      decltype(composition(SmemLayoutK{}, make_ordered_layout(Shape<Int<kDim>, Int<kBlockN>>{}, Step<_2, _1>{})));
  using SmemLayoutQt = decltype(composition(
      SmemLayoutQ{}, make_ordered_layout(Shape<Int<kDim>, Int<kBlockM>, Int<kStages>>{}, Step<_2, _1, _3>{})));
  // dS (queries, keys, buffer), queries contiguous: the warpgroups' dS^T accumulators hold pairs of adjacent
  // queries, so each writes 4 bytes at a time. Two buffers: one warpgroup may write tile i + 1's while the other's
  // dQ product still reads tile i's.
  using SmemLayoutdS = decltype(tile_to_shape(GMMA::Layout_MN_SW128_Atom<Element>{},
                                              Shape<Int<kBlockM>, Int<kBlockN>, _2>{}));
  using SmemLayoutdSt = decltype(composition(
      SmemLayoutdS{}, make_ordered_layout(Shape<Int<kBlockN>, Int<kBlockM>, _2>{}, Step<_2, _1, _3>{})));

  // The fp32 dQ tile (queries, dim) on its way to the TMA reduce-add: 128-byte swizzled (TMA undoes the swizzle), so
  // the accumulator's pairs of adjacent columns land in different banks across the rows a warp writes.
  // kSplitDim: a piece of one warpgroup's 32 columns; the buffer holds one per warpgroup (kDqBuffers).
  static constexpr int kDqPiece = kSplitDim ? 32 : kDim;
  static constexpr int kDqBuffers = backward_dq_warps(kDim);
  static_assert(kDqBuffers == (kSplitDim ? 2 : 1), "one dQ warp and buffer per warpgroup exactly when split");
  static constexpr int kDqPiecesPerChunk = kSplitDim ? kDqChunk / 2 / kDqPiece : 1;  // per warpgroup
  using SmemLayoutdQ =
      decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<float>{}, Shape<Int<kBlockM>, Int<kDqPiece>>{}));

  // Global tensors as the tensor maps see them: (rows, dim, heads, batch); varlen: rows = the packed total and
  // batch = 1. Rows past the extent arrive as zeros.
  using GmemShape = Shape<int, int, int, int>;
  using GmemStride = Stride<std::int64_t, _1, std::int64_t, std::int64_t>;
  using GmemTensor =
      decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)), GmemShape{}, GmemStride{}));
  using TmaQ = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, take<0, 2>(SmemLayoutQ{}),
                                      Shape<Int<kBlockM>, Int<kDim>>{}, _1{}));
  using TmaK = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutK{},
                                      Shape<Int<kBlockN>, Int<kDim>>{}, _1{}));

  // dK and dV of a whole key tile leave through K's and V's shared memory (the item's products are done with them)
  // by one TMA store each.
  using TmaDkv = decltype(make_tma_copy(SM90_TMA_STORE{}, GmemTensor{}, SmemLayoutK{},
                                        Shape<Int<kBlockN>, Int<kDim>>{}, _1{}));

  using GmemTensorAccum =
      decltype(make_tensor(make_gmem_ptr(static_cast<float*>(nullptr)), GmemShape{}, GmemStride{}));
  using TmaDq = decltype(make_tma_copy(SM90_TMA_REDUCE_ADD{}, GmemTensorAccum{}, SmemLayoutdQ{},
                                       Shape<Int<kBlockM>, Int<kDqPiece>>{}, _1{}));

  static constexpr std::uint32_t kBytesQ = kBlockM * kDim * sizeof(Element);
  static constexpr std::uint32_t kBytesK = kBlockN * kDim * sizeof(Element);

  struct SharedStorage {
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutK>> v;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutQ>> dout;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutdS>> ds;
    alignas(1024) cute::array_aligned<float, kDqBuffers * cosize_v<SmemLayoutdQ>> dq;
    float lse2[kStages][kBlockM];   // lse * log2(e) of each query row (0 for rows that see nothing)
    float delta[kStages][kBlockM];  // rowsum(dO * O)
    alignas(8) std::uint64_t bar_kv;           // K and V landed (once per item)
    alignas(8) std::uint64_t kv_empty;         // every consumer thread is done with the item's K and V
    alignas(8) std::uint64_t full[kStages];    // Q and dO landed (bytes), lse2 and delta stored (each loader lane arrives)
    alignas(8) std::uint64_t empty[kStages];   // every consumer thread is done with the stage
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static_assert(kSmemBytes <= 227 * 1024);
};

// The kernel's parameter block (a __grid_constant__: the tensor maps stay in parameter memory for the TMA unit).
template <class Traits>
struct BackwardParams {
  typename Traits::TmaQ tma_q;
  typename Traits::TmaQ tma_dout;
  typename Traits::TmaK tma_k;
  typename Traits::TmaK tma_v;
  typename Traits::TmaDq tma_dq;  // over dq_accum as (rows, dim, heads, batch)
  typename Traits::TmaDkv tma_dk;  // valid when dkv_tma
  typename Traits::TmaDkv tma_dv;
  int map_rows_q, map_rows_k;  // the tensor maps' row extents
  int map_batch;               // batch (dense) or 1 (varlen)
  int heads_q, heads_kv, group_size;
  BackwardSchedule schedule;  // which items (key tile, kv head, sequence) each CTA takes

  // Workspace of the sm80 passes (sm80/backward_params.hpp): lse2 and delta [heads_q][rows], dq_accum
  // [rows][heads_q][kDim], rows indexed by flat row b * seqlen_q + i (dense) or the packed row (varlen).
  const float* lse2;
  const float* delta;
  float* dq_accum;
  std::int64_t rows;
  int* dq_sem;  // deterministic: [batch][heads_q][query tiles] key tiles already added per query tile; else null

  void* dk;
  std::int64_t dk_batch_stride, dk_row_stride, dk_head_stride;
  void* dv;
  std::int64_t dv_batch_stride, dv_row_stride, dv_head_stride;

  const std::int32_t* cu_seqlens_q;  // device, [batch + 1]; null for dense
  const std::int32_t* cu_seqlens_k;
  std::int64_t total_q, total_k;
  int seqlen_q, seqlen_k;  // dense: every sequence's; varlen: the max

  float scale;
  float scale_log2;
  float softcap;              // > 0: cap * tanh(s / cap) (the kScoreMod kernel only)
  const float* alibi_slopes;  // element (b, h) at b * alibi_batch_stride + h; null: none (kScoreMod only)
  std::int64_t alibi_batch_stride;
  std::int64_t window_left, window_right;
  bool top_left;
  bool dkv_tma;  // dK and dV by TMA store (whole tiles) where dk's and dv's strides allow a tensor map
  bool clear_overhang;  // varlen: zero the rows a partial last tile reads past the sequence (zero_rows_past)
};

}  // namespace ioattn::detail::sm90
