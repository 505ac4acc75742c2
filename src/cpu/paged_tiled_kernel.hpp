// ioattn internal: the work item of the tiled CPU paged backend: one row tile of one (sequence, kv head) against
// one split-KV chunk of that sequence's paged keys (FlashAttention's online softmax over key tiles, fp32 arithmetic,
// fp64 row statistics as in the dense tiled forward).
//
// Rows: the query heads of a GQA group and the new tokens of the sequence are processed together, row
// rr = i * group + g (token i, query head h_kv * group + g), so every K/V row of the chunk is read once per group and
// row tile. Token-major order keeps the tile's tokens a contiguous range, which MaskRule's tile classification needs.
//
// Reproducibility: a row's result depends only on its sequence (its tokens, its length, its pages' contents) and the
// plan's split_tokens: row tiles are cut from the sequence's own rows, key tiles start at the chunk's first key and
// step by bc, and every sum runs in a fixed order. Nothing depends on the batch around it or on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "api/paged_problem.hpp"
#include "cpu/paged_cache.hpp"
#include "cpu/tiled_common.hpp"

namespace ioattn::cpu::paged {

using tiled::Simd;
using tiled::TileShape;

// Below this many rows in a tile, q.k is taken as dot products over key rows: transposing the K tile for the GEMM
// micro-kernel is a scalar scatter whose cost does not shrink with the row count, while the product does (decode
// tiles have 1 to 8 rows). From it on, the K tile is transposed and the product goes through the GEMM micro-kernel.
inline constexpr std::int64_t kDotPathMaxRows = 16;

// One sequence of the batch as the kernel sees it: its query span (k_len from seqlens_k, keys start at 0 in its
// pages), its mask rule, and its number of split-KV chunks.
struct SeqView {
  core::SeqSpan span;
  core::MaskRule rule;
  std::int64_t chunks = 1;
  std::int64_t row0 = 0;  // the partial results' row index of token 0 (rows() numbering of paged_problem.hpp)
};

inline SeqView seq_view(const detail::PagedProblem& p, std::int64_t b) {
  SeqView s;
  s.span = p.span(b);
  s.span.k_offset = 0;
  s.span.k_len = paged_seqlen(p, b);
  s.rule = p.mask_rule(s.span);
  s.chunks = detail::split_count(s.span.k_len, p.split_tokens);
  s.row0 = (p.is_varlen() ? 0 : b * p.seqlen_q) + s.span.q_offset;
  return s;
}

// Where the split-KV partial results go: [max_splits, rows, heads_q, dim_v] and [max_splits, rows, heads_q], fp32.
struct Partials {
  float* out = nullptr;
  float* lse = nullptr;
  std::int64_t rows = 0;  // PagedProblem::rows()
};

// The per-thread tiles of one item, carved from an arena (a null base only measures them).
struct ChunkTiles {
  float* q;    // [br][dq_pad]   scaled query rows
  float* k;    // [bc][dq_pad] (dot path) or [dq_pad][bc] (GEMM path): the K tile
  float* v;    // [bc][dv_pad]
  float* s;    // [br][bc]       logits, then P
  float* o;    // [br][dv_pad]   unnormalized output
  float* row;  // [max(dq_pad, dv_pad)]
  core::SoftmaxState<double>* state;  // [br]
  double* acc;                        // [dv_pad] the combine's accumulator (paged_tiled.cpp)

