// ioattn sm80 forward kernel: one CTA per (query tile, head, batch), FlashAttention-2 partitioning.
//
// Mainloop: key tiles from the last visible one down to the first. K and V travel through cp.async in an
// interleaved two-stage pipeline: V of tile n streams in while S = Q K^T of tile n multiplies, K of tile n-1 streams
// in while the softmax and O += P V of tile n run. The softmax works in base 2 on raw products when it can
// (ScoreMod::natural), keeps the running max m and sum l per row, and rescales O only by exp(m_old - m_new); the
// division by l happens once, in the epilogue, through core::SoftmaxState (which also folds in the sink and
// guards rows that saw nothing).
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>

#include <cute/tensor.hpp>

#include "ioattn/core/mask.hpp"
#include "ioattn/core/seqlen.hpp"
#include "ioattn/core/softmax_state.hpp"
#include "cuda/sm80/common/score_mod.cuh"
#include "cuda/sm80/common/tile_ops.cuh"
#include "cuda/sm80/forward_params.cuh"

namespace ioattn::detail::sm80 {

using namespace cute;

// The mask rule as the mainloop needs it, in 32 bits: core::MaskRule's four int64 fields stay live across every key
// tile and were a large part of the registers that spilled. The rule is rebuilt in int64 inside the masked tiles
// only. Windows are clamped to INT_MAX, which changes nothing: |diag| < 2^31 and k_len < 2^30 (forward_unsupported),
// so such a window already reaches past every key.
struct TileMask {
  int diag0;         // MaskRule::diag of the tile's first row
  int window_left;   // -1: unbounded
  int window_right;  // -1: unbounded
  int k_len;

  __forceinline__ __device__ static int clamp_window(std::int64_t w) {
    return w < 0 ? -1 : (w > INT_MAX ? INT_MAX : static_cast<int>(w));
  }
};

// Sets hidden (query, key) pairs to -inf: the full rule rebuilt for the tile's rows (row 0 = the tile's first), in
// registers that live only inside masked tiles, then score_mod.cuh's apply_mask, so the per-row math is core's.
template <class RegS, class CoordS>
__forceinline__ __device__ void apply_tile_mask(RegS& rS, CoordS const& rC, const TileMask& tm, int col0) {
  const core::MaskRule rule{tm.window_left, tm.window_right, tm.diag0, tm.k_len};
  apply_mask(rS, rC, rule, 0, col0);
}

// kPlain: the launch saw no softcap, no ALiBi and a positive scale, so the raw products are ordered like the logits
// and the scale folds into the exponent; the score-mod code is compiled out of the mainloop (fewer live registers).
template <class Traits, bool kPlain>
__global__ void __launch_bounds__(Traits::kNThreads, 1) forward_kernel(const ForwardParams p) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kDimQK = Traits::kDimQK;
  constexpr int kDimV = Traits::kDimV;

  // Heavy query tiles first: under a causal mask the last tiles see the most keys, and launching them early keeps
  // the tail of the grid short.
  const int m_block = p.num_m_blocks - 1 - int(blockIdx.x);
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int tidx = threadIdx.x;

  core::SeqSpan span = core::seq_span(b, p.cu_seqlens_q, p.cu_seqlens_k, p.seqlen_q, p.seqlen_k);
  // Offsets in device memory were never seen by the argument checks: keep a bad one from reaching outside the
  // packed tensors (the result is then wrong, but no memory is touched that the call was not given).
  if (p.cu_seqlens_q != nullptr) span = core::clamp_to_packed(span, p.total_q, p.total_k);
  const int q_len = int(span.q_len);
  const int k_len = int(span.k_len);
  const int row0 = m_block * kBlockM;
  if (row0 >= q_len) return;  // varlen: this sequence is shorter than the longest
  const int rows_here = min(kBlockM, q_len - row0);

  const core::MaskRule rule = core::MaskRule::make(p.window_left, p.window_right, p.top_left, q_len, k_len);
  // Key tiles any row of this tile can see; tiles outside are never loaded.
  int n_block_min = 0, n_block_max = 0;
  if (k_len > 0) {
    const std::int64_t key_lo = rule.tile_key_begin(row0);
    const std::int64_t key_hi = rule.tile_key_end(row0 + rows_here);
    if (key_hi > key_lo) {
      n_block_min = int(key_lo / kBlockN);
      n_block_max = int((key_hi + kBlockN - 1) / kBlockN);
    }
  }

