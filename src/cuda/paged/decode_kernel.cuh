// ioattn cuda paged: the split-KV decode kernel. One CTA = (one kv head of one sequence, one block of packed query
// rows, one chunk of that sequence's keys).
//
// Rows: the query heads of a GQA group and the sequence's new tokens are packed into the rows of one tile, row
// r = i * group + (h % group) for query token i, so each K and V tile is read once per group, not once per head.
// Key parts: the CTA's key tiles are dealt round-robin to kKeyParts parts (tile n_lo + i goes to part i % kKeyParts);
// each warp keeps one online softmax per part it serves, over kWarpKeys keys (wn ..) of each of the part's tiles, and
// the kKeyParts x kWarpsN partial results of a row are merged at the end, in (part, warp) order, through
// core::SoftmaxState::add_partial, the same merge the combine kernel applies across chunks. The arithmetic is fixed
// by kKeyParts alone, whatever runs it:
// Warps: kGroups key groups of 4 (each 4 as kWarpsM x kWarpsN); group g serves parts g, g + kGroups, ..., streaming
// their tiles through a ring of its own (with its own copy of the query tile and its own barrier), so the groups
// never wait for each other until the epilogue. Two groups serve two parts with 8 warps (one CTA per SM, no second
// CTA's start-up to hide); one group serves both with 4 warps and two states per warp (two CTAs per SM): bit for bit
// the same result, so the backend may pick either by the grid without breaking a fixed split's batch invariance.
// Decoding (a few rows) runs 1 x 4: all four warps split the keys, none idles on empty rows; many rows run 4 x 1 in
// one group and one part, FlashAttention-2 style.
// Keys: K/V tiles of kBlockN keys stream through a kStages-deep cp.async ring; each key row's page is looked up in
// the block table, so a tile may span pages of any size.
// Output: a sequence whose keys form one chunk writes out and lse directly (sink included); otherwise the chunk's
// result, normalized by its own sum, and its lse (no sink) go to the workspace for the combine kernel.
#pragma once

#include <cstdint>

#include "cuda/paged/decode.hpp"
#include "cuda/paged/params.cuh"
#include "cuda/paged/ptx.cuh"
#include "cuda/paged/trace.cuh"
#include "ioattn/core/mask.hpp"
#include "ioattn/core/score_mod.hpp"
#include "ioattn/core/softmax_state.hpp"

