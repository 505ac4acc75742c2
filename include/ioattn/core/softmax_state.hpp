// ioattn core: the online-softmax state {o, m, l} of one query row, and the merge of two partial results.
//
// Every backend (CPU tiles, CUDA tiles, split-KV, ring attention) goes through these functions, so the one hard case,
// a row that has seen no visible key yet (m = -inf), is guarded here and nowhere else:
//   exp(-inf - -inf) would be NaN, so the running max used as the exponent's offset is replaced by 0 while it is -inf;
//   the scores are then -inf too and exp(-inf - 0) = 0, which is right.
//   1 / l with l = 0 would be inf, so a row with l = 0 finalizes to out = 0, lse = -inf.
// Exponentials here are natural (base e); a kernel that works in base 2 converts at its edges.
#pragma once

#include <cmath>
#include <limits>

#include "ioattn/core/config.hpp"

namespace ioattn::core {

template <class T>
IOATTN_HD T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// The offset to subtract from scores before exp(): the running max, or 0 while the row has seen nothing.
template <class T>
IOATTN_HD T exp_offset(T row_max) {
  return row_max == neg_inf<T>() ? T(0) : row_max;
}

// Running statistics of one row: m = max score seen, l = sum of exp(score - m).
// The unnormalized output accumulator o (sum of exp(score - m) * v) lives with the caller, since its width is the
// head dim; every update returns the factor by which the caller must rescale o.
template <class T>
struct SoftmaxState {
  T m = neg_inf<T>();
  T l = T(0);

  // Start folding in a tile whose largest score is `tile_max`. Returns the factor for o and l; afterwards add
  // exp(s - offset()) of each score to l (and times v to o).
  IOATTN_HD T begin_tile(T tile_max) {
    const T m_new = tile_max > m ? tile_max : m;
    const T alpha = std::exp(m - exp_offset(m_new));  // m = -inf gives 0: nothing to keep
    m = m_new;
    l *= alpha;
    return alpha;
  }
  IOATTN_HD T offset() const { return exp_offset(m); }

  // Fold a sink logit (one per head, no value vector) into the denominator. Returns the factor for o.
  IOATTN_HD T add_sink(T sink) {
    const T alpha = begin_tile(sink);
    l += std::exp(sink - offset());
    return alpha;
  }

  // Fold in a partial result over keys not yet seen (a split-KV chunk), given by its lse and its output o_part
  // normalized within the chunk: it enters like one key with logit lse_part and value o_part. Returns the factor for
  // o; then add weight * o_part to o. A chunk that saw nothing (lse_part = -inf) gets weight 0.
  IOATTN_HD T add_partial(T lse_part, T& weight) {
    const T alpha = begin_tile(lse_part);
    weight = std::exp(lse_part - offset());
    l += weight;
    return alpha;
  }

  // Natural-log sum of exp over everything folded in; -inf for a row that saw nothing.
  IOATTN_HD T lse() const { return l > T(0) ? m + std::log(l) : neg_inf<T>(); }
  // The factor that turns the accumulator o into the output; 0 for a row that saw nothing (out = 0, not NaN).
  IOATTN_HD T inv_sum() const { return l > T(0) ? T(1) / l : T(0); }
};

// Two partial results of the same row over disjoint key sets, each normalized (o_a = softmax-weighted mean over its
// keys) with its log-sum-exp: the weights that merge them into the result over the union.
//   lse = log(exp(lse_a) + exp(lse_b)),  o = w_a * o_a + w_b * o_b.
// A side that saw nothing (lse = -inf) gets weight 0; both empty gives lse = -inf and weights 0.
template <class T>
struct MergeWeights {
  T lse;
  T w_a;
  T w_b;
};

template <class T>
IOATTN_HD MergeWeights<T> merge_weights(T lse_a, T lse_b) {
  const T m = lse_a > lse_b ? lse_a : lse_b;
  if (m == neg_inf<T>()) return {neg_inf<T>(), T(0), T(0)};
  const T e_a = std::exp(lse_a - m);
  const T e_b = std::exp(lse_b - m);
  const T sum = e_a + e_b;
  return {m + std::log(sum), e_a / sum, e_b / sum};
}

}  // namespace ioattn::core
