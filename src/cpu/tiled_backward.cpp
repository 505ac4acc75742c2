// ioattn: the backward of the "tiled" CPU backend. Scores are recomputed tile by tile from the forward's LSE
// (P = exp(s - lse)), after a pre-pass that stores D = rowsum(dO * O) for every query row (one float per row and
// head: the only workspace that grows with seqlen in the two-pass schedule).
//
// Two schedules, both deterministic:
//   fused (dense problems, >= 4 key tiles per thread, per-thread dQ partials within 16 MiB): one pass over key
//     tiles. A key tile's dK and dV are summed over its group's heads and query tiles by one thread; its share of
//     dQ, dS K, goes into that thread's fp32 partial; the partials are summed in thread order at the end of each
//     (sequence, kv head). 5 tile products per (query tile, key tile). Bitwise reproducible for a given thread
//     count (key tiles are dealt round-robin), not across thread counts.
//   two passes (everything else, e.g. seqlen 32768 at head dim 128): pass 1, parallel over (query tile, head),
//     dQ = sum over key tiles of dS K; pass 2, parallel over (key tile, kv head), dK and dV as above. 7 tile
//     products (S and dP are computed twice) but no partials: a workspace of a few tiles per thread, and every
//     output element is accumulated by one work item in a fixed order, so the result is bitwise identical for any
//     thread count.
// Either way the result does not depend on `deterministic`; measured costs are in docs/PERF.md.
#include <omp.h>

#include <cmath>
#include <string>

#include "cpu/tiled_common.hpp"

namespace ioattn::cpu::tiled {
namespace {

// Tiles of the backward: the union of what pass 1 and pass 2 use. Carved from an arena (null base: measure).
struct BackwardTiles {
  float* q;     // [br][dq_pad]
  float* dout;  // [br][dv_pad]
  float* kt;    // [dim_qk][bc]   K tile transposed (for S)
  float* k;     // [bc][dq_pad]   K tile (pass 1, for dQ)
  float* vt;    // [dim_v][bc]    V tile transposed (for dP)
  float* s;     // [br][bc]       logits, then P, then dS
  float* dp;    // [br][bc]
  float* cap;   // [br][bc]       softcap derivative (only touched with softcap)
  float* pt;    // [bc][br]       P^T (pass 2)
  float* dst;   // [bc][br]       dS^T (pass 2)
  float* acc_a; // [br][dq_pad] dQ (pass 1) or [bc][dq_pad] dK (pass 2)
  float* acc_b; // [bc][dv_pad]   dV (pass 2)
  float* lse;   // [br]
  float* d;     // [br]
  float* row;   // [max(dq_pad, dv_pad)]

  BackwardTiles(Arena& a, const detail::Problem& p, const TileShape& t)
      : q(a.floats(t.br * t.dq_pad)),
        dout(a.floats(t.br * t.dv_pad)),
        kt(a.floats(p.dim_qk * t.bc)),
        k(a.floats(t.bc * t.dq_pad)),
        vt(a.floats(p.dim_v * t.bc)),
        s(a.floats(t.br * t.bc)),
        dp(a.floats(t.br * t.bc)),
        cap(a.floats(t.br * t.bc)),
        pt(a.floats(t.bc * t.br)),
        dst(a.floats(t.bc * t.br)),
        acc_a(a.floats(std::max(t.br, t.bc) * t.dq_pad)),
        acc_b(a.floats(t.bc * t.dv_pad)),
        lse(a.floats(t.br)),
        d(a.floats(t.br)),
        row(a.floats(std::max(t.dq_pad, t.dv_pad))) {}
};

std::size_t backward_thread_bytes(const detail::Problem& p, const TileShape& t) {
  Arena measure(nullptr);
  BackwardTiles tiles(measure, p, t);
  return measure.used();
}

// Query rows over the whole batch: D is stored per (head, row).
std::int64_t query_rows(const detail::Problem& p) { return p.is_varlen() ? p.total_q : p.batch * p.seqlen_q; }
std::int64_t row_index(const detail::Problem& p, std::int64_t b, std::int64_t seq_row) {
  return (p.is_varlen() ? 0 : b * p.seqlen_q) + seq_row;
}

// The fused single pass keeps, per thread, an fp32 dQ partial of one (sequence, kv head): group * seqlen_q rows. It
// is used while all threads' partials together stay within this budget; longer sequences take the two passes, whose
// workspace does not grow with seqlen beyond D (so that seqlen 32768 runs in a few MiB, tests/tiled).
inline constexpr std::int64_t kFusedPartialBudget = 16 << 20;

struct BackwardLayout {
  TileShape t;
  int threads;
  bool fused;                  // single pass with dQ partials, else two passes
  std::size_t prefix_bytes;    // each of the two varlen prefix arrays (queries, keys)
  std::size_t d_bytes;
  std::size_t tile_bytes;      // per thread: the tiles
  std::size_t partial_floats;  // per thread: the dQ partial (fused only)
  std::size_t thread_bytes;

