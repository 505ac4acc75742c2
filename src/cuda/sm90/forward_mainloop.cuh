// ioattn sm90 forward: the consumer warpgroups' mainloop over the key tiles of one query tile.
//
// Two schedules (ForwardSchedule):
//  - serial: per key tile, S = Q K^T, wait, softmax, O += P V, wait. Simple; the tensor cores idle during the
//    softmax unless the other warpgroup happens to fill them.
//  - overlapped (FlashAttention-3's two overlaps): within a warpgroup, S(n) = Q K(n)^T and O += P(n+1) V(n+1) are
//    issued together and the softmax of S(n) runs while the P V product is still in flight; across the two
//    warpgroups (ping-pong), named barriers hand the right to issue GEMMs back and forth, so that one warpgroup's
//    softmax overlaps the other's GEMMs instead of both contending for the tensor cores at once.
// In both, the softmax works in base 2 on raw products (the scale folds into the exponent), keeps the running max
// and sum per row, and rescales O by exp(m_old - m_new); the division by the sum happens once, in the epilogue.
// The score-mod kernels (kScoreMod: softcap, ALiBi) first turn each tile into natural-unit logits through
// sm80/common/score_mod.cuh, the same code and order as the sm80 forward (score mod, then mask, then softmax).
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_conversion.h>

#include "ioattn/core/mask.hpp"
#include "cuda/sm80/common/score_mod.cuh"
#include "cuda/sm80/common/tile_ops.cuh"
#include "cuda/sm90/tile_scheduler.cuh"
#include "cuda/sm90/wgmma_ops.cuh"

namespace ioattn::detail::sm90 {

using namespace cute;

enum class ForwardSchedule : int { overlapped = 0, serial = 1, overlapped_no_pingpong = 2 };

// Running softmax statistics of the kRows rows a thread holds (with the 3 other lanes of its quad).
// kRowScales: each row has a scale of its own (set_row_scale; the FP8 forward's packed GQA, whose rows belong to
// query heads with different descales); else one for all.
template <int kRows, bool kRowScales = false>
struct OnlineSoftmax {
  float row_max[kRows];  // raw-product units
  float row_sum[kRows];  // this thread's part of sum 2^((s - m) * to_log2 + bias_log2)
  float to_log2[kRowScales ? kRows : 1];
  // Every probability comes out times 2^bias_log2, inside the same FFMA (the FP8 forward keeps P at 2^8 so that small
  // probabilities stay normal e4m3 numbers); the row sums carry the same factor. 0 for the bf16 forward.
  float bias_log2;

  __forceinline__ __device__ explicit OnlineSoftmax(float scale_log2, float exp_bias_log2 = 0.0f)
      : bias_log2(exp_bias_log2) {
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) {
      row_max[mi] = -INFINITY;
      row_sum[mi] = 0.0f;
    }
    CUTE_UNROLL
    for (int i = 0; i < (kRowScales ? kRows : 1); ++i) to_log2[i] = scale_log2;
  }

  __forceinline__ __device__ void set_row_scale(int mi, float scale_log2) {
    static_assert(kRowScales);
    to_log2[mi] = scale_log2;
  }
  __forceinline__ __device__ float row_scale(int mi) const { return to_log2[kRowScales ? mi : 0]; }