  ChunkTiles(tiled::Arena& a, const TileShape& t)
      : q(a.floats(t.br * t.dq_pad)),
        k(a.floats(t.bc * t.dq_pad)),
        v(a.floats(t.bc * t.dv_pad)),
        s(a.floats(t.br * t.bc)),
        o(a.floats(t.br * t.dv_pad)),
        row(a.floats(std::max(t.dq_pad, t.dv_pad))),
        state(static_cast<core::SoftmaxState<double>*>(a.take(t.br * sizeof(core::SoftmaxState<double>)))),
        acc(static_cast<double*>(a.take(t.dv_pad * sizeof(double)))) {}
};

inline std::size_t chunk_tiles_bytes(const TileShape& t) {
  tiled::Arena measure(nullptr);
  ChunkTiles tiles(measure, t);
  return measure.used();
}

struct Item {
  std::int64_t b, h_kv, chunk, r0, rows;  // rows r0 .. r0 + rows - 1 of the group x tokens rows
};

// VW 16-bit values zero-extended to 32-bit lanes (one vpmovzxwd).
template <int VW>
IOATTN_TILED_INLINE typename Simd<VW>::vi widen_u16(const std::uint16_t* src) {
  if constexpr (VW == 8) {
    typedef std::uint16_t u16x8 __attribute__((vector_size(16)));
    u16x8 raw;
    std::memcpy(&raw, src, sizeof raw);
    return __builtin_convertvector(raw, typename Simd<VW>::vi);
  } else {
    typedef std::uint16_t u16x4 __attribute__((vector_size(8)));
    u16x4 raw;
    std::memcpy(&raw, src, sizeof raw);
    return __builtin_convertvector(raw, typename Simd<VW>::vi);
  }
}

// dst[0..n) = elements [offset, offset + n) of base widened to fp32: the same values as load_row (every widening is
// exact), fp16 VW lanes at a time by a branch-free bit trick. The scalar fp16 conversion branches on the exponent,
// which keeps the compiler from vectorizing it, and fp16 decode measured at a fifth of bf16's bandwidth with it.
//   fp16 bits e:m shifted into fp32 position read as a float of exponent e - 127 (a denormal when e = 0), and
//   multiplying by 2^112 rebiases it exactly to e - 15 (or scales a subnormal m * 2^-136 to m * 2^-24); e = 31
//   (inf, NaN) takes the all-ones exponent with m kept, as the scalar conversion does.
template <int VW, DType D>
IOATTN_TILED_INLINE void widen_row(const void* base, std::int64_t offset, std::int64_t n, float* dst) {
  if constexpr (D != DType::f16) {
    load_row<D>(base, offset, n, dst);
  } else {
    using vi = typename Simd<VW>::vi;
    using vf = typename Simd<VW>::vf;
    const auto* src = static_cast<const std::uint16_t*>(base) + offset;
    std::int64_t c = 0;
    for (; c + VW <= n; c += VW) {
      const vi h = widen_u16<VW>(src + c);
      const vi em = h & 0x7fff;
      vi bits = em << 13;
      vf f;
      std::memcpy(&f, &bits, sizeof f);
      f = f * 0x1p112f;
      std::memcpy(&bits, &f, sizeof f);
      bits = em >= 0x7c00 ? ((em << 13) | 0x7f800000) : bits;
      bits |= (h & 0x8000) << 16;
      std::memcpy(dst + c, &bits, sizeof bits);
    }
    for (; c < n; ++c) dst[c] = core::fp16_to_float(src[c]);
  }
}

// Where keys k0 .. k0 + kn - 1 of sequence b live: page id and slot within the page of each, found by walking the
// block table page by page (one division per tile instead of two per key and operand, which cost as much as the
// arithmetic on a key in decode).
struct KeyRows {
  static constexpr std::int64_t kMax = 128;  // TileShape's largest bc
  std::int64_t page[kMax];
  std::int64_t slot[kMax];
  std::int64_t count = 0;