  const int h_kv = h / p.group_size;
  const Element* q_ptr = static_cast<const Element*>(p.q) + b * p.q_batch_stride +
                         (span.q_offset + row0) * p.q_row_stride + h * p.q_head_stride;
  const Element* k_ptr =
      static_cast<const Element*>(p.k) + b * p.k_batch_stride + span.k_offset * p.k_row_stride + h_kv * p.k_head_stride;
  const Element* v_ptr =
      static_cast<const Element*>(p.v) + b * p.v_batch_stride + span.k_offset * p.v_row_stride + h_kv * p.v_head_stride;
  Element* o_ptr = static_cast<Element*>(p.out) + b * p.o_batch_stride + (span.q_offset + row0) * p.o_row_stride +
                   h * p.o_head_stride;

  // Global tiles. gK/gV: (kBlockN, dim, n_blocks); rows past the sequence are never read (predicated copies).
  Tensor gQ = make_tensor(make_gmem_ptr(q_ptr), Shape<Int<kBlockM>, Int<kDimQK>>{}, make_stride(p.q_row_stride, _1{}));
  Tensor gO = make_tensor(make_gmem_ptr(o_ptr), Shape<Int<kBlockM>, Int<kDimV>>{}, make_stride(p.o_row_stride, _1{}));
  Tensor mK = make_tensor(make_gmem_ptr(k_ptr), make_shape(k_len, Int<kDimQK>{}), make_stride(p.k_row_stride, _1{}));
  Tensor mV = make_tensor(make_gmem_ptr(v_ptr), make_shape(k_len, Int<kDimV>{}), make_stride(p.v_row_stride, _1{}));
  Tensor gK = local_tile(mK, Shape<Int<kBlockN>, Int<kDimQK>>{}, make_coord(_, 0));
  Tensor gV = local_tile(mV, Shape<Int<kBlockN>, Int<kDimV>>{}, make_coord(_, 0));