  // Folds a tile of raw products (rowcol view) in: the tile becomes its probabilities (unnormalized), and alpha
  // the factor for O. exp_offset semantics of core/softmax_state.hpp: while a row's max is -inf (nothing visible
  // yet) the offset is 0, so 2^(-inf - 0) = 0 instead of NaN.
  template <class RegS>
  __forceinline__ __device__ void fold(RegS& rS, float (&alpha)[kRows]) {
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) {
      float tile_max = row_max[mi];
      CUTE_UNROLL
      for (int ni = 0; ni < size<1>(rS); ++ni) tile_max = fmaxf(tile_max, rS(mi, ni));
      const float m_new = sm80::quad_max(tile_max);
      // Both products rounded on their own (__fmul_rn: no FMA contraction), so that where the max did not move they
      // are the same value and alpha is exactly 1: the rescale is skipped, and a key tile whose keys the row cannot
      // see changes none of its bits (a row's result does not depend on which other rows share its tile). As an FMA,
      // row_max * to_log2 - offset is the product's rounding error, and alpha 1 + 1 ulp as often as not.
      const float to_log2_row = row_scale(mi);
      const float offset = m_new == -INFINITY ? 0.0f : __fmul_rn(m_new, to_log2_row);
      alpha[mi] = sm80::fast_exp2(__fmul_rn(row_max[mi], to_log2_row) - offset);
      row_max[mi] = m_new;
      const float biased_offset = offset - bias_log2;
      float sum = 0.0f;
      CUTE_UNROLL
      for (int ni = 0; ni < size<1>(rS); ++ni) {
        rS(mi, ni) = sm80::fast_exp2(fmaf(rS(mi, ni), to_log2_row, -biased_offset));
        sum += rS(mi, ni);
      }
      row_sum[mi] = row_sum[mi] * alpha[mi] + sum;
    }
  }

  // O *= alpha row by row. kSkipUnchanged: not when no row of the warp changed its max (every alpha exactly 1), as
  // for most tiles once the maxima settle; a vote and a branch instead of a multiply per accumulator element.
  // Measured on an H200 (2026-11-21, bf16, 512-16k): 3-9% faster at head dim 256, -2..+2% at 128, 3-8% slower at
  // 64, so the bf16 forward skips from 128 accumulators a thread (rescale_skips) and the FP8 one always.
  template <bool kSkipUnchanged, class RegO>
  __forceinline__ __device__ static void rescale(RegO& rO, const float (&alpha)[kRows]) {
    if constexpr (kSkipUnchanged) {
      bool changed = false;
      CUTE_UNROLL
      for (int mi = 0; mi < kRows; ++mi) changed |= alpha[mi] != 1.0f;
      if (!__any_sync(0xffffffffu, changed)) return;
    }
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) {
      CUTE_UNROLL
      for (int ni = 0; ni < size<1>(rO); ++ni) rO(mi, ni) *= alpha[mi];
    }
  }
};

// Whether the bf16 forward skips O's rescale for tiles that moved no row max (OnlineSoftmax::rescale).
template <class RegO>
constexpr bool rescale_skips() {
  return decltype(size(std::declval<RegO>()))::value >= 128;
}

// dst = src converted (cvt in pairs), same layout.
template <class SrcTensor, class DstTensor>
__forceinline__ __device__ void convert_into(SrcTensor const& src, DstTensor& dst) {
  using From = typename SrcTensor::value_type;
  using To = typename DstTensor::value_type;
  constexpr int kNumel = decltype(size(src))::value;
  cutlass::NumericArrayConverter<To, From, kNumel> convert_op;
  *reinterpret_cast<cutlass::Array<To, kNumel>*>(dst.data()) =
      convert_op(*reinterpret_cast<const cutlass::Array<From, kNumel>*>(src.data()));
}

// Which query each row of a tile holds. One head per tile: rows [0, valid) are consecutive tokens of head
// first_head. Packed GQA (pack > 1): row r is token first_token + r / pack of query head first_head + r % pack.
struct TileRows {
  std::int64_t first_token;  // row of the q tensor (the sequence's offset included)
  int first_head;
  int pack;
  int valid;  // rows [valid, kBlockM) hold no query (past the sequence, or the tail of a packed tile)

  __forceinline__ __device__ static TileRows of(const TileWork& w, int pack) {
    return TileRows{w.span.q_offset + w.row0, w.h, pack, w.rows_here * pack};
  }
  __forceinline__ __device__ std::int64_t token(int r) const { return first_token + (pack == 1 ? r : r / pack); }
  __forceinline__ __device__ int head(int r) const { return first_head + (pack == 1 ? 0 : r % pack); }
};

// The epilogue's stores from registers, shared by the bf16 and FP8 forwards (O goes by TMA where it can:
// out_store.cuh). store_lse: each row's LSE (one lane of each quad writes its rows). store_out: O converted to
// OutElement: in the row-column view, columns (2j, 2j + 1) of a row are adjacent in the fragment and in the row, so
// each store is 4 bytes at an even column of a 16-byte aligned row. Rows from rows.valid on are not written. `p` has
// the kernels' out/lse pointers and strides.
template <int kRows, class Params, class RowColCoords>
__forceinline__ __device__ void store_lse(const Params& p, int b, const TileRows& rows, const float (&row_lse)[kRows],
                                          const RowColCoords& rC) {
  if (p.lse == nullptr || get<1>(rC(0, 0)) != 0) return;
  CUTE_UNROLL
  for (int mi = 0; mi < kRows; ++mi) {
    const int row = get<0>(rC(mi, 0));
    if (row < rows.valid) {
      p.lse[b * p.lse_batch_stride + rows.token(row) * p.lse_row_stride + rows.head(row) * p.lse_head_stride] =
          row_lse[mi];
    }
  }
}