  IOATTN_TILED_INLINE void locate(const detail::PagedProblem& p, std::int64_t b, std::int64_t k0, std::int64_t kn) {
    const std::int32_t* table = p.block_table + b * p.block_table_stride;
    std::int64_t entry = k0 / p.page_size, in_page = k0 % p.page_size;
    for (std::int64_t r = 0; r < kn; ++r) {
      page[r] = table[entry];
      slot[r] = in_page;
      if (++in_page == p.page_size) {
        in_page = 0;
        ++entry;
      }
    }
    count = kn;
  }
  IOATTN_TILED_INLINE std::int64_t offset(const detail::Operand& op, std::int64_t r, std::int64_t h) const {
    return page[r] * op.batch_stride + slot[r] * op.seq_stride + h * op.head_stride;
  }
};
static_assert(KeyRows::kMax >= 128, "KeyRows must hold TileShape's largest key tile");

// The located keys of operand `cache`, kv head h_kv, widened to fp32 rows of length ld (zero padding past dim);
// rows count .. rows_pad - 1 zeroed, so that dot products against them are 0, not garbage.
template <int VW, DType D>
IOATTN_TILED_INLINE void load_key_rows(const KeyRows& keys, const detail::Operand& cache, std::int64_t h_kv,
                                       std::int64_t dim, float* dst, std::int64_t ld, std::int64_t rows_pad) {
  for (std::int64_t r = 0; r < keys.count; ++r) {
    float* d = dst + r * ld;
    widen_row<VW, D>(cache.ptr, keys.offset(cache, r, h_kv), dim, d);
    for (std::int64_t c = dim; c < ld; ++c) d[c] = 0.0f;
  }
  for (std::int64_t e = keys.count * ld; e < rows_pad * ld; ++e) dst[e] = 0.0f;
}

// out[0..3] = the lane sums of a0..a3, reduced together by halving (three vector adds for all four, where four
// scalar lane-by-lane sums cost a dozen dependent adds each). The order is fixed for a given VW.
template <int VW>
IOATTN_TILED_INLINE void sum4(typename Simd<VW>::vf a0, typename Simd<VW>::vf a1, typename Simd<VW>::vf a2,
                              typename Simd<VW>::vf a3, float* out) {
  using vf = typename Simd<VW>::vf;
  if constexpr (VW == 8) {
    // [a0 half sums | a1 half sums], then quarters of all four, then the sums in lanes 0..3.
    const vf p = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 8, 9, 10, 11) +
                 __builtin_shufflevector(a0, a1, 4, 5, 6, 7, 12, 13, 14, 15);
    const vf q = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 8, 9, 10, 11) +
                 __builtin_shufflevector(a2, a3, 4, 5, 6, 7, 12, 13, 14, 15);
    const vf h = __builtin_shufflevector(p, q, 0, 1, 4, 5, 8, 9, 12, 13) +
                 __builtin_shufflevector(p, q, 2, 3, 6, 7, 10, 11, 14, 15);
    const vf r = __builtin_shufflevector(h, h, 0, 2, 4, 6, 0, 2, 4, 6) +
                 __builtin_shufflevector(h, h, 1, 3, 5, 7, 1, 3, 5, 7);
    std::memcpy(out, &r, 4 * sizeof(float));
  } else {
    const vf p = __builtin_shufflevector(a0, a1, 0, 1, 4, 5) + __builtin_shufflevector(a0, a1, 2, 3, 6, 7);
    const vf q = __builtin_shufflevector(a2, a3, 0, 1, 4, 5) + __builtin_shufflevector(a2, a3, 2, 3, 6, 7);
    const vf r = __builtin_shufflevector(p, q, 0, 2, 4, 6) + __builtin_shufflevector(p, q, 1, 3, 5, 7);
    std::memcpy(out, &r, 4 * sizeof(float));
  }
}

// s[r * lds + c] = q_r . k_c for r < rows, c < n_pad (a multiple of 4), four keys at a time so each q vector is
// loaded once per four products, and all rows against those four keys before the next four, so their 4 rows of K
// stay in L1 (the whole K tile does not: it is as large as L1). Each product sums lane-wise over the padded head
// dim, then across lanes (sum4).
template <int VW>
IOATTN_TILED_INLINE void scores_dot(std::int64_t rows, std::int64_t n_pad, std::int64_t d_pad, const float* q,
                                    const float* k, float* s, std::int64_t lds) {
  using V = Simd<VW>;
  using vf = typename V::vf;
  for (std::int64_t c = 0; c < n_pad; c += 4) {
    const float* k0 = k + c * d_pad;
    std::int64_t r = 0;
    // Two rows at a time: each K vector loaded once for both (eight accumulators, under the 16 registers).
    for (; r + 2 <= rows; r += 2) {
      const float* qa = q + r * d_pad;
      const float* qb = qa + d_pad;
      vf a0{}, a1{}, a2{}, a3{}, b0{}, b1{}, b2{}, b3{};
      for (std::int64_t d = 0; d < d_pad; d += VW) {
        const vf x = V::load(qa + d), y = V::load(qb + d);
        const vf k_0 = V::load(k0 + d), k_1 = V::load(k0 + d_pad + d);
        const vf k_2 = V::load(k0 + 2 * d_pad + d), k_3 = V::load(k0 + 3 * d_pad + d);
        a0 += x * k_0;
        a1 += x * k_1;
        a2 += x * k_2;
        a3 += x * k_3;
        b0 += y * k_0;
        b1 += y * k_1;
        b2 += y * k_2;
        b3 += y * k_3;
      }
      sum4<VW>(a0, a1, a2, a3, s + r * lds + c);
      sum4<VW>(b0, b1, b2, b3, s + (r + 1) * lds + c);
    }
    for (; r < rows; ++r) {  // the same sums, one row
      const float* qr = q + r * d_pad;
      vf a0{}, a1{}, a2{}, a3{};
      for (std::int64_t d = 0; d < d_pad; d += VW) {
        const vf x = V::load(qr + d);
        a0 += x * V::load(k0 + d);
        a1 += x * V::load(k0 + d_pad + d);
        a2 += x * V::load(k0 + 2 * d_pad + d);
        a3 += x * V::load(k0 + 3 * d_pad + d);
      }
      sum4<VW>(a0, a1, a2, a3, s + r * lds + c);
    }
  }
}

