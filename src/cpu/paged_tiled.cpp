// ioattn: paged attention in the tiled CPU backend: FlashAttention over each sequence's pages, split-KV
// (Flash-Decoding) when a batch has too few (sequence, kv head) pairs to keep the threads busy.
//
// A call runs in two phases inside one OpenMP region:
//   1. items (sequence, kv head, chunk, row tile), paged_tiled_kernel.hpp: sequences with one chunk write out and
//      lse directly; the chunks of the others write partial results to the workspace;
//   2. for each (sequence with several chunks, query head), the combine: its chunks merged in chunk order with
//      core::SoftmaxState::add_partial, the sink added once, then out and lse written.
// Every output element is produced by one thread in a fixed order, so results do not depend on the thread count, and
// with a fixed (or no) split a sequence's result does not depend on the batch it is in.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "api/paged_problem.hpp"
#include "cpu/paged_cache.hpp"
#include "cpu/paged_tiled_kernel.hpp"
#include "ioattn/error.hpp"

namespace ioattn::cpu::paged {
namespace {

// Smallest automatic chunk, and the grid chunks are cut on: the floor keeps each chunk's fixed costs (writing its
// partial result, merging it) small next to the keys it reads.
constexpr std::int64_t kMinAutoChunk = 256;
constexpr std::int64_t kChunkGrid = 64;

std::int64_t row_tiles(const detail::PagedProblem& p, std::int64_t q_len, const TileShape& t) {
  return (p.group_size() * q_len + t.br - 1) / t.br;
}

// Rows of one item (rows of group x tokens are cut into tiles of br): its row count, 0 past the sequence's rows.
std::int64_t item_rows(const detail::PagedProblem& p, std::int64_t q_len, std::int64_t tile, const TileShape& t) {
  const std::int64_t total = p.group_size() * q_len;
  return std::clamp<std::int64_t>(total - tile * t.br, 0, t.br);
}

// The per-thread tiles live in thread-local storage that grows to the largest problem seen and is kept: after the
// first call of a shape, a run allocates nothing (the caller's workspace holds only the partial results, as
// paged_problem.hpp lays them out).
char* thread_tiles(std::size_t bytes) {
  thread_local std::vector<char> storage;
  if (storage.size() < bytes + 64) storage.resize(bytes + 64);
  const auto addr = reinterpret_cast<std::uintptr_t>(storage.data());
  return storage.data() + (64 - addr % 64) % 64;
}

template <int VW, DType D>
__attribute__((target("avx2,fma"), flatten)) void chunk_item_avx2(const detail::PagedProblem& p, const TileShape& t,
                                                                   const Partials& part, const Item& it,
                                                                   const SeqView& seq, char* ws) {
  chunk_item<VW, D>(p, t, part, it, seq, ws);
}
template <int VW, DType D>
__attribute__((flatten)) void chunk_item_baseline(const detail::PagedProblem& p, const TileShape& t,
                                                  const Partials& part, const Item& it, const SeqView& seq,
                                                  char* ws) {
  chunk_item<VW, D>(p, t, part, it, seq, ws);
}
using ChunkItemFn = void (*)(const detail::PagedProblem&, const TileShape&, const Partials&, const Item&,
                             const SeqView&, char*);

// Query head h of token i of `seq`: its n_b chunks merged in chunk order, in fp64 (a handful of rows per chunk;
// the cost is nothing next to the chunks themselves).
template <DType D>
void combine_row(const detail::PagedProblem& p, const Partials& part, std::int64_t b, const SeqView& seq,
                 std::int64_t i, std::int64_t h, double* acc, float* row) {
  core::SoftmaxState<double> state;
  std::fill(acc, acc + p.dim_v, 0.0);
  for (std::int64_t s = 0; s < seq.chunks; ++s) {
    const std::int64_t at = (s * part.rows + seq.row0 + i) * p.heads_q + h;
    double weight = 0.0;
    const double alpha = state.add_partial(static_cast<double>(part.lse[at]), weight);
    const float* o = part.out + at * p.dim_v;
    // A chunk that saw no key has weight 0 and o = 0: it adds exactly nothing.
    for (std::int64_t c = 0; c < p.dim_v; ++c) acc[c] = acc[c] * alpha + weight * static_cast<double>(o[c]);
  }
  double factor = 1.0;
  if (p.sinks != nullptr) factor = state.add_sink(p.sinks[h]);
  factor *= state.inv_sum();
  for (std::int64_t c = 0; c < p.dim_v; ++c) row[c] = static_cast<float>(acc[c] * factor);
  const std::int64_t q_row = seq.span.q_offset + i;
  store_row<D>(p.out.ptr, p.out.offset(b, q_row, h), p.dim_v, row);
  if (p.lse.ptr != nullptr) static_cast<float*>(p.lse.ptr)[p.lse.offset(b, q_row, h)] = static_cast<float>(state.lse());
}

void forward(const detail::PagedProblem& p) {
  const TileShape t = TileShape::for_problem(p, /*backward=*/false);
  const int threads = tiled::thread_count(p);
  const std::size_t tile_bytes = chunk_tiles_bytes(t);

  // Partial results: the caller's workspace, or a buffer of this call when none was given.
  Partials part;
  part.rows = p.rows();
  std::vector<float> own;
  if (p.max_splits > 1) {
    const std::size_t bytes = p.partial_bytes();
    float* base = static_cast<float*>(p.workspace.data);
    if (base == nullptr) {
      own.resize(bytes / sizeof(float));
      base = own.data();
    } else if (reinterpret_cast<std::uintptr_t>(base) % alignof(float) != 0) {
      throw Error(ErrorCode::invalid_argument,
                  "params.workspace: expected a 4-byte aligned buffer (it holds fp32 partial results), got an "
                  "address that is not");
    }
    part.out = base;
    part.lse = base + p.max_splits * part.rows * p.heads_q * p.dim_v;
  }

  // Items of sequence b: heads_kv x its chunks x its row tiles, numbered from first_item[b]. Counted per sequence
  // (not batch x max_splits x the longest row tiling) so that a long table with short sequences and small fixed
  // chunks does not queue thousands of empty items.
  thread_local std::vector<std::int64_t> first_item;
  first_item.resize(static_cast<std::size_t>(p.batch + 1));
  first_item[0] = 0;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const SeqView seq = seq_view(p, b);
    first_item[b + 1] = first_item[b] + p.heads_kv * seq.chunks * row_tiles(p, seq.span.q_len, t);
  }
  const std::int64_t items = first_item[p.batch];
  const std::int64_t* starts = first_item.data();  // the calling thread's vector, read by every thread below
  const bool avx2 = tiled::cpu_has_avx2_fma();
  const ChunkItemFn fn = visit_dtype(p.dtype, [&](auto d) -> ChunkItemFn {
    constexpr DType D = decltype(d)::value;
    return avx2 ? &chunk_item_avx2<8, D> : &chunk_item_baseline<4, D>;
  });

