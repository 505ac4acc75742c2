// ioattn cuda paged: the decode kernels' instantiations (one .cu file per dtype x head dims under instantiations/)
// and their tile shapes, which the planner needs to size the grid.
#pragma once

#include <cstdint>

#include "cuda/paged/params.cuh"

namespace ioattn::detail::paged {

// Rows per CTA: 16 when every sequence's packed rows (new tokens x GQA group) fit, else 64.
constexpr int kNarrowRows = 16;
constexpr int kWideRows = 64;
constexpr int kBlockKeys = 64;  // keys per tile; split chunks are multiples of it

// The shapes of one head-dim configuration (the traits in launch.cuh are built from these numbers).
// Key parts and groups (decode_kernel.cuh): the 16-row variant deals its key tiles to `narrow_parts` parts; with two
// parts it runs either as two key groups of 4 warps, each streaming its part through its own ring (one CTA per SM),
// or as one group whose warps keep a state per part (two CTAs per SM), bit for bit alike. Two groups hold as many
// bytes in flight and warps per SM as two one-group CTAs, but each CTA covers twice the keys, so a small grid needs
// half the chunks (16 x 2k-8k none, so no combine); on a grid of several waves one group's CTAs win, since a second
// CTA per SM streams while the first starts or ends. There the two-state kernel costs 1-7% against one part (H200,
// 2026-11-21, bench/paged_decode.py, same run: 128 x 2k 276.6 vs 258.7 us, 64 x 4k 258.9 vs 253.0, 1 x 32k in
// 1024-key chunks 46.8 vs 44.3), so it runs only where a fixed or no split needs its bits (backend.cu).
struct DecodeShape {
  int stages;
  int narrow_parts;  // key parts of the 16-row variant (the 64-row variant has one)
  // Dynamic shared memory of a CTA with `block_m` rows and `groups` key groups (1 for 64 rows): per group a query
  // tile and a ring; the epilogue's fp32 rows (one set per part and key-owning warp) reuse the rings.
  constexpr int smem_bytes(int dim_qk, int dim_v, int block_m, int groups) const {
    const int parts = block_m == kNarrowRows ? narrow_parts : 1;
    const int g = block_m == kNarrowRows ? groups : 1;
    const int q = g * block_m * dim_qk * 2;
    const int pipe = g * stages * kBlockKeys * (dim_qk + dim_v) * 2;
    const int warps_n = 4 / (block_m / 16);
    const int epilogue = parts * warps_n * block_m * (dim_v + 9) * 4;
    return q + (pipe > epilogue ? pipe : epilogue);
  }
};
// Ring depth per head dim: enough bytes in flight per SM to cover HBM latency (about 100 KB with 2 CTAs per SM at
// dim 128), within an sm80 CTA's 163 KB of shared memory for dim 256.
// Not deeper at fewer CTAs: one 16-row CTA per SM with a 6-stage ring (5 tiles, 160 KB in flight) read DRAM at 55% of
// peak at dim 128 (H200, 2026-11-21: 16 x 2k 53.9 us against 42.2 with two 3-stage CTAs per SM): with four warps per
// SM the tile loop, not the bytes in flight, limits the stream.
// Two key parts at dims 64 and 128: two groups take 132 KB and 200 KB per CTA (the backend uses one group where a CTA
// cannot have that much, as on the A100 at dim 128); at 192 and 256 two rings do not fit. At dim 64 the backend runs
// them only without a split (backend.cu, narrow_kernel).
constexpr DecodeShape decode_shape(int dim_qk) {
  return {dim_qk <= 64 ? 4 : (dim_qk <= 192 ? 3 : 2), dim_qk <= 128 ? 2 : 1};
}

// Which 16-row kernel runs: `parts` 1 (one online softmax per warp), or decode_shape(kDimQK).narrow_parts served by
// `groups` 1 or narrow_parts key groups (the same bits either way; not those of one part).
struct NarrowKernel {
  int parts = 1;
  int groups = 1;
};

// Launches the decode kernel over grid (batch x heads_kv, max_splits, row blocks) on `stream`, with `narrow` as the
// 16-row variant; `programmatic` (sm90+): as a programmatic dependent of the stream's previous kernel (its CTAs
// may be resident, waiting, before that kernel ends).
template <class Element, int kDimQK, int kDimV>
void launch_decode(const DecodeParams& p, void* stream, int device, NarrowKernel narrow, bool programmatic);

// Launches the combine of split chunks (only sequences with more than one chunk are touched); `programmatic`
// (sm90+): as a programmatic dependent launch of the decode kernel just launched on `stream`.
template <class Element>
void launch_combine(const DecodeParams& p, int dim_v, void* stream, bool programmatic);

}  // namespace ioattn::detail::paged