template <class OutElement, class Params, class OCoords, class AccO>
__forceinline__ __device__ void store_out(const Params& p, int b, const TileRows& rows, const OCoords& cO,
                                          const AccO& acc_o) {
  Tensor rOut = sm80::convert_tensor<OutElement>(acc_o);
  Tensor rOutRC = make_tensor(rOut.data(), gmma_rowcol_layout(rOut.layout()));
  Tensor rCO = make_tensor(cO.data(), gmma_rowcol_layout(cO.layout()));
  CUTE_UNROLL
  for (int mi = 0; mi < size<0>(rOutRC); ++mi) {
    const int row = get<0>(rCO(mi, 0));
    if (row >= rows.valid) continue;
    OutElement* o_row = static_cast<OutElement*>(p.out) + b * p.o_batch_stride +
                        rows.token(row) * p.o_row_stride + rows.head(row) * p.o_head_stride;
    CUTE_UNROLL
    for (int ni = 0; ni < size<1>(rOutRC); ni += 2) {
      *reinterpret_cast<std::uint32_t*>(o_row + get<1>(rCO(mi, ni))) =
          *reinterpret_cast<const std::uint32_t*>(&rOutRC(mi, ni));
    }
  }
}

// Ping-pong turn-taking between the two consumer warpgroups on named barriers 1 and 2 (after CUTLASS's reserved
// ones). Each barrier counts both warpgroups: the waiting one's sync and the other's arrive.
struct WarpgroupTurns {
  int consumer;  // 0 or 1

  static constexpr std::uint32_t kThreads = 256;
  __forceinline__ __device__ void start() const {
    // The first consumer's first turn: it signals itself.
    if (consumer == 0) cutlass::arch::NamedBarrier::arrive(kThreads, 1);
  }
  __forceinline__ __device__ void wait_turn() const { cutlass::arch::NamedBarrier::sync(kThreads, 1 + consumer); }
  __forceinline__ __device__ void pass_turn() const { cutlass::arch::NamedBarrier::arrive(kThreads, 2 - consumer); }
};

// Consumer-wide named barrier for zero_smem_rows (after WarpgroupTurns' 1 and 2). Named apart from the backward's
// barriers, which live in the same namespace.
constexpr std::uint32_t kForwardZeroRowsBarrier = 3;

// Zeroes rows [first_row, rows), first_row >= 1, of a 128-byte swizzled (rows, cols) tile in shared memory, by all
// kThreads threads of the consumer warpgroups, for wgmma to read next. 16-byte chunks: the swizzle permutes whole
// 16-byte chunks of a row, so each stays contiguous. A fixed, unrolled trip count with predicated stores: no
// divergent loop in the consumers' code. Ends with the proxy fence in every writing thread and the barrier that the
// readers pass.
template <int kThreads, class SmemTile>
__forceinline__ __device__ void zero_smem_rows(SmemTile&& s, int first_row, int ctid) {
  constexpr int kTileRows = decltype(size<0>(s))::value;
  constexpr int kPerChunk = 16 / int(sizeof(typename std::decay_t<SmemTile>::value_type));  // elements in 16 bytes
  constexpr int kChunks = decltype(size<1>(s))::value / kPerChunk;
  constexpr int kTrips = ((kTileRows - 1) * kChunks + kThreads - 1) / kThreads;
  const int first_item = first_row * kChunks;
  CUTE_UNROLL
  for (int trip = 0; trip < kTrips; ++trip) {
    const int item = first_item + trip * kThreads + ctid;
    if (item < kTileRows * kChunks) {
      const std::uint32_t addr =
          cute::cast_smem_ptr_to_uint(raw_pointer_cast(&s(item / kChunks, item % kChunks * kPerChunk)));
      asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(addr), "r"(0) : "memory");
    }
  }
  // Ordinary stores that wgmma (the async proxy) reads next.
  cutlass::arch::fence_view_async_shared();
  cutlass::arch::NamedBarrier::sync(kThreads, kForwardZeroRowsBarrier);
}