  explicit BackwardLayout(const detail::Problem& p)
      : t(TileShape::for_problem(p, /*backward=*/true)),
        threads(thread_count(p)),
        fused(use_fused(p, t, threads)),
        prefix_bytes(TileGrid::prefix_bytes(p)),
        d_bytes((static_cast<std::size_t>(query_rows(p) * p.heads_q) * sizeof(float) + 63) / 64 * 64),
        tile_bytes(backward_thread_bytes(p, t)),
        partial_floats(fused ? static_cast<std::size_t>(p.group_size() * p.seqlen_q * t.dq_pad) : 0),
        thread_bytes(tile_bytes + (partial_floats * sizeof(float) + 63) / 64 * 64) {}
  std::size_t total() const { return 64 + 2 * prefix_bytes + d_bytes + threads * thread_bytes; }

  // Dense only (a varlen batch of short sequences would run one small parallel job per sequence), with enough key
  // tiles per thread to share out, and partials within budget.
  static bool use_fused(const detail::Problem& p, const TileShape& t, int threads) {
    if (p.is_varlen()) return false;
    if (p.seqlen_k < 4 * threads * t.bc) return false;
    return threads * p.group_size() * p.seqlen_q * t.dq_pad * 4 <= kFusedPartialBudget;
  }
};

struct BackwardContext {
  const detail::BackwardProblem* p;
  TileShape t;
  TileGrid q_grid;
  TileGrid k_grid;
  float* d_all;  // [heads_q][query_rows]
  std::size_t thread_bytes;
  std::size_t tile_bytes;  // fused: the thread's dQ partial starts this far into its slice
  std::int64_t job_b = 0;      // fused: the (sequence, kv head) being worked on
  std::int64_t job_h_kv = 0;
};

// P = exp(s - lse) row by row (a row with lse = -inf saw nothing: core::exp_offset keeps it at 0, not NaN), then
// dP = dO V^T and dS = P * (dP - D) * d(cap)/d(s), left in tiles.s. Shared by both passes.
template <int VW>
IOATTN_TILED_INLINE void recompute_ds(const BackwardContext& ctx, const BackwardTiles& x, std::int64_t rows,
                                      std::int64_t q0, std::int64_t k0, std::int64_t kn, core::TileKind kind,
                                      const ScoreMods& mods, const NextRows& next) {
  using V = Simd<VW>;
  const detail::BackwardProblem& p = *ctx.p;
  const TileShape& t = ctx.t;
  const std::int64_t n_pad = pad_columns(kn);
  const bool capped = p.softcap > 0.0f;
  gemm_nn<VW>(rows, n_pad, p.dim_qk, x.q, t.dq_pad, x.kt, t.bc, x.s, t.bc, false);
  scores_to_logits<VW>(x.s, t.bc, rows, q0, k0, kn, n_pad, kind, mods, capped ? x.cap : nullptr);
  gemm_nn<VW>(rows, n_pad, p.dim_v, x.dout, t.dv_pad, x.vt, t.bc, x.dp, t.bc, false);
  for (std::int64_t r = 0; r < rows; ++r) {
    next.fetch(r);
    float* s = x.s + r * t.bc;
    const float* dp = x.dp + r * t.bc;
    const typename V::vf offset = V::splat(core::exp_offset(x.lse[r]));
    const typename V::vf d = V::splat(x.d[r]);
    for (std::int64_t c = 0; c < n_pad; c += VW) {
      const typename V::vf prob = V::exp(V::load(s + c) - offset);
      V::store(s + c, prob);  // P, kept for dV by pass 2 before it is overwritten below
      typename V::vf ds = prob * (V::load(dp + c) - d);
      if (capped) ds *= V::load(x.cap + r * t.bc + c);
      V::store(x.cap + r * t.bc + c, ds);  // dS goes to cap's storage; P stays in s
    }
  }
}

// The query side of a tile: q (times the softmax scale, see scores_to_logits), dO, lse and D.
template <int VW, DType D>
IOATTN_TILED_INLINE void load_query_side(const BackwardContext& ctx, const BackwardTiles& x, std::int64_t b,
                                         const core::SeqSpan& span, std::int64_t q0, std::int64_t rows,
                                         std::int64_t h) {
  const detail::BackwardProblem& p = *ctx.p;
  load_rows<D>(p.q, b, span.q_offset + q0, h, rows, p.dim_qk, x.q, ctx.t.dq_pad);
  scale_rows<VW>(x.q, rows, ctx.t.dq_pad, p.scale);
  load_rows<D>(p.dout, b, span.q_offset + q0, h, rows, p.dim_v, x.dout, ctx.t.dv_pad);
  const float* lse = static_cast<const float*>(p.lse.ptr);
  const float* d_head = ctx.d_all + h * query_rows(p);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t row = span.q_offset + q0 + r;
    x.lse[r] = lse[p.lse.offset(b, row, h)];
    x.d[r] = d_head[row_index(p, b, row)];
  }
}

// D = rowsum(dO * O) for one query tile of one head. Summed in fp32 in the same order and with the same
// contraction as the dP = dO V^T tile product (a sequential fused multiply-add over the head dim, in a function of
// the same ISA), so that where P is one-hot (O equals a row of V) dP - D cancels exactly and dS is exactly 0.
template <int VW, DType D>
IOATTN_TILED_INLINE void d_item(const BackwardContext& ctx, std::int64_t item, char* thread_ws) {
  const detail::BackwardProblem& p = *ctx.p;
  const auto [b, h, h_kv, span, q0, rows] = query_tile(ctx.q_grid, p, item, ctx.t.br);
  Arena arena(thread_ws);
  const BackwardTiles x(arena, p, ctx.t);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t row = span.q_offset + q0 + r;
    load_row<D>(p.out.ptr, p.out.offset(b, row, h), p.dim_v, x.row);
    load_row<D>(p.dout.ptr, p.dout.offset(b, row, h), p.dim_v, x.dout);
    // The micro-kernel's update acc += a * b is contracted to one FMA exactly in the AVX2 variant (the baseline ISA
    // has none): round the same way here.
    float sum = 0.0f;
    for (std::int64_t c = 0; c < p.dim_v; ++c) {
      if constexpr (VW == 8) {
        sum = std::fma(x.dout[c], x.row[c], sum);
      } else {
        const float product = x.dout[c] * x.row[c];
        sum += product;
      }
    }
    ctx.d_all[h * query_rows(p) + row_index(p, b, row)] = sum;
  }
}

