// ioattn sm90 backward: how a tile's raw products become probabilities and score gradients. The mask of a tile in
// 32-bit arithmetic (TileMask), and the score-mod kernels' pass (softcap, ALiBi) over S^T and dP^T together.
// Both work on the rowcol view of a consumer warpgroup's (keys x queries) accumulators: keys down, queries across.
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>

#include <cute/tensor.hpp>

#include "ioattn/core/mask.hpp"
#include "ioattn/core/score_mod.hpp"
#include "cuda/sm80/common/tile_ops.cuh"

namespace ioattn::detail::sm90 {

using namespace cute;

// Which (query, key) pairs of a tile are visible, in 32-bit arithmetic: the pair is visible when
// -window_left <= key - row - diag_offset <= window_right (core::MaskRule), key < k_len and row < q_len.
// backward_unsupported keeps seqlen_q + seqlen_k below 2^30, so the distance fits, and a window that wide bounds
// nothing.
struct TileMask {
  int q_len, k_len, diag_offset, window_left, window_right;
  bool has_left, has_right;

  __forceinline__ __device__ static TileMask make(const core::MaskRule& rule, int q_len, int k_len) {
    constexpr std::int64_t kWide = std::int64_t(1) << 30;
    TileMask m;
    m.q_len = q_len, m.k_len = k_len;
    m.diag_offset = int(rule.diag_offset);
    m.has_left = rule.window_left >= 0 && rule.window_left < kWide;
    m.has_right = rule.window_right >= 0 && rule.window_right < kWide;
    m.window_left = m.has_left ? int(rule.window_left) : 0;
    m.window_right = m.has_right ? int(rule.window_right) : 0;
    return m;
  }
  // The keys [lo, hi] query row `row` sees (none when hi < lo).
  __forceinline__ __device__ void visible_keys(int row, int& lo, int& hi) const {
    const int base = row + diag_offset;
    lo = has_left ? base - window_left : 0;
    hi = has_right ? min(base + window_right, k_len - 1) : k_len - 1;
    if (row >= q_len) hi = -1;
  }
  // Sets the hidden scores of a tile to -inf (rowcol view rS: keys down, queries across; rC the same view of its
  // (key, query) coordinates in the tile). A query row sees one interval of keys, [row + diag_offset - window_left,
  // row + diag_offset + window_right] cut to k_len, so each of the thread's query columns gets its bounds once and
  // each element costs two compares: the rule per element compiled to about 1000 branchy instructions a tile (by
  // ncu, 17% of the kernel's warp samples at head dim 64, 512 causal). |row + diag_offset| < 2^30 and a bounding
  // window is narrower than 2^30, so the bounds fit in 32 bits.
  template <class RegS, class Coords>
  __forceinline__ __device__ void hide(RegS& rS, const Coords& rC, int row0, int key0) const {
    CUTE_UNROLL
    for (int ni = 0; ni < size<1>(rS); ++ni) {
      int lo, hi;
      visible_keys(row0 + get<1>(rC(0, ni)), lo, hi);
      CUTE_UNROLL
      for (int mi = 0; mi < size<0>(rS); ++mi) {
        const int key = key0 + get<0>(rC(mi, 0));
        if (key < lo || key > hi) rS(mi, ni) = -INFINITY;
      }
    }
  }
};

// Softcap and ALiBi in the backward (the kScoreMod kernels). The logit of raw product s = q.k is
//   c = softcap tanh(scale s / softcap)  (or scale s),   logit = c + core::alibi_bias(slope, key, diag(row)),
// so P = 2^(logit log2(e) - lse2) and, with dS the gradient with respect to scale s (the epilogue's and the
// post-pass's factor scale makes it the gradient of q.k), dS = P (dP - delta) (1 - tanh^2). Where the plain kernel
// computes P while dP's product still runs, this pass takes both accumulators at once: the softcap's derivative is
// needed next to dP, and holding it from one loop to the next would cost a register per element (32 to 64). tanh
// is the forward's (sm80::apply_score_mod): 1 - 2 / (1 + 2^(2x log2(e))) on the special-function unit, so P here is
// the P whose row sums the forward's LSE holds. A hidden pair gets P = 0 and dS = 0 whatever its products are (a
// neighbour's rows in a varlen batch may make them Inf or NaN).
struct ScoreModGrad {
  float scale, softcap, alibi_slope;

  template <class RegS, class Coords>
  __forceinline__ __device__ void apply(RegS& rS, RegS& rdP, const Coords& rC, const TileMask& mask,
                                        const float* lse2, const float* delta, int row0, int key0) const {
    constexpr float kLog2e = 1.4426950408889634f;
    const float tanh_pre = 2.0f * kLog2e * scale / softcap;  // used only when softcap > 0
    CUTE_UNROLL
    for (int ni = 0; ni < size<1>(rS); ++ni) {
      const int col = get<1>(rC(0, ni));
      const int row = row0 + col;
      int lo, hi;
      mask.visible_keys(row, lo, hi);
      const int diag = row + mask.diag_offset;  // core::MaskRule::diag; fits: |row + diag_offset| < 2^30
      const float row_lse2 = lse2[col];
      const float row_delta = delta[col];
      CUTE_UNROLL
      for (int mi = 0; mi < size<0>(rS); ++mi) {
        const int key = key0 + get<0>(rC(mi, 0));
        float logit, cap_grad = 1.0f;
        if (softcap > 0.0f) {
          const float t = 1.0f - 2.0f * sm80::fast_rcp(1.0f + sm80::fast_exp2(rS(mi, ni) * tanh_pre));
          logit = softcap * t;
          cap_grad = 1.0f - t * t;
        } else {
          logit = rS(mi, ni) * scale;
        }
        if (alibi_slope != 0.0f) logit += core::alibi_bias(alibi_slope, key, diag);
        const bool seen = key >= lo && key <= hi;
        const float prob = seen ? sm80::fast_exp2(fmaf(logit, kLog2e, -row_lse2)) : 0.0f;
        rS(mi, ni) = prob;
        rdP(mi, ni) = seen ? prob * (rdP(mi, ni) - row_delta) * cap_grad : 0.0f;
      }
    }
  }
};

}  // namespace ioattn::detail::sm90
