// ioattn internal: what the tiled CPU forward and backward share: tile sizes, the per-thread workspace, the
// enumeration of work items over a (dense or varlen) batch, tile loads, and the one place where raw products q.k
// become masked logits.
//
// Memory: the kernels keep fp32 copies of a few tiles per thread (sizes below) and, in the backward, one fp32 per
// query row and head (D = rowsum(dO * O)) plus, in its fused schedule only, per-thread dQ partials capped at 16 MiB
// in all (tiled_backward.cpp). Nothing is ever O(seqlen_q * seqlen_k).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "api/backend.hpp"
#include "api/problem.hpp"
#include "cpu/tensor_access.hpp"
#include "cpu/tiled_simd.hpp"
#include "ioattn/core/mask.hpp"
#include "ioattn/core/score_mod.hpp"
#include "ioattn/core/softmax_state.hpp"
#include "ioattn/error.hpp"

namespace ioattn::cpu::tiled {

inline constexpr std::int64_t kMaxHeadDim = 512;

// Tile edge lengths for one problem. Query tiles of br rows, key tiles of bc keys; dq_pad / dv_pad are the padded
// row lengths of the head dims.
//   bc: one key tile and one value tile in fp32, bc * (dq_pad + dv_pad) * 4 bytes, take about 64 KiB in the
//       forward (64 keys at head dim 128), so the micro-kernel's column panels of them stay in L1 while it sweeps
//       down the query tile. The backward takes 128 KiB (128 keys): its key-tile loop walks every query tile (q,
//       dO and, fused, the dQ partial) once per key tile, and halving those walks measured 77 -> 86 GFLOP/s (one
//       thread, seqlen 4096, 4 heads); the forward measured the same with either.
//   br: the query tile, its output accumulator and its score tile, br * (dq_pad + dv_pad + bc) * 4 bytes, take
//       about 320 KiB (L2): 256 rows at head dim 128 in the forward. A taller query tile reads each K/V row from memory fewer
//       times (every query tile streams the whole K and V of its head); on the machine of docs/PERF.md, one thread,
//       seqlen 4096, 4 heads, going from 120 to 264 rows took the forward from 70 to 82 GFLOP/s.
struct TileShape {
  std::int64_t br = 0;
  std::int64_t bc = 0;
  std::int64_t dq_pad = 0;
  std::int64_t dv_pad = 0;

  static TileShape for_problem(const detail::Problem& p, bool backward) {
    TileShape t;
    t.dq_pad = pad_columns(p.dim_qk);
    t.dv_pad = pad_columns(p.dim_v);
    const std::int64_t kv_budget_floats = (backward ? 128 * 1024 : 64 * 1024) / 4;
    t.bc = std::clamp<std::int64_t>(kv_budget_floats / (t.dq_pad + t.dv_pad) / kColumnPad * kColumnPad, 32, 128);
    const std::int64_t q_budget_floats = (320 * 1024) / 4;
    const std::int64_t rows = q_budget_floats / (t.dq_pad + t.dv_pad + t.bc);
    t.br = std::clamp<std::int64_t>(rows / 24 * 24, 48, 384);  // whole micro-kernel blocks of 6 rows
    apply_override(t);
    return t;
  }

