// ioattn core: which keys a query row sees, and which (query tile, key tile) pairs need mask code at all.
//
// The rule, for one sequence with seqlen_q queries and seqlen_k keys (attention.hpp documents it for users):
//   diag(i)  = i + diag_offset, diag_offset = seqlen_k - seqlen_q (bottom-right) or 0 (top-left)
//   visible  = diag(i) - window_left <= j <= diag(i) + window_right,  -1 = that side unbounded,  0 <= j < seqlen_k
// The first and last visible key both grow with i, which is what makes tile classification two comparisons.
#pragma once

#include <cstdint>

#include "ioattn/core/config.hpp"

namespace ioattn::core {

enum class TileKind : std::uint8_t {
  skip,     // no (query, key) pair of the tile is visible: do not load or compute it
  full,     // every pair is visible: compute without mask code
  partial,  // some pairs are hidden: apply the mask element by element
};

struct MaskRule {
  std::int64_t window_left = -1;   // -1: unbounded
  std::int64_t window_right = -1;  // -1: unbounded
  std::int64_t diag_offset = 0;    // diag(i) - i
  std::int64_t seqlen_k = 0;

  // top_left_aligned: PyTorch's is_causal convention; otherwise FlashAttention's bottom-right.
  IOATTN_HD static MaskRule make(std::int64_t window_left, std::int64_t window_right, bool top_left_aligned,
                                 std::int64_t seqlen_q, std::int64_t seqlen_k) {
    return {window_left, window_right, top_left_aligned ? 0 : seqlen_k - seqlen_q, seqlen_k};
  }

  IOATTN_HD std::int64_t diag(std::int64_t i) const { return i + diag_offset; }

  // First visible key of row i (may be >= seqlen_k: the row sees nothing).
  IOATTN_HD std::int64_t key_begin(std::int64_t i) const {
    if (window_left < 0) return 0;
    const std::int64_t first = diag(i) - window_left;
    return first > 0 ? first : 0;
  }
  // One past the last visible key of row i (may be <= key_begin: the row sees nothing).
  IOATTN_HD std::int64_t key_end(std::int64_t i) const {
    if (window_right < 0) return seqlen_k;
    const std::int64_t end = diag(i) + window_right + 1;
    return end < seqlen_k ? end : seqlen_k;
  }
  IOATTN_HD bool row_empty(std::int64_t i) const { return key_begin(i) >= key_end(i); }

  IOATTN_HD bool visible(std::int64_t i, std::int64_t j) const {
    return j >= key_begin(i) && j < key_end(i);
  }

  // Rows [q_begin, q_end) against keys [k_begin, k_end), with k_end <= seqlen_k and both ranges non-empty.
  // May answer `partial` where `skip` would also be right (rows that see nothing at both ends), never the reverse.
  IOATTN_HD TileKind classify(std::int64_t q_begin, std::int64_t q_end, std::int64_t k_begin,
                              std::int64_t k_end) const {
    if (key_end(q_end - 1) <= k_begin || key_begin(q_begin) >= k_end) return TileKind::skip;
    if (key_begin(q_end - 1) <= k_begin && key_end(q_begin) >= k_end) return TileKind::full;
    return TileKind::partial;
  }

  // The keys any of rows [q_begin, q_end) can see: [key_begin(q_begin), key_end(q_end - 1)), empty when
  // begin >= end. Kernels walk key tiles only inside this range.
  IOATTN_HD std::int64_t tile_key_begin(std::int64_t q_begin) const { return key_begin(q_begin); }
  IOATTN_HD std::int64_t tile_key_end(std::int64_t q_end) const { return key_end(q_end - 1); }

  // The other way round, for backward kernels that own a key tile: the query tiles (of block_rows rows; q_len rows
  // in all) that classify would not skip against keys [k_begin, k_end), as tile indices [first, last).
  // They form one run: a row's first and last visible keys both grow with the row, so "every row ends before
  // k_begin" holds on a prefix of the tiles and "every row starts at or after k_end" on a suffix; two binary
  // searches find them.
  struct TileRun {
    int first, last;
  };
  IOATTN_HD TileRun query_tiles_seeing(std::int64_t k_begin, std::int64_t k_end, int block_rows,
                                       std::int64_t q_len) const {
    const int tiles = static_cast<int>((q_len + block_rows - 1) / block_rows);
    auto last_row = [&](int m) {
      const std::int64_t end = (std::int64_t(m) + 1) * block_rows;
      return (end < q_len ? end : q_len) - 1;
    };
    // First m in [lo, tiles) with pred(m), for a pred that is false, then true.
    auto first_true = [&](int lo, auto pred) {
      int hi = tiles;
      while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (pred(mid)) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      return lo;
    };
    const int first = first_true(0, [&](int m) { return key_end(last_row(m)) > k_begin; });
    const int last = first_true(first, [&](int m) { return key_begin(std::int64_t(m) * block_rows) >= k_end; });
    return {first, last};
  }
};

}  // namespace ioattn::core