// Pass 1: dQ of one query tile of one head.
template <int VW, DType D>
IOATTN_TILED_INLINE void dq_item(const BackwardContext& ctx, std::int64_t item, char* thread_ws) {
  using V = Simd<VW>;
  const detail::BackwardProblem& p = *ctx.p;
  const TileShape& t = ctx.t;
  const auto [b, h, h_kv, span, q0, rows] = query_tile(ctx.q_grid, p, item, t.br);
  const ScoreMods mods = score_mods(p, b, h, span);
  Arena arena(thread_ws);
  const BackwardTiles x(arena, p, t);

  load_query_side<VW, D>(ctx, x, b, span, q0, rows, h);
  for (std::int64_t e = 0; e < rows * t.dq_pad; ++e) x.acc_a[e] = 0.0f;
  const std::int64_t k_begin = mods.rule.tile_key_begin(q0);
  const std::int64_t k_end = mods.rule.tile_key_end(q0 + rows);
  for (std::int64_t k0 = k_begin; k0 < k_end; k0 += t.bc) {
    const std::int64_t kn = std::min(t.bc, k_end - k0);
    const core::TileKind kind = mods.rule.classify(q0, q0 + rows, k0, k0 + kn);
    if (kind == core::TileKind::skip) continue;
    load_rows_transposed<D>(p.k, b, span.k_offset + k0, h_kv, kn, p.dim_qk, x.kt, t.bc, x.row);
    load_rows<D>(p.k, b, span.k_offset + k0, h_kv, kn, p.dim_qk, x.k, t.dq_pad);
    load_rows_transposed<D>(p.v, b, span.k_offset + k0, h_kv, kn, p.dim_v, x.vt, t.bc, x.row);
    const NextRows next{&p.k, &p.v, p.dim_qk, p.dim_v, b, span.k_offset + k0 + t.bc,
                        std::min(t.bc, k_end - k0 - t.bc), h_kv, sizeof(typename Elem<D>::storage)};
    recompute_ds<VW>(ctx, x, rows, q0, k0, kn, kind, mods, next);
    // acc_a[rows][dq_pad] += dS[rows][kn] . k[kn][dq_pad]
    gemm_nn<VW>(rows, t.dq_pad, kn, x.cap, t.bc, x.k, t.dq_pad, x.acc_a, t.dq_pad, true);
  }
  const typename V::vf scale = V::splat(p.scale);
  for (std::int64_t r = 0; r < rows; ++r) {
    float* g = x.acc_a + r * t.dq_pad;
    for (std::int64_t c = 0; c < t.dq_pad; c += VW) V::store(g + c, V::load(g + c) * scale);
    store_row<D>(p.dq.ptr, p.dq.offset(b, span.q_offset + q0 + r, h), p.dim_qk, g);
  }
}

