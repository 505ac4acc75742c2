// ioattn cuda paged: the decode kernel's launch for one (dtype, head dims). Included by instantiations/*.cu only.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/paged/decode.hpp"
#include "cuda/paged/decode_kernel.cuh"
#include "cuda/paged/programmatic_launch.cuh"
#include "cuda/shared_memory.hpp"

namespace ioattn::detail::paged {

template <class T>
void launch_decode_traits(const DecodeParams& p, void* stream, int device, int row_blocks, bool programmatic) {
  static_assert(T::kSmemBytes ==
                    DecodeShape{T::kStages, T::kKeyParts}.smem_bytes(T::kDimQK, T::kDimV, T::kBlockM, T::kGroups),
                "decode.hpp's shape arithmetic (used by the planner) must match the kernel's");
  auto kernel = &paged_decode_kernel<T>;
  // All of L1 as shared memory: the occupancy the planner assumes (2 one-group CTAs per SM at dim 128) needs it,
  // and the K/V stream bypasses L1 anyway.
  opt_in_shared_memory(reinterpret_cast<const void*>(kernel), T::kSmemBytes, device, "cuda paged decode",
                       /*max_carveout=*/true);
  const dim3 grid(static_cast<unsigned>(p.batch * p.heads_kv), static_cast<unsigned>(p.max_splits),
                  static_cast<unsigned>(row_blocks));
  launch_maybe_programmatic(kernel, grid, dim3(T::kThreads), T::kSmemBytes, stream, programmatic,
                            "paged decode kernel launch", p);
}

// The 16-row variant serves sequences with at most 16 packed rows, the 64-row one the others (each CTA checks);
// dense q has one row count for all, so one launch suffices; packed q with long and short sequences takes both.
template <class Element, int kDimQK, int kDimV>
void launch_decode(const DecodeParams& p, void* stream, int device, NarrowKernel narrow, bool programmatic) {
  constexpr DecodeShape kShape = decode_shape(kDimQK);
  constexpr int kParts = kShape.narrow_parts;
  const bool any_wide = p.seqlen_q * p.group > kNarrowRows;
  const bool any_narrow = !any_wide || p.cu_seqlens_q != nullptr;
  if (any_narrow) {  // a sequence it serves has at most 16 rows: one row block
    bool parted = false;
    if constexpr (kParts > 1) {
      parted = narrow.parts == kParts;
      if (parted && narrow.groups == kParts) {
        launch_decode_traits<DecodeTraits<Element, kDimQK, kDimV, 1, kBlockKeys, kShape.stages, kParts, kParts>>(
            p, stream, device, 1, programmatic);
      } else if (parted) {
        launch_decode_traits<DecodeTraits<Element, kDimQK, kDimV, 1, kBlockKeys, kShape.stages, kParts, 1>>(
            p, stream, device, 1, programmatic);
      }
    }
    if (!parted) {
      launch_decode_traits<DecodeTraits<Element, kDimQK, kDimV, 1, kBlockKeys, kShape.stages, 1, 1>>(
          p, stream, device, 1, programmatic);
    }
  }
  if (any_wide) {
    launch_decode_traits<DecodeTraits<Element, kDimQK, kDimV, 4, kBlockKeys, kShape.stages, 1, 1>>(
        p, stream, device, (p.seqlen_q * p.group + kWideRows - 1) / kWideRows, programmatic);
  }
}

}  // namespace ioattn::detail::paged

#define IOATTN_PAGED_INSTANTIATE(ELEMENT, DQK, DV) \
  template void launch_decode<ELEMENT, DQK, DV>(const DecodeParams&, void*, int, NarrowKernel, bool);