  extern __shared__ __align__(128) char smem[];
  Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem)), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(sQ.data() + size(sQ), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(sK.data() + size(sK), typename Traits::SmemLayoutV{});
  Tensor sVt = make_tensor(sV.data(), typename Traits::SmemLayoutVt{});
  Tensor sVtNoSwizzle = make_tensor(sV.data().get(), typename Traits::SmemLayoutVtNoSwizzle{});

  typename Traits::GmemCopyQK gmem_copy_qk;
  typename Traits::GmemCopyV gmem_copy_v;
  auto gmem_thr_qk = gmem_copy_qk.get_thread_slice(tidx);
  auto gmem_thr_v = gmem_copy_v.get_thread_slice(tidx);
  Tensor tQgQ = gmem_thr_qk.partition_S(gQ);
  Tensor tQsQ = gmem_thr_qk.partition_D(sQ);
  Tensor tKgK = gmem_thr_qk.partition_S(gK);  // (CPY, CPY_N, CPY_K, n_blocks)
  Tensor tKsK = gmem_thr_qk.partition_D(sK);
  Tensor tVgV = gmem_thr_v.partition_S(gV);
  Tensor tVsV = gmem_thr_v.partition_D(sV);
  // Tile coordinates of what each thread copies, for the row predicates.
  Tensor tQcQ = gmem_thr_qk.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kDimQK>>{}));
  Tensor tKcK = gmem_thr_qk.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kDimQK>>{}));
  Tensor tVcV = gmem_thr_v.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kDimV>>{}));

  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(tidx);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);
  Tensor tSrK = thr_mma.partition_fragment_B(sK);
  Tensor tOrVt = thr_mma.partition_fragment_B(sVtNoSwizzle);
  Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kDimV>>{});  // (MMA, MMA_M, MMA_N)

  auto smem_copy_q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto smem_thr_q = smem_copy_q.get_thread_slice(tidx);
  Tensor tSsQ = smem_thr_q.partition_S(sQ);
  auto smem_copy_k = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto smem_thr_k = smem_copy_k.get_thread_slice(tidx);
  Tensor tSsK = smem_thr_k.partition_S(sK);
  auto smem_copy_v = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, tiled_mma);
  auto smem_thr_v = smem_copy_v.get_thread_slice(tidx);
  Tensor tOsVt = smem_thr_v.partition_S(sVt);

  // (row, col) inside a kBlockM x kBlockN score tile of each accumulator element, in the rowcol view.
  Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor rC = make_tensor(tScS.data(), acc_rowcol_layout(tScS.layout()));
  constexpr int kRows = decltype(size<0>(rC))::value;  // query rows this thread holds (with 3 other quad lanes)

  ScoreMod mod;
  mod.scale = p.scale;
  mod.softcap = p.softcap;
  mod.alibi_slope = p.alibi_slopes ? p.alibi_slopes[b * p.alibi_batch_stride + h] : 0.0f;
  mod.natural = kPlain ? false : (p.softcap > 0.0f || mod.alibi_slope != 0.0f || !(p.scale > 0.0f));
  const float to_log2 = mod.to_log2();

  // Running statistics in the tile's units (ScoreMod): m = max seen, l = this thread's part of sum exp(s - m).
  float row_max[kRows];
  float row_sum[kRows];
  CUTE_UNROLL
  for (int mi = 0; mi < kRows; ++mi) {
    row_max[mi] = -INFINITY;
    row_sum[mi] = 0.0f;
  }
  clear(acc_o);

  if (n_block_max > n_block_min) {
    const TileMask tile_mask{int(rule.diag(row0)), TileMask::clamp_window(p.window_left),
                             TileMask::clamp_window(p.window_right), k_len};
    copy_rows_zfill(gmem_copy_qk, tQgQ, tQsQ, tQcQ, rows_here);
    int n_block = n_block_max - 1;
    copy_rows_zfill(gmem_copy_qk, tKgK(_, _, _, n_block), tKsK, tKcK, k_len - n_block * kBlockN);
    cp_async_fence();

    // One step of the mainloop. Instantiated twice, with and without mask code, so that the register allocation of
    // the unmasked tiles (the bulk of the work) is not burdened by the mask's.
    auto step = [&](int n_block, auto masked_tag) {
      constexpr bool kMasked = decltype(masked_tag)::value;
      const int col0 = n_block * kBlockN;
      Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
      clear(acc_s);
      cp_async_wait<0>();
      __syncthreads();  // K(n) landed; every warp is done reading V(n+1)
      copy_rows_zfill(gmem_copy_v, tVgV(_, _, _, n_block), tVsV, tVcV, k_len - col0);
      cp_async_fence();

      gemm_ss(acc_s, tSrQ, tSrK, tSsQ, tSsK, tiled_mma, smem_copy_q, smem_copy_k, smem_thr_q, smem_thr_k);

      Tensor rS = make_tensor(acc_s.data(), acc_rowcol_layout(acc_s.layout()));
      if constexpr (!kPlain) apply_score_mod(rS, rC, mod, rule, row0, col0);
      if constexpr (kMasked) apply_tile_mask(rS, rC, tile_mask, col0);

      cp_async_wait<0>();
      __syncthreads();  // V(n) landed; every warp is done reading K(n)
      if (n_block > n_block_min) {
        copy_rows_zfill(gmem_copy_qk, tKgK(_, _, _, n_block - 1), tKsK, tKcK, k_len - (n_block - 1) * kBlockN);
        cp_async_fence();
      }

      // Online softmax. exp_offset semantics of core/softmax_state.hpp: while a row's max is -inf (nothing visible
      // yet) the offset is 0, so exp2(-inf - 0) = 0 instead of NaN.
      Tensor rO = make_tensor(acc_o.data(), acc_rowcol_layout(acc_o.layout()));
      CUTE_UNROLL
      for (int mi = 0; mi < kRows; ++mi) {
        float tile_max = row_max[mi];
        CUTE_UNROLL
        for (int ni = 0; ni < size<1>(rS); ++ni) tile_max = fmaxf(tile_max, rS(mi, ni));
        const float m_new = quad_max(tile_max);
        // Both products rounded on their own (__fmul_rn: no FMA contraction), so that where the max did not move
        // alpha is exactly 1 and a key tile the row cannot see leaves its bits alone (tests/cuda/forward_test.cpp,
        // InvisibleKeyTilesLeaveARowAlone).
        const float offset = m_new == -INFINITY ? 0.0f : __fmul_rn(m_new, to_log2);
        const float alpha = fast_exp2(__fmul_rn(row_max[mi], to_log2) - offset);
        row_max[mi] = m_new;
        float sum = 0.0f;
        CUTE_UNROLL
        for (int ni = 0; ni < size<1>(rS); ++ni) {
          rS(mi, ni) = fast_exp2(fmaf(rS(mi, ni), to_log2, -offset));
          sum += rS(mi, ni);
        }
        row_sum[mi] = row_sum[mi] * alpha + sum;
        CUTE_UNROLL
        for (int ni = 0; ni < size<1>(rO); ++ni) rO(mi, ni) *= alpha;
      }

      Tensor rP = convert_tensor<Element>(acc_s);
      Tensor tOrP = make_tensor(rP.data(), acc_as_a_operand_layout(rP.layout()));
      gemm_rs(acc_o, tOrP, tOrVt, tOsVt, tiled_mma, smem_copy_v, smem_thr_v);
    };

    // Key tiles every row of this tile sees whole, inside the sequence, need no mask: [n_full_lo, n_full_hi), from
    // MaskRule::classify's `full` test (the visible keys of a row only move right as the row grows).
    const std::int64_t full_lo = (rule.key_begin(row0 + rows_here - 1) + kBlockN - 1) / kBlockN;
    const std::int64_t key_end_first = rule.key_end(row0);
    const std::int64_t full_hi = key_end_first > 0 ? key_end_first / kBlockN : 0;
    const int n_full_lo = full_lo > INT_MAX ? INT_MAX : int(full_lo);
    const int n_full_hi = int(full_hi);
    for (; n_block >= n_block_min; --n_block) {
      if (n_block < n_full_lo || n_block >= n_full_hi) {
        step(n_block, cute::true_type{});
      } else {
        step(n_block, cute::false_type{});
      }
    }
  }

  // Epilogue: finalize each row through core::SoftmaxState (sink, empty rows), scale O once, store O and LSE.
  const float sink = p.sinks ? p.sinks[h] : 0.0f;
  const float to_natural = mod.to_natural();
  float row_lse[kRows];
  {
    Tensor rO = make_tensor(acc_o.data(), acc_rowcol_layout(acc_o.layout()));
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) {
      core::SoftmaxState<float> state;
      state.m = row_max[mi] == -INFINITY ? -INFINITY : row_max[mi] * to_natural;
      state.l = quad_sum(row_sum[mi]);
      const float keep = p.sinks ? state.add_sink(sink) : 1.0f;
      const float factor = keep * state.inv_sum();
      row_lse[mi] = state.lse();
      CUTE_UNROLL
      for (int ni = 0; ni < size<1>(rO); ++ni) rO(mi, ni) *= factor;
    }
  }

  Tensor rOut = convert_tensor<Element>(acc_o);
  // The query tile's shared memory is free: every warp passed the last barrier after its final read of sQ.
  Tensor sO = make_tensor(sQ.data(), typename Traits::SmemLayoutO{});
  auto smem_copy_o = make_tiled_copy_C(typename Traits::SmemCopyAtomO{}, tiled_mma);
  auto smem_thr_o = smem_copy_o.get_thread_slice(tidx);
  Tensor taccOrO = smem_thr_o.retile_S(rOut);
  Tensor taccOsO = smem_thr_o.partition_D(sO);
  if (n_block_max <= n_block_min) __syncthreads();  // no mainloop ran: nothing ordered the Q tile's reuse
  cute::copy(smem_copy_o, taccOrO, taccOsO);

  if (p.lse != nullptr) {
    float* lse_ptr = p.lse + b * p.lse_batch_stride + (span.q_offset + row0) * p.lse_row_stride +
                     h * p.lse_head_stride;
    // One lane of each quad writes its rows.
    if (get<1>(rC(0, 0)) == 0) {
      CUTE_UNROLL
      for (int mi = 0; mi < kRows; ++mi) {
        const int row = get<0>(rC(mi, 0));
        if (row < rows_here) lse_ptr[row * p.lse_row_stride] = row_lse[mi];
      }
    }
  }

  __syncthreads();
  typename Traits::GmemCopyO gmem_copy_o;
  auto gmem_thr_o = gmem_copy_o.get_thread_slice(tidx);
  Tensor tOsO = gmem_thr_o.partition_S(sO);
  Tensor tOgO = gmem_thr_o.partition_D(gO);
  Tensor tOcO = gmem_thr_o.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<kDimV>>{}));
  Tensor tOrO = make_tensor<Element>(shape(tOgO));
  cute::copy(gmem_copy_o, tOsO, tOrO);
  copy_rows_store(gmem_copy_o, tOrO, tOgO, tOcO, rows_here);
}

}  // namespace ioattn::detail::sm80