// Varlen isolation. A tensor map bounds only the packed tensor, so the rows of a partial last key tile past the
// sequence's end hold the next sequence's K and V. Their scores are masked (the mask assigns -inf, so a NaN or
// infinite product is dropped too) and their probabilities are exactly 0, but P V still multiplies the V rows:
// 0 x Inf = NaN would carry a neighbour's non-finite value into this sequence's output. So rows [first_row,
// kBlockN) of that V stage are zeroed by all consumer threads together before either warpgroup's P V reads them.
// Only the first tile visited can overhang (tiles are walked from the last down): the overlapped schedule clears
// it before its steady-state loop, whose code stays as it was; the serial one tests the tile index.
template <class Traits>
__forceinline__ __device__ void zero_v_rows(typename Traits::Element* smem_v, int stage, int first_row, int ctid) {
  Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutV{});  // (kBlockN, kDimV, stage)
  zero_smem_rows<Traits::kConsumerThreads>(sV(_, _, stage), first_row, ctid);
}
// Everything the mainloop reads, built by the kernel.
template <class Traits, class TSrQ, class TSrK, class TOrV, class RC, class AccO>
struct MainloopArgs {
  typename Traits::Pipeline& pipe_k;
  typename Traits::Pipeline& pipe_v;
  typename Traits::TiledMmaQK& mma_qk;
  typename Traits::TiledMmaPV& mma_pv;
  TSrQ& tSrQ;  // (MMA, MMA_M, MMA_K) descriptors
  TSrK& tSrK;  // (MMA, MMA_N, MMA_K, stage) descriptors
  TOrV& tOrV;  // (MMA, MMA_N, MMA_K, stage) descriptors
  RC const& rC;  // (row, col) in the query tile of each S element, rowcol view
  AccO& acc_o;
  const core::MaskRule& rule;
  int row0;
  int row_pack;  // tile rows per token: the packed GQA group, or 1
  int n_block_min, n_block_max;  // key tiles to visit, from the last down
  int n_full_lo, n_full_hi;      // key tiles that need no mask
  int consumer;                  // which consumer warpgroup (0, 1)
  int ctid;                      // thread index among both consumer warpgroups (0 .. 255)
  sm80::ScoreMod mod;            // read by the kScoreMod mainloop only
  // Varlen: rows of the first visited key tile inside the sequence; kBlockN when none past its end must be
  // cleared (zero_v_rows). V's shared memory for it.
  int v_rows_first;
  typename Traits::Element* smem_v;
  // Arrived on (once per thread per query tile) as soon as this warpgroup's last Q K^T has retired, so that a
  // persistent CTA's producer loads the next tile's Q under the last P V and the epilogue.
  std::uint64_t* q_empty;
};