// The query rows [first, last) of a sequence that see any of keys [k0, k1): both ends of every row's key range
// grow with the row, so each bound is a binary search over MaskRule.
void query_range(const core::MaskRule& rule, std::int64_t q_len, std::int64_t k0, std::int64_t k1,
                 std::int64_t& first, std::int64_t& last) {
  std::int64_t lo = 0;
  std::int64_t hi = q_len;
  while (lo < hi) {  // first row whose key_end passes k0
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (rule.key_end(mid) > k0) hi = mid; else lo = mid + 1;
  }
  first = lo;
  hi = q_len;
  while (lo < hi) {  // first row whose key_begin reaches k1
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (rule.key_begin(mid) >= k1) hi = mid; else lo = mid + 1;
  }
  last = lo;
}

// Pass 2: dK and dV of one key tile of one kv head, summed over the heads of its group. Fused (kFused): also adds
// this tile's share of dQ, dS K, into the thread's partial [group][seqlen_q][dq_pad].
template <int VW, DType D, bool kFused>
IOATTN_TILED_INLINE void dkv_tile(const BackwardContext& ctx, std::int64_t b, std::int64_t h_kv, std::int64_t tile,
                                  char* thread_ws) {
  const detail::BackwardProblem& p = *ctx.p;
  const TileShape& t = ctx.t;
  const core::SeqSpan span = p.span(b);
  const std::int64_t k0 = tile * t.bc;
  const std::int64_t kn = std::min(t.bc, span.k_len - k0);
  Arena arena(thread_ws);
  const BackwardTiles x(arena, p, t);

  load_rows_transposed<D>(p.k, b, span.k_offset + k0, h_kv, kn, p.dim_qk, x.kt, t.bc, x.row);
  load_rows_transposed<D>(p.v, b, span.k_offset + k0, h_kv, kn, p.dim_v, x.vt, t.bc, x.row);
  float* dq_partial = reinterpret_cast<float*>(thread_ws + ctx.tile_bytes);
  if constexpr (kFused) load_rows<D>(p.k, b, span.k_offset + k0, h_kv, kn, p.dim_qk, x.k, t.dq_pad);
  for (std::int64_t e = 0; e < kn * t.dq_pad; ++e) x.acc_a[e] = 0.0f;
  for (std::int64_t e = 0; e < kn * t.dv_pad; ++e) x.acc_b[e] = 0.0f;

  for (std::int64_t g = 0; g < p.group_size(); ++g) {
    const std::int64_t h = h_kv * p.group_size() + g;
    const ScoreMods mods = score_mods(p, b, h, span);
    std::int64_t first = 0;
    std::int64_t last = 0;
    query_range(mods.rule, span.q_len, k0, k0 + kn, first, last);
    for (std::int64_t q0 = first; q0 < last; q0 += t.br) {
      const std::int64_t rows = std::min(t.br, last - q0);
      const core::TileKind kind = mods.rule.classify(q0, q0 + rows, k0, k0 + kn);
      if (kind == core::TileKind::skip) continue;
      load_query_side<VW, D>(ctx, x, b, span, q0, rows, h);
      const NextRows next{&p.q, &p.dout, p.dim_qk, p.dim_v, b, span.q_offset + q0 + t.br,
                          std::min(t.br, last - q0 - t.br), h, sizeof(typename Elem<D>::storage)};
      recompute_ds<VW>(ctx, x, rows, q0, k0, kn, kind, mods, next);
      // acc_b[kn][dv_pad] += P^T[kn][rows] . dout[rows][dv_pad];  acc_a[kn][dq_pad] += dS^T[kn][rows] . q, with
      // q already times the softmax scale: that is dK.
      transpose(rows, kn, x.s, t.bc, x.pt, t.br);
      gemm_nn<VW>(kn, t.dv_pad, rows, x.pt, t.br, x.dout, t.dv_pad, x.acc_b, t.dv_pad, true);
      transpose(rows, kn, x.cap, t.bc, x.dst, t.br);
      gemm_nn<VW>(kn, t.dq_pad, rows, x.dst, t.br, x.q, t.dq_pad, x.acc_a, t.dq_pad, true);
      if constexpr (kFused) {
        // partial[g][q0 + r][dq_pad] += dS[rows][kn] . k[kn][dq_pad]
        float* part = dq_partial + (g * p.seqlen_q + q0) * t.dq_pad;
        gemm_nn<VW>(rows, t.dq_pad, kn, x.cap, t.bc, x.k, t.dq_pad, part, t.dq_pad, true);
      }
    }
  }
  for (std::int64_t r = 0; r < kn; ++r) {
    store_row<D>(p.dk.ptr, p.dk.offset(b, span.k_offset + k0 + r, h_kv), p.dim_qk, x.acc_a + r * t.dq_pad);
    store_row<D>(p.dv.ptr, p.dv.offset(b, span.k_offset + k0 + r, h_kv), p.dim_v, x.acc_b + r * t.dv_pad);
  }
}