namespace ioattn::detail::paged {

template <class Element_, int kDimQK_, int kDimV_, int kWarpsM_, int kBlockN_, int kStages_, int kKeyParts_,
          int kGroups_>
struct DecodeTraits {
  using Element = Element_;
  static constexpr int kDimQK = kDimQK_, kDimV = kDimV_, kWarpsM = kWarpsM_, kBlockN = kBlockN_,
                       kStages = kStages_, kKeyParts = kKeyParts_, kGroups = kGroups_;
  static constexpr int kGroupThreads = 128;
  static constexpr int kThreads = kGroupThreads * kGroups;
  static constexpr int kPartsPerGroup = kKeyParts / kGroups;  // online-softmax states per warp
  static_assert(kGroups >= 1 && kGroups <= 4, "named barriers 1 .. kGroups; 1024 threads at most");
  static_assert(kKeyParts % kGroups == 0, "each group serves the same number of key parts");
  static constexpr int kWarpsN = 4 / kWarpsM;
  static constexpr int kBlockM = 16 * kWarpsM;
  static constexpr int kWarpKeys = kBlockN / kWarpsN;
  static_assert(kWarpKeys % 16 == 0, "a warp's keys feed P.V in k-steps of 16");
  static_assert(kStages >= 2);
  static constexpr int kChunksQK = kDimQK / 8, kChunksV = kDimV / 8;  // 16-byte chunks per row
  // Loads: kLoadLanes lanes per key row (16, or 8 where rows have 8 chunks: D 64, whose rows would leave half of 16
  // lanes idle), kLoadRows rows per pass of the group's 128 threads.
  static constexpr int kLoadLanes = kChunksQK <= 8 && kChunksV <= 8 ? 8 : 16;
  static constexpr int kLoadRows = kGroupThreads / kLoadLanes;
  static_assert(kGroupThreads == 128 && kBlockN % kLoadRows == 0, "loads: whole passes of kLoadRows rows");
  static constexpr int kStageElems = kBlockN * (kDimQK + kDimV);
  static constexpr int kQBytes = kBlockM * kDimQK * 2;          // one query tile per group
  static constexpr int kPipeBytes = kStages * kStageElems * 2;  // one ring per group
  // Epilogue: each key-owning warp's normalized O rows (fp32, rows padded by 8 floats against bank conflicts) and
  // lse, over the rings.
  static constexpr int kPartials = kKeyParts * kWarpsN;
  static constexpr int kOStride = kDimV + 8;
  static constexpr int kEpilogueBytes = kPartials * kBlockM * (kOStride + 1) * 4;
  static constexpr int kRingsBytes = kGroups * kPipeBytes;
  static constexpr int kSmemBytes =
      kGroups * kQBytes + (kRingsBytes > kEpilogueBytes ? kRingsBytes : kEpilogueBytes);
};

// Waits for the 128 threads of key group `group` (named barrier 1 + group); one group is the whole CTA.
template <int kGroups>
__device__ __forceinline__ void group_sync(int group) {
  if constexpr (kGroups == 1) {
    __syncthreads();
  } else {
    asm volatile("bar.sync %0, 128;\n" ::"r"(1 + group) : "memory");
  }
}

// Sequence b's length in the cache: device-resident lengths are trusted but clamped to the table's capacity.
__device__ __forceinline__ int sequence_length(const DecodeParams& p, int b) {
  if (p.seqlens_k == nullptr) return p.capacity;  // a dense cache
  const int len = p.seqlens_k[b];
  return len < 0 ? 0 : (len > p.capacity ? p.capacity : len);
}
// As detail::split_count (paged_problem.hpp): chunks of sequence b.
__device__ __forceinline__ int chunk_count(int len, int split_tokens) {
  return len <= split_tokens ? 1 : (len + split_tokens - 1) / split_tokens;
}

template <class T>
__global__ void __launch_bounds__(T::kThreads) paged_decode_kernel(const DecodeParams p) {
  using Element = typename T::Element;
  using Mma = MmaOp<Element>;
  using SwzQK = SwizzledRows<T::kDimQK>;
  using SwzV = SwizzledRows<T::kDimV>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int group = threadIdx.x / T::kGroupThreads;
  const int tid = threadIdx.x % T::kGroupThreads, lane = tid % 32, warp = tid / 32;  // within the group
  // This group's query tile [kBlockM, dim_qk] (swizzled) and ring kStages x ([kBlockN, dim_qk], [kBlockN, dim_v]).
  Element* s_q = reinterpret_cast<Element*>(smem + group * T::kQBytes);
  Element* s_kv = reinterpret_cast<Element*>(smem + T::kGroups * T::kQBytes + group * T::kPipeBytes);

  const int warp_m = warp / T::kWarpsN, warp_n = warp % T::kWarpsN;
  const int b = blockIdx.x / p.heads_kv, hk = blockIdx.x % p.heads_kv;
  const int split = blockIdx.y;
  const int r0 = blockIdx.z * T::kBlockM;
  IOATTN_PAGED_MARK(p.trace_decode, trace::kStart);

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the stream's previous kernel (launch.cuh), this CTA may be resident
  // before that kernel has finished: wait for its completion (and its writes: q, the caches, the tables may be
  // among them) before reading any input. A no-op when launched without the dependency.
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  // Loads: T::kLoadLanes lanes per key row, rows tid / kLoadLanes + kLoadRows i of a key tile (see load_tile below).
  constexpr int kLanes = T::kLoadLanes, kPassRows = T::kLoadRows;
  constexpr int kRowsPerThread = T::kBlockN / kPassRows;
  const int load_row0 = tid / kLanes, load_lane = tid % kLanes;
  // A dense cache (no table, dense_decode.cu) is one page per sequence: page b.
  const std::int32_t* table = p.block_table != nullptr ? p.block_table + b * p.block_table_stride : nullptr;
  auto page_at = [&](int page_index) { return table != nullptr ? __ldg(table + page_index) : b; };
  // The pages of the group's first tile are read before the sequence's length is known, saving one round trip in
  // front of the first loads (entries past the sequence's pages are read, inside the table, but never used).
  const int first_tile = split * (p.split_tokens / T::kBlockN) + group;
  int first_tile_page[kRowsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int page_index = p.page_div.quotient(first_tile * T::kBlockN + load_row0 + kPassRows * i);
    first_tile_page[i] = page_index < p.max_pages_per_seq ? page_at(page_index) : 0;
  }

  const int len = sequence_length(p, b);
  const int chunks = chunk_count(len, p.split_tokens);
  if (split >= chunks) return;  // the grid is sized by the capacity; this sequence is shorter
  const int q_offset = p.cu_seqlens_q ? p.cu_seqlens_q[b] : 0;
  const int q_len = p.cu_seqlens_q ? p.cu_seqlens_q[b + 1] - q_offset : p.seqlen_q;
  const int rows_seq = q_len * p.group;
  if (r0 >= rows_seq) return;
  // Which row-block variant serves a sequence depends on its own rows only (a packed batch may launch both), so
  // its result never depends on the batch around it.
  if ((T::kBlockM == kNarrowRows) != (rows_seq <= kNarrowRows)) return;
  const int valid_rows = min(T::kBlockM, rows_seq - r0);
  const bool direct = chunks == 1;

  // Keys this CTA must visit: its chunk, cut to what any of its rows can see.
  const core::MaskRule rule = core::MaskRule::make(p.window_left, p.window_right, p.top_left, q_len, len);
  const int i_first = r0 / p.group, i_last = (r0 + valid_rows - 1) / p.group;
  const int chunk_begin = split * p.split_tokens;
  const int chunk_end = min(len, chunk_begin + p.split_tokens);
  const std::int64_t visible_begin = rule.tile_key_begin(i_first), visible_end = rule.tile_key_end(i_last + 1);
  const int key_lo = visible_begin <= chunk_begin ? chunk_begin
                     : visible_begin < chunk_end  ? static_cast<int>(visible_begin)
                                                  : chunk_end;
  const int key_hi = visible_end >= chunk_end ? chunk_end
                     : visible_end > key_lo   ? static_cast<int>(visible_end)
                                              : key_lo;
  const int n_lo = key_lo / T::kBlockN;
  const int n_tiles = key_hi > key_lo ? (key_hi + T::kBlockN - 1) / T::kBlockN - n_lo : 0;
  // This group's tiles: n_lo + group + kGroups t for t < group_tiles; its t-th tile belongs to key part
  // group + kGroups (t % kPartsPerGroup).
  const int group_tiles = n_tiles > group ? (n_tiles - group + T::kGroups - 1) / T::kGroups : 0;
  auto tile_index = [&](int t) { return n_lo + group + T::kGroups * t; };

  // Query tile: rows past the sequence's are zero-filled (their scores are never stored, but must not be NaN).
  {
    const Element* q = static_cast<const Element*>(p.q);
    for (int idx = tid; idx < T::kBlockM * T::kChunksQK; idx += T::kGroupThreads) {
      const int r = idx / T::kChunksQK, c = idx % T::kChunksQK;
      const Element* src = q;
      int bytes = 0;
      if (r < valid_rows) {
        const int i = (r0 + r) / p.group, h = hk * p.group + (r0 + r) % p.group;
        src = q + b * p.q_batch_stride + (q_offset + i) * p.q_row_stride + h * p.q_head_stride + c * 8;
        bytes = 16;
      }
      cp_async_16(smem_addr(s_q + SwzQK::offset(r, c)), src, bytes);
    }
  }

  const Element* k_cache = static_cast<const Element*>(p.k_cache);
  const Element* v_cache = static_cast<const Element*>(p.v_cache);
  // Loads: kLanes lanes per key row, rows tid / kLanes + kPassRows i of the tile; lane c moves chunks c, c + kLanes,
  // ... of the row's K and V. The page of each row is looked up one iteration before its loads are issued, so the
  // issue never waits on the block table (a table load in front of each cp.async would put its latency into every
  // iteration). Everything per thread that does not change with the row is hoisted: rows r = row0 + kPassRows i
  // (kPassRows 8 or 16) share r % 8, so the swizzled shared-memory offset is one per thread plus compile-time steps,
  // and the cache pointers carry the kv head and the lane's chunk; per row remain one table load, a division by the
  // page size (multiply-shift) and two 64-bit multiply-adds.
  const Element* k_lane = k_cache + hk * p.k_head_stride + load_lane * 8;
  const Element* v_lane = v_cache + hk * p.v_head_stride + load_lane * 8;
  const int s_k_lane = SwzQK::offset(load_row0, load_lane), s_v_lane = SwzV::offset(load_row0, load_lane);
  int row_page[kRowsPerThread], row_in_page[kRowsPerThread];  // page -1: past the sequence's end, zero-filled
  auto look_up_pages = [&](int n, bool may_be_first) {
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int j = n * T::kBlockN + load_row0 + kPassRows * i;
      const int page_index = p.page_div.quotient(j);
      row_in_page[i] = j - page_index * p.page_size;
      // Entries past a sequence's last page may hold anything: never read them.
      const bool reuse = may_be_first && n == first_tile;
      row_page[i] = j < len ? (reuse ? first_tile_page[i] : page_at(page_index)) : -1;
    }
  };
  // Issues the loads of the looked-up tile into ring slot `slot`.
  auto load_tile = [&](int slot) {
    const std::uint32_t s_k = smem_addr(s_kv + slot * T::kStageElems);
    const std::uint32_t s_v = s_k + 2 * T::kBlockN * T::kDimQK;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const bool in = row_page[i] >= 0;
      // A row past the end reads nothing (size 0 zero-fills); its address only has to be formed: page 0's.
      const std::uint64_t page = static_cast<std::uint32_t>(in ? row_page[i] : 0);  // 32 x 32 -> 64-bit multiply
      const int bytes = in ? 16 : 0;
      const Element* k_row = k_lane + page * p.k_page_stride + row_in_page[i] * p.k_row_stride;
      const Element* v_row = v_lane + page * p.v_page_stride + row_in_page[i] * p.v_row_stride;
#pragma unroll
      for (int k = 0; k < (T::kChunksQK + kLanes - 1) / kLanes; ++k) {
        if (T::kChunksQK % kLanes == 0 || load_lane + kLanes * k < T::kChunksQK) {
          cp_async_16(s_k + 2 * (s_k_lane + kPassRows * i * T::kDimQK + 8 * kLanes * k), k_row + 8 * kLanes * k,
                      bytes);
        }
      }
#pragma unroll
      for (int k = 0; k < (T::kChunksV + kLanes - 1) / kLanes; ++k) {
        if (T::kChunksV % kLanes == 0 || load_lane + kLanes * k < T::kChunksV) {
          cp_async_16(s_v + 2 * (s_v_lane + kPassRows * i * T::kDimV + 8 * kLanes * k), v_row + 8 * kLanes * k,
                      bytes);
        }
      }
    }
  };

  // Prologue: the query tile rides in the first commit group; then the pages of the first tile the loop issues.
