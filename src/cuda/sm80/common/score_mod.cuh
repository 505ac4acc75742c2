// ioattn sm80: the score transforms and the mask, applied to a register tile of raw products q.k.
//
// The math is core's (include/ioattn/core/{mask,score_mod}.hpp); this file only walks a tile's elements, in the
// rowcol view of tile_ops.cuh. Everything here is a uniform branch per tile: a tile that MaskRule::classify calls
// `full` and that lies inside the key range runs no mask code at all.
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>

#include "ioattn/core/mask.hpp"
#include "ioattn/core/score_mod.hpp"
#include "cuda/sm80/common/tile_ops.cuh"

namespace ioattn::detail::sm80 {

// What turns a raw product q.k into the logit the softmax sees, for one (batch, head).
struct ScoreMod {
  float scale;        // softmax scale
  float softcap;      // > 0: cap * tanh(s / cap)
  float alibi_slope;  // 0: no bias
  bool natural;       // true: the tile is rewritten to natural-unit logits; false: left raw (only `scale` applies)

  // Without softcap or ALiBi (and with a positive scale) the raw products are ordered like the logits, so the tile
  // is left raw and the scale folds into the exponent's FFMA: one multiply per element saved in the hot loop.
  // Returns the factor from the tile's units to log2 units.
  __forceinline__ __device__ float to_log2() const {
    constexpr float kLog2e = 1.4426950408889634f;
    return natural ? kLog2e : scale * kLog2e;
  }
  // The factor from the tile's units to natural-log units.
  __forceinline__ __device__ float to_natural() const { return natural ? 1.0f : scale; }
};

// rS: rowcol view of raw products; rC: the (row, col) tile coordinates of each element, same view.
// row0/col0: the tile's first query row / key in its sequence.
template <class RegS, class CoordS>
__forceinline__ __device__ void apply_score_mod(RegS& rS, CoordS const& rC, ScoreMod const& mod,
                                                const core::MaskRule& rule, int row0, int col0) {
  if (!mod.natural) return;
  if (mod.softcap > 0.0f) {
    // core::apply_softcap with the scale folded into the tanh's argument.
    // tanh(x) = 1 - 2 / (1 + e^(2x)), on the special-function unit: its error is absolute (about 1e-7, times the
    // cap in the logit), far below what the 16-bit output resolves, and at +-inf it gives +-1, never NaN.
    // (Accurate tanhf needs enough registers to make the whole kernel spill.)
    const float pre = 2.0f * 1.4426950408889634f * mod.scale / mod.softcap;
    CUTE_UNROLL
    for (int i = 0; i < size(rS); ++i) {
      rS(i) = mod.softcap - 2.0f * mod.softcap * fast_rcp(1.0f + fast_exp2(rS(i) * pre));
    }
  } else {
    CUTE_UNROLL
    for (int i = 0; i < size(rS); ++i) rS(i) *= mod.scale;
  }
  if (mod.alibi_slope != 0.0f) {
    CUTE_UNROLL
    for (int mi = 0; mi < size<0>(rS); ++mi) {
      // Distances fit in int: sequences are at most 2^30 long (forward_unsupported).
      const int diag = static_cast<int>(rule.diag(row0 + get<0>(rC(mi, 0))));
      CUTE_UNROLL
      for (int ni = 0; ni < size<1>(rS); ++ni) {
        rS(mi, ni) += core::alibi_bias(mod.alibi_slope, col0 + get<1>(rC(mi, ni)), diag);
      }
    }
  }
}

// Sets hidden (query, key) pairs to -inf: keys the rule hides from the row, and keys at or past the sequence's end
// (the last key tile may overhang; its rows were zero-filled, but a zero product is not a masked one).
// row_pack: tile rows per query row (the Hopper forward's packed GQA holds one token's query heads in consecutive
// rows); 1 otherwise.
template <class RegS, class CoordS>
__forceinline__ __device__ void apply_mask(RegS& rS, CoordS const& rC, const core::MaskRule& rule, int row0,
                                           int col0, int row_pack = 1) {
  CUTE_UNROLL
  for (int mi = 0; mi < size<0>(rS); ++mi) {
    const int tile_row = get<0>(rC(mi, 0));
    const std::int64_t row = row0 + (row_pack == 1 ? tile_row : tile_row / row_pack);
    // Clamped into int range once per row, so the per-element compares are 32-bit: key_begin is in [0, 2^62) and
    // key_end <= seqlen_k <= 2^30, but either may lie far outside when a window is huge.
    const std::int64_t begin64 = rule.key_begin(row);
    const std::int64_t end64 = rule.key_end(row);
    const int key_begin = begin64 > INT_MAX ? INT_MAX : static_cast<int>(begin64);
    const int key_end = end64 < -1 ? -1 : static_cast<int>(end64);
    CUTE_UNROLL
    for (int ni = 0; ni < size<1>(rS); ++ni) {
      const int col = col0 + get<1>(rC(mi, ni));
      if (col < key_begin || col >= key_end) rS(mi, ni) = -INFINITY;
    }
  }
}

}  // namespace ioattn::detail::sm80