// `read` walks the K and V stages and carries over from one query tile to the next. Under ping-pong the turns
// carry over too: the kernel calls WarpgroupTurns::start once, and every key tile takes one turn per warpgroup.
// zero_v_rows' barrier sits where both warpgroups are outside their turns (after the first tile's softmax), so the
// turn-taking cannot deadlock against it.
template <class Traits, ForwardSchedule kSchedule, bool kScoreMod, int kRows, class Args>
__forceinline__ __device__ void consumer_mainloop(Args& a, OnlineSoftmax<kRows>& softmax,
                                                  cutlass::PipelineState<Traits::kStages>& read) {
  using Element = typename Traits::Element;
  using PipelineState = cutlass::PipelineState<Traits::kStages>;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr bool kOverlap = kSchedule != ForwardSchedule::serial;
  constexpr bool kPingPong = kSchedule == ForwardSchedule::overlapped;

  const WarpgroupTurns turns{a.consumer};
  Tensor acc_s = partition_fragment_C(a.mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor rS = make_tensor(acc_s.data(), gmma_rowcol_layout(acc_s.layout()));
  Tensor rO = make_tensor(a.acc_o.data(), gmma_rowcol_layout(a.acc_o.layout()));
  Tensor rP = make_tensor<Element>(acc_s.layout());
  Tensor tOrP = make_tensor(rP.data(), gmma_acc_as_a_layout(rP.layout()));
  float alpha[kRows];
  auto needs_mask = [&](int n_block) { return n_block < a.n_full_lo || n_block >= a.n_full_hi; };
  auto mask = [&](int n_block) { sm80::apply_mask(rS, a.rC, a.rule, a.row0, n_block * kBlockN, a.row_pack); };
  auto modify = [&](int n_block) {
    if constexpr (kScoreMod) sm80::apply_score_mod(rS, a.rC, a.mod, a.rule, a.row0, n_block * kBlockN);
  };
  const bool clear_v_first = a.v_rows_first < kBlockN;
  auto release_q = [&] { cutlass::arch::ClusterBarrier::arrive(a.q_empty); };

  if constexpr (!kOverlap) {
    for (int n_block = a.n_block_max - 1; n_block >= a.n_block_min; --n_block) {
      a.pipe_k.consumer_wait(read);
      wgmma_gemm<true>(a.mma_qk, a.tSrQ, a.tSrK(_, _, _, read.index()), acc_s);
      warpgroup_wait<0>();
      a.pipe_k.consumer_release(read);  // K's stage may refill while the softmax runs
      modify(n_block);
      if (needs_mask(n_block)) mask(n_block);
      softmax.fold(rS, alpha);
      softmax.template rescale<rescale_skips<decltype(rO)>()>(rO, alpha);
      convert_into(acc_s, rP);
      a.pipe_v.consumer_wait(read);
      if (clear_v_first && n_block == a.n_block_max - 1) {
        zero_v_rows<Traits>(a.smem_v, read.index(), a.v_rows_first, a.ctid);
      }
      wgmma_gemm<false>(a.mma_pv, tOrP, a.tOrV(_, _, _, read.index()), a.acc_o);
      warpgroup_wait<0>();
      a.pipe_v.consumer_release(read);
      ++read;
    }
    release_q();
    return;
  } else {
    if (a.n_block_max <= a.n_block_min) return release_q();
    // The first key tile: S alone, nothing to overlap with yet.
    int n_block = a.n_block_max - 1;
    if constexpr (kPingPong) turns.wait_turn();
    a.pipe_k.consumer_wait(read);
    wgmma_gemm<true>(a.mma_qk, a.tSrQ, a.tSrK(_, _, _, read.index()), acc_s);
    if constexpr (kPingPong) turns.pass_turn();
    warpgroup_wait<0>();
    a.pipe_k.consumer_release(read);
    modify(n_block);
    if (needs_mask(n_block)) mask(n_block);
    softmax.fold(rS, alpha);  // O is still zero: no rescale
    convert_into(acc_s, rP);
    PipelineState v_read = read;
    ++read;
    if (clear_v_first) {
      a.pipe_v.consumer_wait(v_read);
      zero_v_rows<Traits>(a.smem_v, v_read.index(), a.v_rows_first, a.ctid);
    }

    // Steady state: S(n) and O += P(n + 1) V(n + 1) in flight together; the softmax of S(n) runs under the P V.
    auto step = [&](int n_block, auto masked_tag) {
      if constexpr (kPingPong) turns.wait_turn();
      a.pipe_k.consumer_wait(read);
      wgmma_gemm<true>(a.mma_qk, a.tSrQ, a.tSrK(_, _, _, read.index()), acc_s);
      a.pipe_v.consumer_wait(v_read);
      wgmma_gemm<false>(a.mma_pv, tOrP, a.tOrV(_, _, _, v_read.index()), a.acc_o);
      if constexpr (kPingPong) turns.pass_turn();
      warpgroup_wait<1>();  // batches retire in order: S is done, P V may still run
      a.pipe_k.consumer_release(read);
      modify(n_block);
      if constexpr (decltype(masked_tag)::value) mask(n_block);
      softmax.fold(rS, alpha);
      warpgroup_wait<0>();  // P V done: its P registers and O may be touched again
      a.pipe_v.consumer_release(v_read);
      softmax.template rescale<rescale_skips<decltype(rO)>()>(rO, alpha);
      convert_into(acc_s, rP);
      v_read = read;
      ++read;
    };
    for (n_block = a.n_block_max - 2; n_block >= a.n_block_min; --n_block) {
      if (needs_mask(n_block)) {
        step(n_block, cute::true_type{});
      } else {
        step(n_block, cute::false_type{});
      }
    }
    // Every Q K^T has retired (warpgroup_wait above): Q's buffer may refill. Then the last P V.
    release_q();
    a.pipe_v.consumer_wait(v_read);
    wgmma_gemm<false>(a.mma_pv, tOrP, a.tOrV(_, _, _, v_read.index()), a.acc_o);
    warpgroup_wait<0>();
    a.pipe_v.consumer_release(v_read);
  }
}

}  // namespace ioattn::detail::sm90
