// ioattn sm90 forward: tile choice per head dim, the tensor maps, and the launch. Included by the instantiation
// files only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include "api/problem.hpp"
#include "cuda/device_attribute.hpp"
#include "cuda/shared_memory.hpp"
#include "cuda/sm80/common/cuda_check.cuh"
#include "cuda/sm90/forward.hpp"
#include "cuda/sm90/forward_kernel.cuh"
#include "cuda/sm90/forward_traits.cuh"
#include "cuda/sm90/packed_gqa.cuh"
#include "cuda/sm90/tma_view.cuh"
#include "cuda/sm90/varlen_isolation.hpp"

namespace ioattn::detail::sm90 {

template <DType kDtype>
using ElementOf = std::conditional_t<kDtype == DType::f16, cutlass::half_t, cutlass::bfloat16_t>;

// Key tile per head dims (qk, v). Shared memory: Q (128 x d) + 2 stages of K and V (kBlockN x d each). d 256 takes
// 64 keys (64 + 128 KB = 192 KB; 128 keys would not fit in 227 KB) and keeps the O accumulator (128 registers a
// thread) and S (32) inside the consumers' 240. 192 / 128 keeps 128 keys: 48 + 96 + 64 KB = 208 KB, and the
// registers of d 128 (the O accumulator is as wide as v).
template <DType kDtype, int kDim, int kDimV>
struct ForwardConfig;
template <DType kDtype>
struct ForwardConfig<kDtype, 64, 64> {
  using Traits = ForwardTraits<ElementOf<kDtype>, 64, 128>;
};
template <DType kDtype>
struct ForwardConfig<kDtype, 128, 128> {
  using Traits = ForwardTraits<ElementOf<kDtype>, 128, 128>;
};
template <DType kDtype>
struct ForwardConfig<kDtype, 192, 128> {
  using Traits = ForwardTraits<ElementOf<kDtype>, 192, 128, 2, 128>;
};
template <DType kDtype>
struct ForwardConfig<kDtype, 256, 256> {
  using Traits = ForwardTraits<ElementOf<kDtype>, 256, 64>;
};


inline int multiprocessor_count(int device) {
  return device_attribute<cudaDevAttrMultiProcessorCount>(device, 132, "cudaDeviceGetAttribute(multiprocessor count)");
}

// TileOrder::heavy_first sorts the tiles of this many (head, sequence) pairs together: as many as have their K and
// V in half the L2 (a query head's share of its kv head's; packed GQA: a group's, the whole), at least one.
template <class Traits>
int heavy_first_section_heads(const Problem& p, int pack) {
  const std::int64_t l2 = device_attribute<cudaDevAttrL2CacheSize>(p.device_index, 50 << 20,
                                                                   "cudaDeviceGetAttribute(L2 cache size)");
  const std::int64_t kv_bytes = p.seqlen_k * (Traits::kDim + Traits::kDimV) *
                                std::int64_t(sizeof(typename Traits::Element)) * pack / p.group_size();
  const std::int64_t pairs = p.heads_q / pack * p.batch;
  return int(std::clamp<std::int64_t>(l2 / 2 / std::max<std::int64_t>(kv_bytes, 1), 1, pairs));
}

template <class Traits>
ForwardParams<Traits> make_forward_params(const Problem& p) {
  const bool varlen = p.is_varlen();
  const std::int64_t batches = varlen ? 1 : p.batch;
  const std::int64_t rows_q = varlen ? p.total_q : p.seqlen_q;
  const std::int64_t rows_k = varlen ? p.total_k : p.seqlen_k;

  ForwardParams<Traits> fp{};
  using Element = typename Traits::Element;
  constexpr int kDim = Traits::kDim;
  constexpr int kDimV = Traits::kDimV;
  fp.tma_q = make_tma_copy(SM90_TMA_LOAD{}, make_gmem_view<Element, kDim>(p.q, rows_q, p.heads_q, batches),
                           typename Traits::SmemLayoutQ{}, Shape<Int<Traits::kBlockM>, Int<kDim>>{}, _1{});
  fp.tma_k = make_tma_copy(SM90_TMA_LOAD{}, make_gmem_view<Element, kDim>(p.k, rows_k, p.heads_kv, batches),
                           take<0, 2>(typename Traits::SmemLayoutK{}),
                           Shape<Int<Traits::kBlockN>, Int<kDim>>{}, _1{});
  fp.tma_v = make_tma_copy(SM90_TMA_LOAD{}, make_gmem_view<Element, kDimV>(p.v, rows_k, p.heads_kv, batches),
                           take<0, 2>(typename Traits::SmemLayoutV{}),
                           Shape<Int<Traits::kBlockN>, Int<kDimV>>{}, _1{});
  fp.out_tma = make_out_tma<typename Traits::OutStore>(p.out, rows_q, p.heads_q, batches, fp.tma_out);
  fp.pack_gqa = choose_pack_gqa(p, Traits::kBlockM);
  make_packed_q<Element>(p, kDim, Traits::kBlockM, rows_q, batches, fp.pack_gqa, &fp.tma_q_packed, fp.q_tile_bytes);
  fp.map_rows_q = int(rows_q);
  fp.map_rows_k = int(rows_k);
  fp.heads_q = int(p.heads_q);
  fp.heads_kv = int(p.heads_kv);
  fp.map_batch = int(batches);
  fp.batch = int(p.batch);
  fp.out = p.out.ptr;
  fp.o_batch_stride = p.out.batch_stride, fp.o_row_stride = p.out.seq_stride, fp.o_head_stride = p.out.head_stride;
  fp.lse = static_cast<float*>(p.lse.ptr);
  fp.lse_batch_stride = p.lse.batch_stride, fp.lse_row_stride = p.lse.seq_stride;
  fp.lse_head_stride = p.lse.head_stride;
  fp.cu_seqlens_q = p.cu_seqlens_q;
  fp.cu_seqlens_k = p.cu_seqlens_k;
  fp.total_q = p.total_q;
  fp.total_k = p.total_k;
  fp.seqlen_q = int(p.seqlen_q);
  fp.seqlen_k = int(p.seqlen_k);
  fp.group_size = int(p.group_size());
  fp.scale = p.scale;
  fp.scale_log2 = p.scale * 1.4426950408889634f;
  fp.sinks = p.sinks;
  fp.window_left = p.mask.window_left;
  fp.window_right = p.mask.window_right;
  fp.top_left = p.mask.alignment == Alignment::top_left;
  const int tile_tokens = Traits::kBlockM / fp.pack_gqa;
  fp.num_m_blocks = int((p.seqlen_q + tile_tokens - 1) / tile_tokens);
  fp.softcap = p.softcap;
  fp.alibi_slopes = p.alibi_slopes;
  fp.alibi_batch_stride = p.alibi_batch_stride;
  fp.clear_v_overhang = varlen && !unsafe_varlen_overhang_from_env();
  fp.section_heads = heavy_first_section_heads<Traits>(p, fp.pack_gqa);
  return fp;
}

template <class Traits, ForwardSchedule kSchedule, TileOrder kOrder, bool kScoreMod = false>
void launch_forward_kernel(const Problem& p) {
  constexpr int kSmem = Traits::kSmemBytes;
  auto kernel = &forward_kernel<Traits, kSchedule, kOrder, kScoreMod>;

  sm80::DeviceScope device(p.device_index);
  opt_in_shared_memory(reinterpret_cast<const void*>(kernel), kSmem, p.device_index, "cuda_sm90 forward");

  const ForwardParams<Traits> fp = make_forward_params<Traits>(p);
  // One CTA per SM fits (the shared memory of one takes most of an SM's): a persistent grid is one wave.
  const std::int64_t tiles = std::int64_t(fp.num_m_blocks) * (p.heads_q / fp.pack_gqa) * p.batch;
  const std::int64_t ctas = kOrder == TileOrder::one_per_cta
                                ? tiles
                                : std::min<std::int64_t>(tiles, multiprocessor_count(p.device_index));
  const dim3 grid{unsigned(ctas)};
  kernel<<<grid, Traits::kThreads, kSmem, static_cast<cudaStream_t>(p.stream)>>>(fp);
  sm80::cuda_check(cudaGetLastError(), "cuda_sm90 forward kernel launch");
}

// IOATTN_SM90_FWD_VARIANT (read once) forces a kernel, for side-by-side timing (bench/sdpa_compare.py) and for
// testing each: 0, the overlapped schedule with ping-pong, one CTA per tile; 1, serial; 2, overlapped without
// ping-pong; 3, as 0 on a persistent grid; 4, as 0 on a persistent grid in heavy-first order. Unset (-1):
// choose_order below. With softcap or ALiBi only 0, 3 and 4 exist (1 and 2 run as 0): each schedule kept for
// comparison would add to the score-mod kernels' build time.
// Read at every launch (a getenv, far below a launch's cost) so that a benchmark can time variants in one process.
inline int variant_from_env() {
  const char* env = std::getenv("IOATTN_SM90_FWD_VARIANT");
  return env && *env ? std::atoi(env) : -1;
}

// The persistent grid hands tiles to CTAs statically. In plain stride order it is a win where every tile carries
// the same work: measured 2026-11-21 on an H200 (bf16, 16k tokens, same run), without a mask, persistent vs one
// CTA per tile +17% at seqlen 512, +11% at 1k, +6% at 2k, +1-2% from 4k (d128), +14% / +2% at 1k / 8k (d64),
// +4% / +1% (d256); causal, -35% at 16k (d128) and -29% at 8k (d256), where the stride pattern gives some CTAs
// three times the keys of others. The heavy-first order balances causal work: causal, one CTA per tile vs
// heavy-first (same run, 14:36 UTC, 10 repeats), d64 +26% at 512, +18% at 1k, +10% at 2k, +5% at 4k, +2% at 8k;
// d128 +19%, +16%, +10%, +5%, -2%; but d256 -3%, -10%, -13%, -4%, -7%, and at d128 16k -12% (13:56 UTC): there one
// CTA per tile, whose hardware order (each head's heaviest tiles first, heads in turn, a CTA whenever an SM frees
// up) is a greedy longest-first schedule of its own, wins. 192/128 was not measured: one CTA per tile. Varlen work
// per tile depends on lengths that live on the device: one CTA per tile.
// Measured again once O left by TMA stores (2026-11-22, H200, bf16, 16k tokens, the variants timed in rounds in one
// process, two runs, TFLOP/s one CTA per tile / persistent / heavy-first): without a mask the persistent grid still
// wins up to 4k (d128 1k 536 / 614; d256 1k 614 / 648), ties or loses at 8k from d128 (d128 670 / 665 and
// 671 / 605), and loses at 16k (d128 690 / 655, d256 795 / 699: static shares of long tiles end unevenly); causal,
// heavy-first now also wins or ties at d64 8k (418 / 423 / 432 and 412 / 407 / 416) and loses at 16k (458 / 432 /
// 426), and at d256 one CTA per tile still wins (1k 403 / 367 / 363).
inline TileOrder choose_order(const Problem& p) {
  if (p.is_varlen()) return TileOrder::one_per_cta;
  if (p.mask.is_none()) {
    return p.dim_qk >= 128 && p.seqlen_k >= 8192 ? TileOrder::one_per_cta : TileOrder::persistent;
  }
  const std::int64_t heavy_first_max_keys = p.dim_qk <= 64 ? 8192 : 4096;
  const bool heavy_first = p.dim_qk <= 128 && p.seqlen_k <= heavy_first_max_keys;
  return heavy_first ? TileOrder::heavy_first : TileOrder::one_per_cta;
}

template <DType kDtype, int kDim, int kDimV>
void launch_forward(const Problem& p) {
  using Traits = typename ForwardConfig<kDtype, kDim, kDimV>::Traits;
  constexpr ForwardSchedule kOverlapped = ForwardSchedule::overlapped;
  if (p.seqlen_q == 0 || p.batch == 0 || p.heads_q == 0) return;
  int variant = variant_from_env();
  if (variant < 0) {
    const TileOrder order = choose_order(p);
    variant = order == TileOrder::persistent ? 3 : order == TileOrder::heavy_first ? 4 : 0;
  }
  if (p.softcap > 0.0f || p.alibi_slopes != nullptr) {
    if (variant == 3) return launch_forward_kernel<Traits, kOverlapped, TileOrder::persistent, true>(p);
    if (variant == 4) return launch_forward_kernel<Traits, kOverlapped, TileOrder::heavy_first, true>(p);
    return launch_forward_kernel<Traits, kOverlapped, TileOrder::one_per_cta, true>(p);
  }
  switch (variant) {
    case 1:
      return launch_forward_kernel<Traits, ForwardSchedule::serial, TileOrder::one_per_cta>(p);
    case 2:
      return launch_forward_kernel<Traits, ForwardSchedule::overlapped_no_pingpong, TileOrder::one_per_cta>(p);
    case 3:
      return launch_forward_kernel<Traits, kOverlapped, TileOrder::persistent>(p);
    case 4:
      return launch_forward_kernel<Traits, kOverlapped, TileOrder::heavy_first>(p);
    default:
      return launch_forward_kernel<Traits, kOverlapped, TileOrder::one_per_cta>(p);
  }
}

}  // namespace ioattn::detail::sm90
