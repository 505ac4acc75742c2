// ioattn sm90 forward: which query tile each CTA works on, in which order.
//
// A tile is (query tile of kBlockM rows, query head, sequence); under packed GQA (p.pack_gqa = the group size > 1)
// (query tile of kBlockM / pack_gqa tokens, kv head's group of query heads, sequence). Three orders (TileOrder):
//  - one_per_cta: a CTA per tile; the hardware hands out CTAs in index order as SMs free up, which balances
//    uneven work by itself, but every CTA pays its prologue and epilogue with nothing to overlap them.
//  - persistent: one CTA per SM striding over the tiles (c, c + G, c + 2G, ...), so the producer loads the next
//    tile while the consumers finish this one. Balanced only when every tile carries the same work (no mask).
//  - heavy_first: persistent, for masks that make the work uneven (causal: a tile's keys grow with its row). The
//    tiles are sorted by query tile from the last down (under a causal mask: by their work, heaviest first; a
//    sliding window leaves them about equal), and dealt out in a zigzag (round k: CTA c takes position
//    k G + c when k is even, k G + G - 1 - c when odd), so each CTA's heavy tiles pair with light ones and the
//    rounds end together. Sorting across all heads would have every head's K and V in flight at once; so the
//    sort runs within sections of `section_heads` (head, sequence) pairs whose K and V fit in half the L2.
#pragma once

#include <cstdint>

#include "ioattn/core/mask.hpp"
#include "ioattn/core/seqlen.hpp"

namespace ioattn::detail::sm90 {

enum class TileOrder : int { one_per_cta = 0, persistent = 1, heavy_first = 2 };

// One query tile's work: which (rows, head, sequence), the mask rule, and the key tiles any of its rows can see.
// Packed GQA: h is the group's first query head, and the rows are tokens, each held by pack_gqa tile rows.
struct TileWork {
  int m_block, h, b;
  core::SeqSpan span;
  int row0, rows_here;  // valid tokens: [row0, row0 + rows_here) of the sequence
  core::MaskRule rule;
  int n_block_min, n_block_max;
  bool valid;  // false: the sequence is shorter than this tile's first row (varlen)
};

// Rounds of the CTA loop: each round gives a CTA at most one tile.
template <TileOrder kOrder>
__forceinline__ __device__ std::int64_t tile_rounds(std::int64_t num_tiles) {
  if constexpr (kOrder == TileOrder::one_per_cta) return 1;
  return (num_tiles + gridDim.x - 1) / gridDim.x;
}

// The tile position this CTA takes in round k; >= num_tiles: none (the last round's stragglers).
template <TileOrder kOrder>
__forceinline__ __device__ std::int64_t tile_of_round(std::int64_t k) {
  const std::int64_t ctas = gridDim.x;
  if constexpr (kOrder == TileOrder::one_per_cta) return blockIdx.x;
  if constexpr (kOrder == TileOrder::persistent) return blockIdx.x + k * ctas;
  return k * ctas + ((k & 1) ? ctas - 1 - blockIdx.x : blockIdx.x);
}

// Tile position t -> (query tile, head, sequence). one_per_cta and persistent: the query tiles of one (head,
// sequence) are adjacent, so CTAs running together share their K and V in L2, and inside a head the last (under a
// causal mask, heaviest) tile comes first. heavy_first: within each section of section_heads (head, sequence)
// pairs, by query tile from the last down, the section's pairs in turn for each.
template <int kBlockM, int kBlockN, TileOrder kOrder, class Params>
__forceinline__ __device__ TileWork resolve_tile(const Params& p, std::int64_t t) {
  TileWork w;
  // 32-bit unsigned division: a 64-bit one is a long software sequence, and this runs on the consumers' path
  // between two tiles. forward_unsupported refuses more than 2^31 - 1 tiles (packing adds at most one per group
  // and sequence).
  const std::uint32_t tile = std::uint32_t(t);
  const std::uint32_t heads = std::uint32_t(p.heads_q / p.pack_gqa);  // (head or group, sequence) pairs per sequence
  const int tokens = kBlockM / p.pack_gqa;                            // tokens per query tile
  const std::uint32_t m_blocks = std::uint32_t(p.num_m_blocks);
  std::uint32_t hb;
  if constexpr (kOrder == TileOrder::heavy_first) {
    const std::uint32_t pairs = heads * std::uint32_t(p.batch);
    const std::uint32_t section_heads = std::uint32_t(p.section_heads);
    const std::uint32_t per_section = section_heads * m_blocks;
    const std::uint32_t section = tile / per_section;
    const std::uint32_t first_pair = section * section_heads;
    const std::uint32_t pairs_here = pairs - first_pair < section_heads ? pairs - first_pair : section_heads;
    const std::uint32_t r = tile - section * per_section;
    w.m_block = int(m_blocks - 1 - r / pairs_here);
    hb = first_pair + r % pairs_here;
  } else {
    w.m_block = int(m_blocks - 1 - tile % m_blocks);
    hb = tile / m_blocks;
  }
  w.h = int(hb % heads) * p.pack_gqa;
  w.b = int(hb / heads);
  w.span = core::seq_span(w.b, p.cu_seqlens_q, p.cu_seqlens_k, p.seqlen_q, p.seqlen_k);
  if (p.cu_seqlens_q != nullptr) w.span = core::clamp_to_packed(w.span, p.total_q, p.total_k);
  const int q_len = int(w.span.q_len);
  const int k_len = int(w.span.k_len);
  w.row0 = w.m_block * tokens;
  w.valid = w.row0 < q_len;
  w.rows_here = w.valid ? min(tokens, q_len - w.row0) : 0;
  w.rule = core::MaskRule::make(p.window_left, p.window_right, p.top_left, q_len, k_len);
  w.n_block_min = w.n_block_max = 0;
  if (w.valid && k_len > 0) {
    const std::int64_t key_lo = w.rule.tile_key_begin(w.row0);
    const std::int64_t key_hi = w.rule.tile_key_end(w.row0 + w.rows_here);
    if (key_hi > key_lo) {
      w.n_block_min = int(key_lo / kBlockN);
      w.n_block_max = int((key_hi + kBlockN - 1) / kBlockN);
    }
  }
  return w;
}

}  // namespace ioattn::detail::sm90