  bool out_of_memory = false;
#pragma omp parallel num_threads(threads)
  {
    char* ws = nullptr;
    try {
      ws = thread_tiles(tile_bytes);
    } catch (const std::bad_alloc&) {
#pragma omp atomic write
      out_of_memory = true;
    }
    // Items nest as (sequence, kv head, chunk, row tile): the row tiles of one chunk, which read the same keys, run
    // side by side.
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t n = 0; n < items; ++n) {
      if (ws == nullptr) continue;
      Item it;
      it.b = std::upper_bound(starts, starts + p.batch + 1, n) - starts - 1;
      const SeqView seq = seq_view(p, it.b);
      const std::int64_t tiles = row_tiles(p, seq.span.q_len, t), local = n - starts[it.b];
      const std::int64_t tile = local % tiles;
      it.chunk = local / tiles % seq.chunks;
      it.h_kv = local / (tiles * seq.chunks);
      it.rows = item_rows(p, seq.span.q_len, tile, t);
      it.r0 = tile * t.br;
      fn(p, t, part, it, seq, ws);
    }
    // (the implicit barrier of the loop above: every partial result is written before any is merged)
    if (p.max_splits > 1) {
#pragma omp for schedule(dynamic, 4)
      for (std::int64_t n = 0; n < p.batch * p.heads_q; ++n) {
        if (ws == nullptr) continue;
        const std::int64_t b = n / p.heads_q, h = n % p.heads_q;
        const SeqView seq = seq_view(p, b);
        if (seq.chunks == 1) continue;
        tiled::Arena arena(ws);
        const ChunkTiles tiles(arena, t);
        for (std::int64_t i = 0; i < seq.span.q_len; ++i) {
          visit_dtype(p.dtype, [&](auto d) { combine_row<decltype(d)::value>(p, part, b, seq, i, h, tiles.acc, tiles.row); });
        }
      }
    }
  }
  if (out_of_memory) {
    throw Error(ErrorCode::out_of_memory, "tiled: could not allocate " + std::to_string(tile_bytes) +
                                              " bytes of per-thread tiles (out and lse are incomplete)");
  }
}

