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
// Key groups (decode_kernel.cuh): the 16-row variant can run two groups of 4 warps in one CTA, each streaming every
// other key tile of the chunk through its own ring; as many bytes in flight and warps per SM as two one-group CTAs,
// but each CTA covers twice the keys, so a small grid needs half the chunks (16 x 2k-8k none, no combine). Not the
// default: measured on the H200 (2026-11-21 16:20 UTC, bench/paged_decode.py, same run, two groups vs one) it wins on
// grids of about one wave (1 x 32k 43.3 vs 44.6 us, 16 x 2k 40.9 vs 42.4, 16 x 4k 70.4 vs 72.4, 16 x 8k 129.4 vs
// 132.5, 16 x 8k unsplit 130.9 vs 159.0) and loses on larger ones, where a second CTA per SM streams while the first
// starts or ends (64 x 4k 258.8 vs 253.5, 128 x 2k 273.9 vs 258.2; 1 x 32k with fixed 1024-key chunks, two waves,
// 50.6 vs 44.7); and picking it by the grid would make a fixed split's result depend on the batch. The backend uses
// it when IOATTN_PAGED_KEY_GROUPS=2 (backend.cu).
struct DecodeShape {
  int stages;
  int narrow_groups;  // key groups of the 16-row variant (the 64-row variant always has one)
  constexpr int groups(int block_m) const { return block_m == kNarrowRows ? narrow_groups : 1; }
  // Dynamic shared memory of a CTA with `block_m` rows: per group a query tile and a ring; the epilogue's fp32 rows
  // (one set per warp that owns keys) reuse the rings.
  constexpr int smem_bytes(int dim_qk, int dim_v, int block_m) const {
    const int g = groups(block_m);
    const int q = g * block_m * dim_qk * 2;
    const int pipe = g * stages * kBlockKeys * (dim_qk + dim_v) * 2;
    const int warps_n = 4 / (block_m / 16);
    const int epilogue = g * warps_n * block_m * (dim_v + 9) * 4;
    return q + (pipe > epilogue ? pipe : epilogue);
  }
};
// Ring depth per head dim: enough bytes in flight per SM to cover HBM latency (about 100 KB with 2 CTAs per SM at
// dim 128), within an sm80 CTA's 163 KB of shared memory for dim 256.
// Not deeper at fewer CTAs: one 16-row CTA per SM with a 6-stage ring (5 tiles, 160 KB in flight) read DRAM at 55% of
// peak at dim 128 (H200, 2026-11-21: 16 x 2k 53.9 us against 42.2 with two 3-stage CTAs per SM): with four warps per
// SM the tile loop, not the bytes in flight, limits the stream.
// Key groups available: two at dim 128 only (200 KB per CTA, so one CTA per SM on Hopper; refused where a CTA cannot
// have that much, as on the A100); at other dims two rings do not fit.
constexpr DecodeShape decode_shape(int dim_qk) {
  return {dim_qk <= 64 ? 4 : (dim_qk <= 192 ? 3 : 2), dim_qk == 128 ? 2 : 1};
}

// Launches the decode kernel over grid (batch x heads_kv, max_splits, row blocks) on `stream`; the 16-row variant
// with `narrow_groups` key groups (1, or decode_shape(kDimQK).narrow_groups).
template <class Element, int kDimQK, int kDimV>
void launch_decode(const DecodeParams& p, void* stream, int device, int narrow_groups);

// Launches the combine of split chunks (only sequences with more than one chunk are touched); `programmatic`
// (sm90+): as a programmatic dependent launch of the decode kernel just launched on `stream`.
template <class Element>
void launch_combine(const DecodeParams& p, int dim_v, void* stream, bool programmatic);

}  // namespace ioattn::detail::paged