template <int VW, DType D>
IOATTN_TILED_INLINE void dkv_item(const BackwardContext& ctx, std::int64_t item, char* thread_ws) {
  const ItemCoords at = key_item(ctx.k_grid, item);
  dkv_tile<VW, D, false>(ctx, at.b, at.h, at.tile, thread_ws);
}

// Fused: key tile `item` of the context's current (sequence, kv head).
template <int VW, DType D>
IOATTN_TILED_INLINE void fused_item(const BackwardContext& ctx, std::int64_t item, char* thread_ws) {
  dkv_tile<VW, D, true>(ctx, ctx.job_b, ctx.job_h_kv, item, thread_ws);
}

// Each kernel compiled twice (see tiled_simd.hpp); flatten pulls the helpers into the chosen ISA.
#define IOATTN_TILED_VARIANTS(name)                                                                          \
  template <DType D>                                                                                         \
  __attribute__((target("avx2,fma"), flatten)) void name##_avx2(const BackwardContext& c, std::int64_t i,   \
                                                                 char* w) {                                  \
    name<8, D>(c, i, w);                                                                                     \
  }                                                                                                          \
  template <DType D>                                                                                         \
  __attribute__((flatten)) void name##_baseline(const BackwardContext& c, std::int64_t i, char* w) {        \
    name<4, D>(c, i, w);                                                                                     \
  }