  // IOATTN_CPU_TILES="br,bc" (either may be empty or 0 to keep the default): a knob for `ioattn check`, which
  // sweeps tile sizes because bc sets how often the online softmax rescales. Values are snapped into the same ranges
  // and steps the defaults above come from, so the kernels see no tile shape they could not get anyway. Read on
  // every call: the workspace query and the run of one problem must agree, so set it before both, not in between.
  static void apply_override(TileShape& t) {
    const char* text = std::getenv("IOATTN_CPU_TILES");
    if (text == nullptr || *text == '\0') return;
    char* end = nullptr;
    const long br = std::strtol(text, &end, 10);
    const long bc = (*end == ',') ? std::strtol(end + 1, nullptr, 10) : 0;
    if (br > 0) t.br = std::clamp<std::int64_t>(br / 24 * 24, 48, 384);
    if (bc > 0) t.bc = std::clamp<std::int64_t>(bc / kColumnPad * kColumnPad, 32, 128);
  }
};

// Threads a call uses: params.num_threads when positive, else the OpenMP default. The workspace size depends on it.
int thread_count(const detail::Problem& p);

// Bump allocator over one thread's slice of the workspace; every block starts on a 64-byte boundary. With a null
// base it only measures: the kernels size their workspace by carving their tiles from such an arena, so the size
// and the layout cannot disagree.
class Arena {
 public:
  explicit Arena(void* base) : base_(static_cast<char*>(base)) {}
  float* floats(std::int64_t n) { return static_cast<float*>(take(static_cast<std::size_t>(n) * sizeof(float))); }
  void* take(std::size_t bytes) {
    const std::size_t start = used_;
    used_ += (bytes + 63) / 64 * 64;
    return base_ != nullptr ? base_ + start : nullptr;
  }
  std::size_t used() const { return used_; }

 private:
  char* base_;
  std::size_t used_ = 0;
};

// The workspace of one call: caller-owned when params.workspace is set, else allocated once here. Aligns the base
// to 64 bytes (the size functions include the slack for that).
class Scratch {
 public:
  Scratch(const ioattn::Workspace& given, std::size_t bytes);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  char* data() const { return aligned_; }

 private:
  char* owned_ = nullptr;
  char* aligned_ = nullptr;
};

// Tiles of `tile` rows over the sequences of a batch, numbered sequence by sequence. For varlen batches the first
// tile of each sequence comes from a prefix sum kept in the workspace (batch + 1 int64).
struct TileGrid {
  std::int64_t tile = 1;
  std::int64_t batch = 0;
  std::int64_t dense_tiles = 0;           // tiles per sequence when dense
  const std::int64_t* prefix = nullptr;   // varlen: first tile of sequence b; prefix[batch] = count
  std::int64_t count = 0;

