// ioattn sm90 FP8 forward: tile shapes, shared-memory layouts, the two wgmma tilings, the TMA copy types and the
// parameter block of one (output type, head dim, key tile) configuration. Q, K and V are e4m3 codes.
//
// FP8 wgmma reads both operands K-major (contiguous along the reduction), which suits S = Q K^T (both rows of head
// dim) but not O = P V, whose reduction runs over keys while V's rows are keys. So V lands by TMA in a staging
// buffer and is transposed in shared memory into Vt (head dim x keys) by the producer warpgroup's spare warps; and P
// goes to P V from registers, its accumulator values placed in the A operand's register slots as they fall
// (fp8_kernel.cuh, p_as_a_operand), with Vt's key order permuted to match, so that no value moves between threads.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda.h>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include "cuda/sm90/out_store.cuh"

namespace ioattn::detail::sm90 {

using namespace cute;

template <class OutElement_, int kDim_, int kBlockN_>
struct Fp8ForwardTraits {
  using Element = cutlass::float_e4m3_t;
  using OutElement = OutElement_;
  static constexpr int kDim = kDim_;
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = kBlockN_;
  // Stages of K, staged V and Vt each. Four measured no faster on an H200 (2026-11-21: -4..+6% against two at
  // D 128 and 256, 4k and 16k tokens, within the run's spread).
  static constexpr int kStages = 2;
  static constexpr int kConsumerWarpgroups = 2;
  static constexpr int kConsumerThreads = 128 * kConsumerWarpgroups;
  static constexpr int kTransposeThreads = 96;  // warps 1-3 of the producer warpgroup
  static constexpr int kThreads = 128 + kConsumerThreads;
  // setmaxnreg budgets: 40 * 128 + 232 * 256 = 64512 of 65536. The transposing warps need a few more registers
  // than a lone TMA issuer; the consumers hold S (64 x kBlockN) and O (64 x kDim) in fp32.
  static constexpr int kProducerRegisters = 40;
  static constexpr int kConsumerRegisters = 232;
  // P is stored as e4m3 scaled by 2^8 (exact), so that probabilities down to 2^-17 stay normal numbers (e4m3's
  // smallest normal is 2^-6); the epilogue divides it out.
  static constexpr float kPScale = 256.0f;
  static constexpr float kPScaleLog2 = 8.0f;

  static_assert(kDim % 64 == 0 && kBlockN % 32 == 0, "wgmma k-slices of 32 fp8 values, 128-byte rows");

  using TileShapeQK = Shape<Int<kBlockM>, Int<kBlockN>, Int<kDim>>;  // (M, N, K) of S = Q K^T
  using TileShapePV = Shape<Int<kBlockM>, Int<kDim>, Int<kBlockN>>;  // (M, N, K) of O = P V
  using AtomLayout = Layout<Shape<Int<kConsumerWarpgroups>, _1, _1>>;  // warpgroups stacked along M
  using TiledMmaQK =
      decltype(make_tiled_mma(GMMA::ss_op_selector<Element, Element, float, TileShapeQK>(), AtomLayout{}));
  using TiledMmaPV =
      decltype(make_tiled_mma(GMMA::rs_op_selector<Element, Element, float, TileShapePV>(), AtomLayout{}));