// Asks the cache for the located keys of K and V (the next tile) while the current one is worked on: within a page
// the rows of one head are heads_kv rows apart, and across pages they jump, which hardware prefetchers follow
// poorly.
// Every cache line of bytes [offset, offset + bytes) of base, from the one holding the first byte: a row that does
// not start on a line boundary spans one line more than its length suggests, and missing that line cost half the
// bandwidth (measured with caches 16 bytes off a line boundary, as a plain malloc returns them).
IOATTN_TILED_INLINE void prefetch_lines(const void* base, std::int64_t offset, std::int64_t bytes) {
  const char* first = static_cast<const char*>(base) + offset;
  const std::int64_t skew = static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(first) & 63);
  for (std::int64_t off = -skew; off < bytes; off += 64) __builtin_prefetch(first + off, 0, 1);
}

IOATTN_TILED_INLINE void prefetch_keys(const detail::PagedProblem& p, const KeyRows& keys, std::int64_t h_kv,
                                       std::size_t elem) {
  const auto e = static_cast<std::int64_t>(elem);
  for (std::int64_t r = 0; r < keys.count; ++r) {
    prefetch_lines(p.k.ptr, keys.offset(p.k, r, h_kv) * e, p.dim_qk * e);
    prefetch_lines(p.v.ptr, keys.offset(p.v, r, h_kv) * e, p.dim_v * e);
  }
}