  static std::size_t prefix_bytes(const detail::Problem& p) {
    return p.is_varlen() ? static_cast<std::size_t>(p.batch + 1) * sizeof(std::int64_t) + 64 : 0;
  }
  // query_side: tiles over each sequence's queries, else over its keys.
  static TileGrid make(const detail::Problem& p, std::int64_t tile, bool query_side, std::int64_t* prefix_storage) {
    TileGrid g;
    g.tile = tile;
    g.batch = p.batch;
    if (!p.is_varlen()) {
      const std::int64_t len = query_side ? p.seqlen_q : p.seqlen_k;
      g.dense_tiles = (len + tile - 1) / tile;
      g.count = g.dense_tiles * p.batch;
      return g;
    }
    prefix_storage[0] = 0;
    for (std::int64_t b = 0; b < p.batch; ++b) {
      const core::SeqSpan s = p.span(b);
      const std::int64_t len = query_side ? s.q_len : s.k_len;
      prefix_storage[b + 1] = prefix_storage[b] + (len + tile - 1) / tile;
    }
    g.prefix = prefix_storage;
    g.count = prefix_storage[p.batch];
    return g;
  }
  // Sequence and tile-within-sequence of global tile t.
  void locate(std::int64_t t, std::int64_t& b, std::int64_t& local) const {
    if (prefix == nullptr) {
      b = t / dense_tiles;
      local = t % dense_tiles;
      return;
    }
    b = std::upper_bound(prefix, prefix + batch + 1, t) - prefix - 1;
    local = t - prefix[b];
  }
};

// Where work item n lies. Items nest as (kv head, tile, query head within the group), so that consecutive items,
// which the threads pick up at about the same time, read the same K and V rows and find them in cache.
struct ItemCoords {
  std::int64_t b = 0;
  std::int64_t tile = 0;  // within sequence b
  std::int64_t h = 0;     // query head (query items) or kv head (key items)
};

inline ItemCoords query_item(const TileGrid& grid, const detail::Problem& p, std::int64_t item) {
  const std::int64_t group = p.group_size();
  const std::int64_t rest = item / group;
  ItemCoords c;
  grid.locate(rest % grid.count, c.b, c.tile);
  c.h = rest / grid.count * group + item % group;
  return c;
}

// Query work item n resolved: its sequence, query head (and the kv head it reads), and its rows q0 .. q0+rows-1 of
// the sequence. The forward, the D pre-pass and the dQ pass all start from this.
struct QueryTile {
  std::int64_t b;
  std::int64_t h;
  std::int64_t h_kv;
  core::SeqSpan span;
  std::int64_t q0;
  std::int64_t rows;
};

inline QueryTile query_tile(const TileGrid& grid, const detail::Problem& p, std::int64_t item, std::int64_t br) {
  const ItemCoords at = query_item(grid, p, item);
  const core::SeqSpan span = p.span(at.b);
  const std::int64_t q0 = at.tile * br;
  return {at.b, at.h, at.h / p.group_size(), span, q0, std::min(br, span.q_len - q0)};
}

inline ItemCoords key_item(const TileGrid& grid, std::int64_t item) {
  ItemCoords c;
  grid.locate(item % grid.count, c.b, c.tile);
  c.h = item / grid.count;
  return c;
}

// Everything that turns q.k into the logit of one (sequence, head), as attention.hpp defines it.
struct ScoreMods {
  float softcap = 0.0f;
  float alibi_slope = 0.0f;
  bool alibi = false;
  core::MaskRule rule;
};

inline ScoreMods score_mods(const detail::Problem& p, std::int64_t b, std::int64_t h, const core::SeqSpan& span) {
  ScoreMods m;
  m.softcap = p.softcap;
  m.alibi = p.alibi_slopes != nullptr;
  m.alibi_slope = p.alibi_slope(b, h);
  m.rule = p.mask_rule(span);
  return m;
}

// S[rows x n_pad] holds (scale q).k for queries q0.. and keys k0.. (kn real keys, n_pad >= kn the padded width):
// the kernels fold the softmax scale into their query tile once (scale_rows), which saves a pass over every score
// tile and rounds like PyTorch's q * scale. Turns S into logits in place; entries the mask hides, and the padding
// columns, become -inf. `kind` comes from MaskRule::classify: a `full` tile runs no mask code. When `cap_grad` is
// given (backward with softcap) it receives d(capped)/d(uncapped) per entry.
template <int VW>
IOATTN_TILED_INLINE void scores_to_logits(float* S, std::int64_t lds, std::int64_t rows, std::int64_t q0,
                                          std::int64_t k0, std::int64_t kn, std::int64_t n_pad, core::TileKind kind,
                                          const ScoreMods& mods, float* cap_grad) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (std::int64_t r = 0; r < rows; ++r) {
    float* s = S + r * lds;
    if (mods.softcap > 0.0f) {
      // In fp64: the derivative 1 - (capped / softcap)^2 cancels where tanh saturates, and the fp32 capped value
      // would carry its rounding into it.
      float* g = cap_grad + r * lds;
      const double softcap = mods.softcap;
      for (std::int64_t c = 0; c < kn; ++c) {
        const double capped = core::apply_softcap(static_cast<double>(s[c]), softcap);
        s[c] = static_cast<float>(capped);
        if (cap_grad != nullptr) g[c] = static_cast<float>(core::softcap_grad_from_capped(capped, softcap));
      }
      if (cap_grad != nullptr) {
        for (std::int64_t c = kn; c < n_pad; ++c) g[c] = 0.0f;
      }
    }
    const std::int64_t i = q0 + r;
    if (mods.alibi) {
      const std::int64_t diag = mods.rule.diag(i);
      for (std::int64_t c = 0; c < kn; ++c) s[c] += core::alibi_bias(mods.alibi_slope, k0 + c, diag);
    }
    if (kind == core::TileKind::partial) {
      const std::int64_t begin = std::clamp<std::int64_t>(mods.rule.key_begin(i) - k0, 0, kn);
      const std::int64_t end = std::clamp<std::int64_t>(mods.rule.key_end(i) - k0, begin, kn);
      for (std::int64_t c = 0; c < begin; ++c) s[c] = neg_inf;
      for (std::int64_t c = end; c < kn; ++c) s[c] = neg_inf;
    }
    for (std::int64_t c = kn; c < n_pad; ++c) s[c] = neg_inf;
  }
}