#pragma unroll
  for (int s = 0; s < T::kStages - 1; ++s) {
    if (s < group_tiles) {
      look_up_pages(tile_index(s), true);
      load_tile(s);
    }
    cp_async_commit();
  }
  if (T::kStages - 1 < group_tiles) look_up_pages(tile_index(T::kStages - 1), false);

  // This thread's two accumulator rows (g and g + 8 of its warp's 16), their query token and visible keys.
  const int g = lane / 4, t4 = lane % 4;
  int row_i[2], row_key_begin[2], row_key_end[2];
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    const int r = min(warp_m * 16 + g + 8 * q, valid_rows - 1);  // padding rows act as the last real one
    row_i[q] = (r0 + r) / p.group;
    const std::int64_t kb = rule.key_begin(row_i[q]), ke = rule.key_end(row_i[q]);
    row_key_begin[q] = static_cast<int>(kb < len ? kb : len);
    row_key_end[q] = static_cast<int>(ke > 0 ? ke : 0);  // key_end <= len already
  }
  const bool has_mod = p.softcap > 0.0f || p.alibi_slopes != nullptr;
  float slope[2] = {0.0f, 0.0f};
  if (p.alibi_slopes) {
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const int r = min(warp_m * 16 + g + 8 * q, valid_rows - 1);
      const int h = hk * p.group + (r0 + r) % p.group;
      slope[q] = p.alibi_slopes[b * p.alibi_batch_stride + h];
    }
  }

  constexpr int kSTiles = T::kWarpKeys / 8;  // m16n8 score tiles per warp
  constexpr int kOTiles = T::kDimV / 8;
  // Per key part this warp serves: O [16 rows, dim_v] fp32 and the two rows' states (natural-log units; l holds
  // this thread's columns until the epilogue).
  float acc_o[T::kPartsPerGroup][kOTiles][4];
  core::SoftmaxState<float> state[T::kPartsPerGroup][2];