IOATTN_TILED_VARIANTS(d_item)
IOATTN_TILED_VARIANTS(dq_item)
IOATTN_TILED_VARIANTS(dkv_item)
IOATTN_TILED_VARIANTS(fused_item)
#undef IOATTN_TILED_VARIANTS

using ItemFn = void (*)(const BackwardContext&, std::int64_t, char*);

void run_items(const BackwardContext& ctx, char* thread_base, int threads, std::int64_t items, ItemFn fn) {
  // Reverse order: under a causal mask the last tiles carry the most work; results do not depend on the order.
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (std::int64_t n = 0; n < items; ++n) {
    fn(ctx, items - 1 - n, thread_base + static_cast<std::size_t>(omp_get_thread_num()) * ctx.thread_bytes);
  }
}

// The fused single pass, one (sequence, kv head) job after another. Key tiles go round-robin to the threads (a fixed
// assignment for a fixed thread count), each thread adds into its own dQ partial, and the partials are summed in
// thread order: bitwise reproducible for a given thread count, not across thread counts.
template <DType D>
void run_fused(BackwardContext& ctx, char* thread_base, int threads, ItemFn fn, std::size_t partial_floats) {
  const detail::BackwardProblem& p = *ctx.p;
  const TileShape& t = ctx.t;
  const std::int64_t key_tiles = (p.seqlen_k + t.bc - 1) / t.bc;
  const std::int64_t group = p.group_size();
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h_kv = 0; h_kv < p.heads_kv; ++h_kv) {
      ctx.job_b = b;
      ctx.job_h_kv = h_kv;
#pragma omp parallel num_threads(threads)
      {
        const int tid = omp_get_thread_num();
        const int team = omp_get_num_threads();
        char* ws = thread_base + static_cast<std::size_t>(tid) * ctx.thread_bytes;
        float* own = reinterpret_cast<float*>(ws + ctx.tile_bytes);
        for (std::size_t e = 0; e < partial_floats; ++e) own[e] = 0.0f;
        for (std::int64_t tile = tid; tile < key_tiles; tile += team) fn(ctx, tile, ws);
#pragma omp barrier
        // dq row = scale * (partial_0 + partial_1 + ...), rows shared out statically.
        float* sum = reinterpret_cast<float*>(ws);  // the thread's tiles are free again: one row of scratch
        const std::int64_t rows = group * p.seqlen_q;
        for (std::int64_t row = tid; row < rows; row += team) {
          for (std::int64_t c = 0; c < t.dq_pad; ++c) sum[c] = 0.0f;
          for (int other = 0; other < team; ++other) {
            const float* part = reinterpret_cast<const float*>(thread_base + other * ctx.thread_bytes +
                                                               ctx.tile_bytes) + row * t.dq_pad;
            for (std::int64_t c = 0; c < t.dq_pad; ++c) sum[c] += part[c];
          }
          for (std::int64_t c = 0; c < t.dq_pad; ++c) sum[c] *= p.scale;
          const std::int64_t h = h_kv * group + row / p.seqlen_q;
          store_row<D>(p.dq.ptr, p.dq.offset(b, row % p.seqlen_q, h), p.dim_qk, sum);
        }
#pragma omp barrier
      }
    }
  }
}