// One item: rows [r0, r0 + rows) of (sequence b, kv head h_kv) against the keys of chunk `chunk`. Writes out and lse
// directly when the sequence has one chunk (sink included), else the chunk's partial result (normalized by its own
// sum, no sink) and its lse.
template <int VW, DType D>
IOATTN_TILED_INLINE void chunk_item(const detail::PagedProblem& p, const TileShape& t, const Partials& partials,
                                    const Item& it, const SeqView& seq, char* thread_ws) {
  using V = Simd<VW>;
  const std::int64_t group = p.group_size();
  const std::int64_t b = it.b, h_kv = it.h_kv, rows = it.rows;
  const std::int64_t i_first = it.r0 / group, i_last = (it.r0 + rows - 1) / group;
  const bool dot_path = rows < kDotPathMaxRows;

  tiled::Arena arena(thread_ws);
  const ChunkTiles tiles(arena, t);
  for (std::int64_t r = 0; r < rows; ++r) tiles.state[r] = core::SoftmaxState<double>{};
  for (std::int64_t e = 0; e < rows * t.dv_pad; ++e) tiles.o[e] = 0.0f;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t rr = it.r0 + r;
    float* q = tiles.q + r * t.dq_pad;
    widen_row<VW, D>(p.q.ptr, p.q.offset(b, seq.span.q_offset + rr / group, h_kv * group + rr % group), p.dim_qk, q);
    for (std::int64_t c = p.dim_qk; c < t.dq_pad; ++c) q[c] = 0.0f;
  }
  // The softmax scale folded into q once, as the dense tiled forward does (rounds like PyTorch's q * scale).
  tiled::scale_rows<VW>(tiles.q, rows, t.dq_pad, p.scale);

  const std::int64_t c0 = it.chunk * p.split_tokens;
  const std::int64_t c1 = std::min(seq.span.k_len, c0 + p.split_tokens);
  const std::int64_t k_begin = std::max(c0, seq.rule.tile_key_begin(i_first));
  const std::int64_t k_end = std::min(c1, seq.rule.tile_key_end(i_last + 1));
  const std::size_t elem = dtype_size(D);
  // Key tiles on the chunk's own grid (c0 + n * bc), whatever part of it the mask lets this row tile see.
  const std::int64_t first_tile = k_begin > c0 ? c0 + (k_begin - c0) / t.bc * t.bc : c0;
  KeyRows keys, next_keys;
  for (std::int64_t k0 = first_tile; k0 < k_end; k0 += t.bc) {
    const std::int64_t kn = std::min(t.bc, c1 - k0);
    const core::TileKind kind = seq.rule.classify(i_first, i_last + 1, k0, k0 + kn);
    if (kind == core::TileKind::skip) continue;
    const std::int64_t n_pad = tiled::pad_columns(kn);
    keys.locate(p, b, k0, kn);
    if (dot_path) {
      load_key_rows<VW, D>(keys, p.k, h_kv, p.dim_qk, tiles.k, t.dq_pad, n_pad);
    } else {
      for (std::int64_t r = 0; r < kn; ++r) {
        widen_row<VW, D>(p.k.ptr, keys.offset(p.k, r, h_kv), p.dim_qk, tiles.row);
        for (std::int64_t c = 0; c < p.dim_qk; ++c) tiles.k[c * t.bc + r] = tiles.row[c];
      }
      for (std::int64_t c = 0; c < p.dim_qk; ++c)
        for (std::int64_t r = kn; r < t.bc; ++r) tiles.k[c * t.bc + r] = 0.0f;
    }
    load_key_rows<VW, D>(keys, p.v, h_kv, p.dim_v, tiles.v, t.dv_pad, kn);
    if (k0 + t.bc < k_end) {
      next_keys.locate(p, b, k0 + t.bc, std::min(t.bc, c1 - k0 - t.bc));
      prefetch_keys(p, next_keys, h_kv, elem);
    }

    // s[rows][n_pad] = q . k, then logits (softcap, ALiBi, mask per row; padding columns -inf).
    if (dot_path) {
      scores_dot<VW>(rows, n_pad, t.dq_pad, tiles.q, tiles.k, tiles.s, t.bc);
    } else {
      tiled::gemm_nn<VW>(rows, n_pad, p.dim_qk, tiles.q, t.dq_pad, tiles.k, t.bc, tiles.s, t.bc, false);
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t rr = it.r0 + r;
      tiled::ScoreMods mods;
      mods.softcap = p.softcap;
      mods.alibi = p.alibi_slopes != nullptr;
      mods.alibi_slope = p.alibi_slope(b, h_kv * group + rr % group);
      mods.rule = seq.rule;
      tiled::scores_to_logits<VW>(tiles.s + r * t.bc, t.bc, 1, rr / group, k0, kn, n_pad, kind, mods, nullptr);
    }

    // Online softmax: P = exp(s - m) in place; o and l rescaled when the running max moves.
    for (std::int64_t r = 0; r < rows; ++r) {
      float* s = tiles.s + r * t.bc;
      core::SoftmaxState<double>& state = tiles.state[r];
      typename V::vf vmax = V::splat(core::neg_inf<float>());
      for (std::int64_t c = 0; c < n_pad; c += VW) vmax = V::vmax(vmax, V::load(s + c));
      const float alpha = static_cast<float>(state.begin_tile(V::hmax(vmax)));
      const typename V::vf offset = V::splat(static_cast<float>(state.offset()));  // an fp32 score: exact
      typename V::vf vsum{};
      for (std::int64_t c = 0; c < n_pad; c += VW) {
        const typename V::vf e = V::exp(V::load(s + c) - offset);
        V::store(s + c, e);
        vsum += e;
      }
      state.l += V::hsum(vsum);
      if (alpha != 1.0f) {
        float* o = tiles.o + r * t.dv_pad;
        const typename V::vf a = V::splat(alpha);
        for (std::int64_t c = 0; c < t.dv_pad; c += VW) V::store(o + c, V::load(o + c) * a);
      }
    }
    // o[rows][dv_pad] += P . v
    tiled::gemm_nn<VW>(rows, t.dv_pad, kn, tiles.s, t.bc, tiles.v, t.dv_pad, tiles.o, t.dv_pad, true);
  }

  const bool direct = seq.chunks == 1;
  float* lse = static_cast<float*>(p.lse.ptr);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t rr = it.r0 + r, i = rr / group, h = h_kv * group + rr % group;
    core::SoftmaxState<double>& state = tiles.state[r];
    double factor = 1.0;
    if (direct && p.sinks != nullptr) factor = state.add_sink(p.sinks[h]);
    factor *= state.inv_sum();
    float* o = tiles.o + r * t.dv_pad;
    const typename V::vf f = V::splat(static_cast<float>(factor));
    for (std::int64_t c = 0; c < t.dv_pad; c += VW) V::store(o + c, V::load(o + c) * f);
    if (direct) {
      const std::int64_t row = seq.span.q_offset + i;
      store_row<D>(p.out.ptr, p.out.offset(b, row, h), p.dim_v, o);
      if (lse != nullptr) lse[p.lse.offset(b, row, h)] = static_cast<float>(state.lse());
    } else {
      const std::int64_t at = (it.chunk * partials.rows + seq.row0 + i) * p.heads_q + h;
      std::copy(o, o + p.dim_v, partials.out + at * p.dim_v);
      partials.lse[at] = static_cast<float>(state.lse());
    }
  }
}

}  // namespace ioattn::cpu::paged