#pragma unroll
  for (int k = 0; k < T::kPartsPerGroup; ++k) {
#pragma unroll
    for (int nt = 0; nt < kOTiles; ++nt) acc_o[k][nt][0] = acc_o[k][nt][1] = acc_o[k][nt][2] = acc_o[k][nt][3] = 0.0f;
  }

  const std::uint32_t q_base = smem_addr(s_q);
  const int warp_key0 = warp_n * T::kWarpKeys;
  // The query tile's A fragments: in the key-group kernels (dims 64 and 128: 16 or 32 registers) loaded at the first
  // tile and kept in registers, not reloaded from shared memory with their address arithmetic every tile. The other
  // kernels would spill (ptxas, sm_90a: 28 bytes in one part, 20 with two states per warp, D 128).
  constexpr int kQSteps = T::kDimQK / 16;
  constexpr bool kQInRegisters = T::kGroups > 1 && T::kDimQK <= 128;
  std::uint32_t q_frag[kQInRegisters ? kQSteps : 1][4];
  auto load_q = [&](std::uint32_t(&a)[4], int kk) {
    ldmatrix_x4(a, q_base + 2 * SwzQK::offset(warp_m * 16 + lane % 16, 2 * kk + lane / 16));
  };

  // The group's t-th tile, folded into one part's accumulator and states.
  auto process_tile = [&](int t, float (&acc_o)[kOTiles][4], core::SoftmaxState<float> (&state)[2]) {
    cp_async_wait<T::kStages - 2>();
    group_sync<T::kGroups>(group);  // tile t is in; every warp of the group is done with the slot refilled next
    if (t == 0) IOATTN_PAGED_MARK(p.trace_decode, trace::kFirst);
    if constexpr (kQInRegisters) {
      if (t == 0) {
#pragma unroll
        for (int kk = 0; kk < kQSteps; ++kk) load_q(q_frag[kk], kk);
      }
    }
    if (t + T::kStages - 1 < group_tiles) load_tile((t + T::kStages - 1) % T::kStages);
    cp_async_commit();
    if (t + T::kStages < group_tiles) look_up_pages(tile_index(t + T::kStages), false);  // lands while t computes

    const int slot = t % T::kStages;
    const Element* s_k = s_kv + slot * T::kStageElems;
    const Element* s_v = s_k + T::kBlockN * T::kDimQK;
    const std::uint32_t k_base = smem_addr(s_k), v_base = smem_addr(s_v);
    const int tile_key0 = tile_index(t) * T::kBlockN;

    // S = Q K^T over this warp's keys: [16 rows, kWarpKeys keys], fp32.
    float acc_s[kSTiles][4];
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) acc_s[nt][0] = acc_s[nt][1] = acc_s[nt][2] = acc_s[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kQSteps; ++kk) {
      std::uint32_t a[4];
      if constexpr (kQInRegisters) {
        a[0] = q_frag[kk][0], a[1] = q_frag[kk][1], a[2] = q_frag[kk][2], a[3] = q_frag[kk][3];
      } else {
        load_q(a, kk);
      }
#pragma unroll
      for (int np = 0; np < kSTiles / 2; ++np) {
        std::uint32_t bk[4];
        const int m = lane / 8;
        ldmatrix_x4(bk, k_base + 2 * SwzQK::offset(warp_key0 + np * 16 + (m / 2) * 8 + lane % 8, 2 * kk + m % 2));
        Mma::run(acc_s[2 * np], a, bk[0], bk[1]);
        Mma::run(acc_s[2 * np + 1], a, bk[2], bk[3]);
      }
    }

    // Raw products -> logits (core::score_mod), hidden pairs -> -inf. Uniform per CTA: a tile wholly inside every
    // row's visible range and the sequence runs no mask code.
    const int tile_key_end = tile_key0 + T::kBlockN;
    const bool need_mask = tile_key_end > len ||
                           rule.classify(i_first, i_last + 1, tile_key0, tile_key_end) != core::TileKind::full;
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int q = e / 2;
        const int key = tile_key0 + warp_key0 + nt * 8 + 2 * t4 + (e & 1);
        float x = acc_s[nt][e] * p.scale;
        if (has_mod) {
          x = core::apply_softcap(x, p.softcap);
          if (p.alibi_slopes) x += core::alibi_bias(slope[q], key, rule.diag(row_i[q]));
        }
        if (need_mask && (key < row_key_begin[q] || key >= row_key_end[q])) x = -INFINITY;
        acc_s[nt][e] = x;
      }
    }

    // Online softmax, one row pair per thread; a quad of lanes shares each row.
    float alpha[2];
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kSTiles; ++nt) mx = fmaxf(mx, fmaxf(acc_s[nt][2 * q], acc_s[nt][2 * q + 1]));
      alpha[q] = state[q].begin_tile(quad_max(mx));
      const float offset = state[q].offset();
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kSTiles; ++nt) {
#pragma unroll
        for (int e = 2 * q; e < 2 * q + 2; ++e) {
          acc_s[nt][e] = __expf(acc_s[nt][e] - offset);  // -inf (hidden) -> 0
          sum += acc_s[nt][e];
        }
      }
      state[q].l += sum;
    }
    // Once the running max has settled, most tiles leave it unchanged (alpha exactly 1): skip the rescale then.
    if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
      for (int nt = 0; nt < kOTiles; ++nt) {
        acc_o[nt][0] *= alpha[0], acc_o[nt][1] *= alpha[0];
        acc_o[nt][2] *= alpha[1], acc_o[nt][3] *= alpha[1];
      }
    }

    // O += P V: P re-read from the score accumulators as A fragments, V through transposing ldmatrix.