// dsinks[h] = -sum over the head's rows of exp(sink - lse) * D: the sink takes part in the softmax but carries no
// value, so its dP is 0 and its dS is -P_sink * D. Summed in fp64, row by row in order, with D recomputed here in
// fp64: the fp32 D of the dS tiles is rounded to cancel against dP (d_item), and one sum over every row of the
// head would add those roundings up.
template <DType D>
void sink_gradients(const BackwardContext& ctx, char* thread_base, int threads) {
  const detail::BackwardProblem& p = *ctx.p;
  const float* lse = static_cast<const float*>(p.lse.ptr);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t h = 0; h < p.heads_q; ++h) {
    float* out_row = reinterpret_cast<float*>(thread_base + omp_get_thread_num() * ctx.thread_bytes);
    float* dout_row = out_row + ctx.t.dv_pad;
    double sum = 0.0;
    for (std::int64_t b = 0; b < p.batch; ++b) {
      const core::SeqSpan span = p.span(b);
      for (std::int64_t i = 0; i < span.q_len; ++i) {
        const std::int64_t row = span.q_offset + i;
        const double l = lse[p.lse.offset(b, row, h)];
        if (std::isinf(l) && l < 0) continue;
        load_row<D>(p.out.ptr, p.out.offset(b, row, h), p.dim_v, out_row);
        load_row<D>(p.dout.ptr, p.dout.offset(b, row, h), p.dim_v, dout_row);
        double d = 0.0;
        for (std::int64_t c = 0; c < p.dim_v; ++c) d += static_cast<double>(out_row[c]) * dout_row[c];
        sum -= std::exp(static_cast<double>(p.sinks[h]) - l) * d;
      }
    }
    p.dsinks[h] = static_cast<float>(sum);
  }
}

}  // namespace

std::size_t backward_workspace_bytes(const detail::BackwardProblem& p) { return BackwardLayout(p).total(); }

void backward(const detail::BackwardProblem& p) {
  const BackwardLayout layout(p);
  Scratch scratch(p.workspace, layout.total());
  char* base = scratch.data();
  auto* q_prefix = reinterpret_cast<std::int64_t*>(base);
  auto* k_prefix = reinterpret_cast<std::int64_t*>(base + layout.prefix_bytes);
  float* d_all = reinterpret_cast<float*>(base + 2 * layout.prefix_bytes);
  char* thread_base = base + 2 * layout.prefix_bytes + layout.d_bytes;

  BackwardContext ctx{&p,
                      layout.t,
                      TileGrid::make(p, layout.t.br, true, q_prefix),
                      TileGrid::make(p, layout.t.bc, false, k_prefix),
                      d_all,
                      layout.thread_bytes,
                      layout.tile_bytes};
  const bool avx2 = cpu_has_avx2_fma();
  const std::int64_t q_items = ctx.q_grid.count * p.heads_q;
  const std::int64_t k_items = ctx.k_grid.count * p.heads_kv;

  visit_dtype(p.dtype, [&](auto d) {
    constexpr DType kD = decltype(d)::value;
    run_items(ctx, thread_base, layout.threads, q_items, avx2 ? &d_item_avx2<kD> : &d_item_baseline<kD>);
    if (p.sinks != nullptr) sink_gradients<kD>(ctx, thread_base, layout.threads);
    if (layout.fused) {
      run_fused<kD>(ctx, thread_base, layout.threads, avx2 ? &fused_item_avx2<kD> : &fused_item_baseline<kD>,
                    layout.partial_floats);
      return;
    }
    run_items(ctx, thread_base, layout.threads, q_items, avx2 ? &dq_item_avx2<kD> : &dq_item_baseline<kD>);
    run_items(ctx, thread_base, layout.threads, k_items, avx2 ? &dkv_item_avx2<kD> : &dkv_item_baseline<kD>);
  });
}

}  // namespace ioattn::cpu::tiled
