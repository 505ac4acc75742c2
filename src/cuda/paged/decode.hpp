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
struct DecodeShape {
  int stages;
  // Dynamic shared memory of a CTA with `block_m` rows.
  constexpr int smem_bytes(int dim_qk, int dim_v, int block_m) const {
    const int q = block_m * dim_qk * 2;
    const int pipe = stages * kBlockKeys * (dim_qk + dim_v) * 2;
    const int epilogue = (64 / block_m == 4 ? 4 : 1) * block_m * (dim_v + 9) * 4;
    return q + (pipe > epilogue ? pipe : epilogue);
  }
};
// Ring depth per head dim: enough bytes in flight per SM to cover HBM latency (about 100 KB with 2 CTAs per SM at
// dim 128), within an sm80 CTA's 163 KB of shared memory for dim 256.
// Not deeper at fewer CTAs: one 16-row CTA per SM with a 6-stage ring (5 tiles, 160 KB in flight) read DRAM at 55% of
// peak at dim 128 (H200, 2026-11-21: 16 x 2k 53.9 us against 42.2 with two 3-stage CTAs per SM): with four warps per
// SM the tile loop, not the bytes in flight, limits the stream.
constexpr DecodeShape decode_shape(int dim_qk) {
  return {dim_qk <= 64 ? 4 : (dim_qk <= 192 ? 3 : 2)};
}

// Launches the decode kernel over grid (batch x heads_kv, max_splits, row blocks) on `stream`.
template <class Element, int kDimQK, int kDimV>
void launch_decode(const DecodeParams& p, void* stream, int device);

// Launches the combine of split chunks (only sequences with more than one chunk are touched); `programmatic`
// (sm90+): as a programmatic dependent launch of the decode kernel just launched on `stream`.
template <class Element>
void launch_combine(const DecodeParams& p, int dim_v, void* stream, bool programmatic);

}  // namespace ioattn::detail::paged