#pragma unroll
    for (int ks = 0; ks < T::kWarpKeys / 16; ++ks) {
      std::uint32_t a[4];
      a[0] = Mma::pack(acc_s[2 * ks][0], acc_s[2 * ks][1]);
      a[1] = Mma::pack(acc_s[2 * ks][2], acc_s[2 * ks][3]);
      a[2] = Mma::pack(acc_s[2 * ks + 1][0], acc_s[2 * ks + 1][1]);
      a[3] = Mma::pack(acc_s[2 * ks + 1][2], acc_s[2 * ks + 1][3]);
#pragma unroll
      for (int dp = 0; dp < kOTiles / 2; ++dp) {
        std::uint32_t bv[4];
        const int m = lane / 8;
        ldmatrix_x4_trans(bv, v_base + 2 * SwzV::offset(warp_key0 + ks * 16 + (m % 2) * 8 + lane % 8, 2 * dp + m / 2));
        Mma::run(acc_o[2 * dp], a, bv[0], bv[1]);
        Mma::run(acc_o[2 * dp + 1], a, bv[2], bv[3]);
      }
    }
  };
  // Parts by compile-time index (dynamic indexing would put the accumulators in local memory).
  for (int t0 = 0; t0 < group_tiles; t0 += T::kPartsPerGroup) {
#pragma unroll
    for (int k = 0; k < T::kPartsPerGroup; ++k) {
      if (t0 + k < group_tiles) process_tile(t0 + k, acc_o[k], state[k]);
    }
  }
  cp_async_wait<0>();
  // The group's ring is free for its epilogue: a group that finishes first writes its partials while the other
  // still streams.
  group_sync<T::kGroups>(group);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The combine (or the stream's next decode) may be scheduled once every CTA got here: either waits for this grid's
  // completion before reading what it writes. Triggered late rather than at the start: a dependent decode resident
  // through this whole grid measured 1 us slower at 16 x 8k (H200); and only after the wait above, since the
  // combine reads the sequence lengths before its own wait, which must not overtake the kernel that wrote them.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif

  // Each warp's rows per part, normalized by the part's own sum, with their lse, to shared memory, over the ring of
  // the group that served the part: a group writes over no ring but its own. Only rows holding a query row are
  // written (a decode step of GQA group 4 fills 4 of 16), since the merge reads no other. Partial (part, warp),
  // part = g + kGroups k, is slot k * kWarpsN + warp of group g's [kPartsPerGroup * kWarpsN][kBlockM][kOStride] rows,
  // followed by their lse [kPartsPerGroup * kWarpsN][kBlockM].
  constexpr int kGroupPartials = T::kPartsPerGroup * T::kWarpsN;
  static_assert(kGroupPartials * T::kBlockM * (T::kOStride + 1) * 4 <= T::kPipeBytes,
                "a group's partial rows fit over its own ring");
  auto group_of = [&](int partial) {  // (part, warp) -> the partials over its group's ring
    const int g = partial / T::kWarpsN % T::kGroups;
    return reinterpret_cast<float*>(smem + T::kGroups * T::kQBytes + g * T::kPipeBytes);
  };
  auto slot_of = [](int partial) { return partial / T::kWarpsN / T::kGroups * T::kWarpsN + partial % T::kWarpsN; };
  auto partial_rows = [&](int partial) { return group_of(partial) + slot_of(partial) * T::kBlockM * T::kOStride; };
  auto partial_lse = [&](int partial) {
    return group_of(partial) + kGroupPartials * T::kBlockM * T::kOStride + slot_of(partial) * T::kBlockM;
  };
#pragma unroll
  for (int k = 0; k < T::kPartsPerGroup; ++k) {
    const int partial = (group + T::kGroups * k) * T::kWarpsN + warp_n;
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      state[k][q].l = quad_sum(state[k][q].l);
      const float inv = state[k][q].inv_sum();
      const int row = warp_m * 16 + g + 8 * q;
      if (row >= valid_rows) continue;
      float* dst = partial_rows(partial) + row * T::kOStride + 2 * t4;
#pragma unroll
      for (int nt = 0; nt < kOTiles; ++nt) {
        *reinterpret_cast<float2*>(dst + nt * 8) =
            make_float2(acc_o[k][nt][2 * q] * inv, acc_o[k][nt][2 * q + 1] * inv);
      }
      if (t4 == 0) partial_lse(partial)[row] = state[k][q].lse();
    }
  }
  __syncthreads();  // every group's partials are in
  IOATTN_PAGED_MARK(p.trace_decode, trace::kLoopEnd);

  // Merge the partial rows (in (part, warp) order, as the combine merges chunks), then write out + lse directly, or
  // the chunk's partial result.
  constexpr int kVec = T::kDimV / 4;
  for (int idx = threadIdx.x; idx < T::kBlockM * kVec; idx += T::kThreads) {
    const int row = idx / kVec, c = (idx % kVec) * 4;
    if (row >= valid_rows) continue;
    core::SoftmaxState<float> merged;
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int w = 0; w < T::kPartials; ++w) {
      float weight;
      const float keep = merged.add_partial(partial_lse(w)[row], weight);
      const float4 part = *reinterpret_cast<const float4*>(partial_rows(w) + row * T::kOStride + c);
      o.x = o.x * keep + weight * part.x, o.y = o.y * keep + weight * part.y;
      o.z = o.z * keep + weight * part.z, o.w = o.w * keep + weight * part.w;
    }
    const int i = (r0 + row) / p.group, h = hk * p.group + (r0 + row) % p.group;
    if (direct) {
      float factor = 1.0f;
      if (p.sinks) factor = merged.add_sink(p.sinks[h]);
      factor *= merged.inv_sum();
      Element* out = static_cast<Element*>(p.out) + b * p.o_batch_stride + (q_offset + i) * p.o_row_stride +
                     h * p.o_head_stride + c;
      uint2 packed;
      packed.x = Mma::pack(o.x * factor, o.y * factor);
      packed.y = Mma::pack(o.z * factor, o.w * factor);
      *reinterpret_cast<uint2*>(out) = packed;
      if (p.lse && c == 0) {
        p.lse[b * p.lse_batch_stride + (q_offset + i) * p.lse_row_stride + h * p.lse_head_stride] = merged.lse();
      }
    } else {
      const float factor = merged.inv_sum();
      const std::int64_t prow = (p.cu_seqlens_q ? 0 : static_cast<std::int64_t>(b) * p.seqlen_q) + q_offset + i;
      const std::int64_t slot = (static_cast<std::int64_t>(split) * p.rows + prow) * p.heads_q + h;
      *reinterpret_cast<float4*>(p.partial_out + slot * T::kDimV + c) =
          make_float4(o.x * factor, o.y * factor, o.z * factor, o.w * factor);
      if (c == 0) p.partial_lse[slot] = merged.lse();
    }
  }
#if defined(IOATTN_PAGED_TRACE)
  __syncthreads();
  IOATTN_PAGED_MARK(p.trace_decode, trace::kEnd);
#endif
}

}  // namespace ioattn::detail::paged