// dst[r * ld + c] = row (row0 + r) of operand `op` (batch b, head h), widened to fp32, for r < rows, c < dim; the
// padding columns [dim, ld) are zeroed so they add nothing to any product.
template <DType D>
IOATTN_TILED_INLINE void load_rows(const detail::Operand& op, std::int64_t b, std::int64_t row0, std::int64_t h,
                                   std::int64_t rows, std::int64_t dim, float* dst, std::int64_t ld) {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* d = dst + r * ld;
    load_row<D>(op.ptr, op.offset(b, row0 + r, h), dim, d);
    for (std::int64_t c = dim; c < ld; ++c) d[c] = 0.0f;
  }
}

// tile[r * ld + c] *= factor for r < rows, over the whole padded row (ld a multiple of kColumnPad).
template <int VW>
IOATTN_TILED_INLINE void scale_rows(float* tile, std::int64_t rows, std::int64_t ld, float factor) {
  using V = Simd<VW>;
  const typename V::vf f = V::splat(factor);
  for (std::int64_t e = 0; e < rows * ld; e += VW) V::store(tile + e, V::load(tile + e) * f);
}

// dst[c * ld + r] = the same elements turned around (a K^T or V^T tile), columns [rows, ld) zeroed.
template <DType D>
IOATTN_TILED_INLINE void load_rows_transposed(const detail::Operand& op, std::int64_t b, std::int64_t row0,
                                              std::int64_t h, std::int64_t rows, std::int64_t dim, float* dst,
                                              std::int64_t ld, float* row_scratch) {
  for (std::int64_t r = 0; r < rows; ++r) {
    load_row<D>(op.ptr, op.offset(b, row0 + r, h), dim, row_scratch);
    for (std::int64_t c = 0; c < dim; ++c) dst[c * ld + r] = row_scratch[c];
  }
  for (std::int64_t c = 0; c < dim; ++c)
    for (std::int64_t r = rows; r < ld; ++r) dst[c * ld + r] = 0.0f;
}

// Asks the cache to start fetching row `row` of operand `op` (batch b, head h). The kernels issue these for the next
// K/V tile, a row at a time while the current tile is worked on: with heads interleaved in memory the rows of one
// head are strided, which the hardware prefetchers follow poorly (measured ~10% slower than contiguous rows), and
// spreading the requests keeps them from piling up in the load queue.
IOATTN_TILED_INLINE void prefetch_row(const detail::Operand& op, std::size_t elem_bytes, std::int64_t b,
                                      std::int64_t row, std::int64_t h, std::int64_t dim) {
  const char* p = static_cast<const char*>(op.ptr) + op.offset(b, row, h) * static_cast<std::int64_t>(elem_bytes);
  const std::int64_t bytes = dim * static_cast<std::int64_t>(elem_bytes);
  for (std::int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 2);
}

// The rows of the next tile of two operands (K and V, or q and dO) of one head: the per-row loops of the current
// tile prefetch row r of it on their iteration r, which spreads the requests out.
struct NextRows {
  const detail::Operand* first = nullptr;
  const detail::Operand* second = nullptr;
  std::int64_t first_dim = 0, second_dim = 0;
  std::int64_t b = 0, row0 = 0, count = 0, h = 0;
  std::size_t elem_bytes = 0;

  IOATTN_TILED_INLINE void fetch(std::int64_t r) const {
    if (r >= count) return;
    prefetch_row(*first, elem_bytes, b, row0 + r, h, first_dim);
    prefetch_row(*second, elem_bytes, b, row0 + r, h, second_dim);
  }
};

// Which implementation of the kernels this CPU runs: AVX2 + FMA (8 lanes) or the x86-64 baseline (4 lanes).
bool cpu_has_avx2_fma();

// The backward half, defined in tiled_backward.cpp, wired into kTiledBackend by tiled_forward.cpp.
std::size_t backward_workspace_bytes(const detail::BackwardProblem& p);
void backward(const detail::BackwardProblem& p);

}  // namespace ioattn::cpu::tiled