  // 128-byte swizzled, K-major: 128 fp8 values per row.
  using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;
  using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kDim>>{}));
  using SmemLayoutK = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockN>, Int<kDim>, Int<kStages>>{}));
  using SmemLayoutV = SmemLayoutK;  // the staging buffer, as TMA writes it: (key, dim, stage)
  // Vt's rows are kBlockN keys: 128 bytes at 128 keys, 64 at 64 keys (the 64-byte swizzle).
  using SmemAtomVt =
      std::conditional_t<kBlockN % 128 == 0, SmemAtom, GMMA::Layout_K_SW64_Atom<Element>>;
  using SmemLayoutVt = decltype(tile_to_shape(SmemAtomVt{}, Shape<Int<kDim>, Int<kBlockN>, Int<kStages>>{}));

  // Global tensors as the tensor maps see them: (rows, dim, heads, batch); rows past the extent arrive as zeros.
  using GmemShape = Shape<int, int, int, int>;
  using GmemStride = Stride<std::int64_t, _1, std::int64_t, std::int64_t>;
  using GmemTensor =
      decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)), GmemShape{}, GmemStride{}));
  using TmaQ = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutQ{},
                                      Shape<Int<kBlockM>, Int<kDim>>{}, _1{}));
  using TmaKV = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, take<0, 2>(SmemLayoutK{}),
                                       Shape<Int<kBlockN>, Int<kDim>>{}, _1{}));

  static constexpr std::uint32_t kBytesQ = kBlockM * kDim;
  static constexpr std::uint32_t kBytesKV = kBlockN * kDim;

  using PipelineK = cutlass::PipelineTmaAsync<kStages>;

  // The epilogue's O buffers and TMA store (out_store.cuh), beside Q, K, staged V and Vt.
  using OutStore = OutStoreTraits<OutElement, kBlockM, kConsumerWarpgroups, kDim, kBlockN,
                                  kBlockM * kDim + 3 * kStages * kBlockN * kDim>;

  struct SharedStorage {
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutV>> v;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutVt>> vt;
    alignas(1024) cute::array_aligned<OutElement, OutStore::kBufferElements> out;
    typename PipelineK::SharedStorage pipe_k;
    alignas(8) std::uint64_t bar_q;               // Q landed (TMA bytes)
    alignas(8) std::uint64_t v_full[kStages];     // V staged (TMA bytes)
    alignas(8) std::uint64_t v_empty[kStages];    // the transposing warps are done with the staged V
    alignas(8) std::uint64_t vt_full[kStages];    // Vt written (every transposing thread)
    alignas(8) std::uint64_t vt_empty[kStages];   // every consumer thread is done with Vt
    float v_descale_max[kConsumerThreads / 32];   // block descales: each consumer warp's largest V descale
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static_assert(kSmemBytes <= 227 * 1024);
};

// A descale tensor on the device: the factor of (batch b, head h, sequence row i) at ptr[b * batch_stride +
// h * head_stride + (i >> block_shift) * block_stride]; block_stride 0 when there is one factor per (b, h).
struct Fp8DescaleView {
  const float* ptr;
  std::int64_t batch_stride, head_stride, block_stride;
  int block_shift;
  __forceinline__ __device__ float at(int b, int h) const { return ptr[b * batch_stride + h * head_stride]; }
  __forceinline__ __device__ float at(int b, int h, int row) const {
    return ptr[b * batch_stride + h * head_stride + (row >> block_shift) * block_stride];
  }
};

// The kernel's parameter block (a __grid_constant__: the tensor maps stay in parameter memory for the TMA unit).
template <class Traits>
struct Fp8ForwardParams {
  typename Traits::TmaQ tma_q;
  typename Traits::TmaKV tma_k;
  typename Traits::TmaKV tma_v;
  typename Traits::OutStore::Tma tma_out;  // valid when out_tma
  bool out_tma;                            // O may leave by TMA stores (a tensor map can describe out)
  int map_rows_q, map_rows_k;  // the tensor maps' row extents (seqlen_q, seqlen_k: dense only)
  int map_batch;               // the tensor maps' batch extent (= batch)
  int heads_q, heads_kv;
  int batch;
  int seqlen_q, seqlen_k;
  int group_size;  // query heads per kv head
  int num_m_blocks;
  Fp8DescaleView q_descale, k_descale, v_descale;
  int descale_blocks_k;  // block descales: the blocks of keys of a sequence (ceil(seqlen_k / block_rows))

  void* out;
  std::int64_t o_batch_stride, o_row_stride, o_head_stride;
  float* lse;  // null: not wanted
  std::int64_t lse_batch_stride, lse_row_stride, lse_head_stride;

  float scale;  // softmax scale (> 0), before the descales
  const float* sinks;  // [heads_q]; null: none
  std::int64_t window_left, window_right;
  bool top_left;
  // resolve_tile (tile_scheduler.cuh) reads these too; dense problems have no sequence offsets.
  const std::int32_t* cu_seqlens_q = nullptr;
  const std::int32_t* cu_seqlens_k = nullptr;
  std::int64_t total_q = 0, total_k = 0;
  // Packed GQA (packed_gqa.cuh; per-head descales only): pack_gqa query heads per tile, Q through tma_q_packed.
  int pack_gqa = 1;
  CUtensorMap tma_q_packed;
  std::uint32_t q_tile_bytes = 0;
};

}  // namespace ioattn::detail::sm90
