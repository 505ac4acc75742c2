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

// Softcap and ALiBi in the backward (the kScoreMod kernel). The logit of raw product s = q.k is
//   c = softcap tanh(scale s / softcap)  (or scale s),   logit = c + core::alibi_bias(slope, key, diag(row)),
// so P = 2^(logit log2(e) - lse2) and, with dS the gradient with respect to scale s (the epilogue's and the
// post-pass's factor scale makes it the gradient of q.k), dS = P (dP - delta) (1 - tanh^2).
//
// Without softcap, ALiBi adds two float operations an element to the plain kernel's P (alibi_probs), which runs while
// dP's product still runs, as the plain kernel's does; dS then is the plain kernel's. With softcap, P and dS come in
// one pass after both products (softcap_probs_and_grads): the derivative is needed next to dP, and holding it from one
// loop to the next would cost a register an element (32 to 64). Its tanh is the forward's (sm80::apply_score_mod),
// 1 - 2 r with r = 1 / (1 + 2^(2 x log2(e))) on the special-function unit, so P here is the P whose row sums the
// forward's LSE holds, and 1 - tanh^2 = 4 r (1 - r) (no cancellation near +-1).
//
// Costs, per element: each thread holds 2 keys (rows of its warpgroup's 64) by kBlockM / 4 queries, so what depends
// on the query (lse2, the visible keys, the ALiBi diagonal) is worked out once a column, and a column's ALiBi
// distance is kept in float (no int-to-float conversion an element). Hidden pairs are looked for only in masked
// tiles; there P = 0 and dS = 0 whatever the products are (a neighbour's rows in a varlen batch may make them Inf or
// NaN). The first version, one pass after both products with all of that per element, ran at half the plain
// kernel's speed (docs/PERF.md, tenth session).
struct ScoreModGrad {
  float scale_log2;  // scale log2(e)
  float softcap;     // > 0: the cap
  float slope_log2;  // the ALiBi slope times log2(e); 0: none

  // P^T into rS (no softcap).
  template <class RegS, class Coords>
  __forceinline__ __device__ void alibi_probs(bool masked, RegS& rS, const Coords& rC, const TileMask& mask,
                                              const float* lse2, int row0, int key0) const {
    if (masked) {
      apply<true, false, true>(rS, rS, rC, mask, lse2, nullptr, row0, key0);
    } else {
      apply<false, false, true>(rS, rS, rC, mask, lse2, nullptr, row0, key0);
    }
  }

  // P^T into rS and dS^T into rdP.
  template <class RegS, class Coords>
  __forceinline__ __device__ void softcap_probs_and_grads(bool masked, RegS& rS, RegS& rdP, const Coords& rC,
                                                          const TileMask& mask, const float* lse2,
                                                          const float* delta, int row0, int key0) const {
    const bool alibi = slope_log2 != 0.0f;
    if (masked) {
      if (alibi) apply<true, true, true>(rS, rdP, rC, mask, lse2, delta, row0, key0);
      else apply<true, true, false>(rS, rdP, rC, mask, lse2, delta, row0, key0);
    } else {
      if (alibi) apply<false, true, true>(rS, rdP, rC, mask, lse2, delta, row0, key0);
      else apply<false, true, false>(rS, rdP, rC, mask, lse2, delta, row0, key0);
    }
  }

 private:
  template <bool kMasked, bool kSoftcap, bool kAlibi, class RegS, class Coords>
  __forceinline__ __device__ void apply(RegS& rS, RegS& rdP, const Coords& rC, const TileMask& mask,
                                        const float* lse2, const float* delta, int row0, int key0) const {
    constexpr int kKeys = decltype(size<0>(rS))::value;
    constexpr float kLog2e = 1.4426950408889634f;
    // softcap: 2^(logit log2(e)) = 2^(cap log2(e) (1 - 2 r)), r from 2^(s pre).
    const float pre = 2.0f * scale_log2 / softcap;
    const float cap_log2 = softcap * kLog2e;
    int key_in_tile[kKeys];
    float key_f[kKeys];
    CUTE_UNROLL
    for (int mi = 0; mi < kKeys; ++mi) {
      key_in_tile[mi] = get<0>(rC(mi, 0));
      key_f[mi] = float(key_in_tile[mi]);
    }
    // The ALiBi diagonal of column ni relative to key0, in float: that of column 0 plus the columns' distance (a
    // constant of the fragment's layout once unrolled).
    const int col0 = get<1>(rC(0, 0));
    const float diag0_f = float(row0 + col0 + mask.diag_offset - key0);
    CUTE_UNROLL
    for (int ni = 0; ni < size<1>(rS); ++ni) {
      const int col = get<1>(rC(0, ni));
      int lo = 0, hi = 0;
      if constexpr (kMasked) {
        mask.visible_keys(row0 + col, lo, hi);
        lo -= key0, hi -= key0;
      }
      const float diag_f = diag0_f + float(col - col0);
      const float neg_lse2 = -lse2[col];
      const float row_delta = kSoftcap ? delta[col] : 0.0f;
      CUTE_UNROLL
      for (int mi = 0; mi < kKeys; ++mi) {
        float x, r = 0.0f;
        if constexpr (kSoftcap) {
          r = sm80::fast_rcp(1.0f + sm80::fast_exp2(rS(mi, ni) * pre));
          x = fmaf(r, -2.0f * cap_log2, cap_log2 + neg_lse2);
        } else {
          x = fmaf(rS(mi, ni), scale_log2, neg_lse2);
        }
        if constexpr (kAlibi) x = fmaf(-slope_log2, fabsf(key_f[mi] - diag_f), x);
        if constexpr (kMasked) {
          if (key_in_tile[mi] < lo || key_in_tile[mi] > hi) x = -INFINITY;
        }
        const float prob = sm80::fast_exp2(x);
        rS(mi, ni) = prob;
        if constexpr (kSoftcap) {
          const float grad = 4.0f * fmaf(-r, r, r);  // 1 - tanh^2
          const float ds = prob * (rdP(mi, ni) - row_delta) * grad;
          rdP(mi, ni) = kMasked && prob == 0.0f ? 0.0f : ds;
        }
      }
    }
  }
};

}  // namespace ioattn::detail::sm90