// Automatic: when batch x kv heads x row tiles gives each thread fewer than two items, cut each sequence into
// enough chunks of the expected length to make up the difference (dynamic scheduling then balances sequences of
// different lengths); otherwise one chunk per sequence.
detail::PagedSplit plan(const detail::PagedProblem& problem, SplitKV split, std::int64_t expected_seqlen_k) {
  const std::int64_t capacity = std::max<std::int64_t>(problem.capacity(), 1);
  std::int64_t tokens = capacity;
  if (split.mode == SplitKV::Mode::fixed) {
    tokens = split.tokens;
  } else if (split.mode == SplitKV::Mode::automatic) {
    const TileShape t = TileShape::for_problem(problem, /*backward=*/false);
    const std::int64_t work = problem.batch * problem.heads_kv * std::max<std::int64_t>(row_tiles(problem, problem.seqlen_q, t), 1);
    const std::int64_t wanted = 2 * static_cast<std::int64_t>(tiled::thread_count(problem));
    if (work < wanted) {
      const std::int64_t chunks = (wanted + work - 1) / work;
      const std::int64_t per_chunk = (expected_seqlen_k + chunks - 1) / chunks;
      tokens = std::max(kMinAutoChunk, (per_chunk + kChunkGrid - 1) / kChunkGrid * kChunkGrid);
      if (tokens >= capacity) tokens = capacity;
    }
  }
  detail::PagedProblem planned = problem;
  planned.split_tokens = tokens;
  planned.max_splits = detail::split_count(problem.capacity(), tokens);
  return {tokens, planned.max_splits, planned.partial_bytes()};
}

std::string unsupported(const detail::PagedProblem& p) {
  if (p.device != Device::cpu) return std::string("tiled runs on the CPU; the tensors are on ") + to_string(p.device);
  if (p.dim_qk > tiled::kMaxHeadDim || p.dim_v > tiled::kMaxHeadDim) {
    return "head dims up to " + std::to_string(tiled::kMaxHeadDim) + " (got head_dim_qk " + std::to_string(p.dim_qk) +
           ", head_dim_v " + std::to_string(p.dim_v) + ")";
  }
  return {};
}

}  // namespace
}  // namespace ioattn::cpu::paged

namespace ioattn::detail {

const PagedBackend kTiledPagedBackend{"tiled",          Device::cpu,         10,
                                      cpu::paged::unsupported, cpu::paged::plan, cpu::paged::forward,
                                      cpu::paged_write, cpu::paged_copy_pages};

}  // namespace ioattn::detail
