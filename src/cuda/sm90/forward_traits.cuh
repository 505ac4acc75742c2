// ioattn sm90 forward: tile shapes, shared-memory layouts, the two wgmma tilings and the TMA copy types of one
// (element type, head dims, key tile) configuration. kDim is the head dim of q and k, kDimV that of v and the
// output (192 / 128 for MLA-style models; equal otherwise).
//
// One CTA = one producer warpgroup (a single thread issues every TMA load) + two consumer warpgroups, each owning
// 64 rows of the kBlockM = 128 query tile. S = Q K^T is a wgmma with both operands in shared memory; O += P V takes
// P from registers (the S accumulator, converted in place) and V from shared memory read MN-major (transposed view).
#pragma once

#include <cstdint>

#include <cuda.h>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include "cuda/sm90/out_store.cuh"

namespace ioattn::detail::sm90 {

using namespace cute;

template <class Element_, int kDim_, int kBlockN_, int kStages_ = 2, int kDimV_ = kDim_>
struct ForwardTraits {
  using Element = Element_;
  static constexpr int kDim = kDim_;
  static constexpr int kDimV = kDimV_;
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;
  static constexpr int kConsumerWarpgroups = 2;
  static constexpr int kConsumerThreads = 128 * kConsumerWarpgroups;
  static constexpr int kThreads = 128 + kConsumerThreads;
  // setmaxnreg budgets: 24 * 128 + 240 * 256 = 64512 of the SM's 65536 registers. The producer only computes
  // addresses; the consumers hold S (64 x kBlockN) and O (64 x kDimV) accumulators.
  static constexpr int kProducerRegisters = 24;
  static constexpr int kConsumerRegisters = 240;

  using TileShapeQK = Shape<Int<kBlockM>, Int<kBlockN>, Int<kDim>>;  // (M, N, K) of S = Q K^T
  using TileShapePV = Shape<Int<kBlockM>, Int<kDimV>, Int<kBlockN>>;  // (M, N, K) of O = P V
  using AtomLayout = Layout<Shape<Int<kConsumerWarpgroups>, _1, _1>>;  // warpgroups stacked along M
  using TiledMmaQK =
      decltype(make_tiled_mma(GMMA::ss_op_selector<Element, Element, float, TileShapeQK>(), AtomLayout{}));
  using TiledMmaPV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, TileShapePV, GMMA::Major::K, GMMA::Major::MN>(), AtomLayout{}));

  // Every head dim here is a multiple of 64 elements (128 bytes): the 128-byte swizzle, K-major, fits all operands.
  using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;
  using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kDim>>{}));
  using SmemLayoutK = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockN>, Int<kDim>, Int<kStages>>{}));
  using SmemLayoutV = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockN>, Int<kDimV>, Int<kStages>>{}));
  // V seen as (dim, key, stage): the B operand of P V, MN-major.
  using SmemLayoutVt = decltype(composition(
      SmemLayoutV{}, make_ordered_layout(Shape<Int<kDimV>, Int<kBlockN>, Int<kStages>>{}, Step<_2, _1, _3>{})));

  // Global tensors as the tensor maps see them: (rows, dim, heads, batch). Dense: rows = seqlen; varlen: rows =
  // the packed total and batch = 1. Rows past the extent arrive as zeros.
  using GmemShape = Shape<int, int, int, int>;
  using GmemStride = Stride<std::int64_t, _1, std::int64_t, std::int64_t>;
  using GmemTensor =
      decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)), GmemShape{}, GmemStride{}));
  using TmaQ = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutQ{},
                                      Shape<Int<kBlockM>, Int<kDim>>{}, _1{}));
  using TmaK = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, take<0, 2>(SmemLayoutK{}),
                                      Shape<Int<kBlockN>, Int<kDim>>{}, _1{}));
  using TmaV = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, take<0, 2>(SmemLayoutV{}),
                                      Shape<Int<kBlockN>, Int<kDimV>>{}, _1{}));

  // The epilogue's O buffers and TMA store (out_store.cuh), beside Q, K and V.
  using OutStore = OutStoreTraits<Element, kBlockM, kConsumerWarpgroups, kDimV, kBlockN,
                                  (kBlockM * kDim + kStages * kBlockN * (kDim + kDimV)) * int(sizeof(Element))>;

  // A TMA load always delivers its whole box (zeros past the tensor's end), so these are exact.
  static constexpr std::uint32_t kBytesQ = kBlockM * kDim * sizeof(Element);
  static constexpr std::uint32_t kBytesK = kBlockN * kDim * sizeof(Element);
  static constexpr std::uint32_t kBytesV = kBlockN * kDimV * sizeof(Element);

  using Pipeline = cutlass::PipelineTmaAsync<kStages>;

  struct SharedStorage {
    // 128-byte swizzled tiles repeat every 1024 bytes; wgmma descriptors assume that alignment.
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cosize_v<SmemLayoutV>> v;
    alignas(1024) cute::array_aligned<Element, OutStore::kBufferElements> out;
    typename Pipeline::SharedStorage pipe_k;
    typename Pipeline::SharedStorage pipe_v;
    alignas(8) std::uint64_t bar_q;        // Q landed (TMA transaction bytes)
    alignas(8) std::uint64_t bar_q_empty;  // both consumer warpgroups are done with Q (persistent reuse)
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
};

// The kernel's parameter block; passed as a __grid_constant__ so the tensor maps stay in parameter memory, where
// the TMA unit may read them.
template <class Traits>
struct ForwardParams {
  typename Traits::TmaQ tma_q;
  typename Traits::TmaK tma_k;
  typename Traits::TmaV tma_v;
  typename Traits::OutStore::Tma tma_out;  // valid when out_tma
  bool out_tma;                            // O may leave by TMA stores (a tensor map can describe out)
  // Packed GQA (pack_gqa > 1): a query tile holds kBlockM / pack_gqa tokens of all pack_gqa = group_size query heads
  // of one kv head, row r = token r / pack_gqa, head r % pack_gqa (so a kv head's K and V are read once per tile,
  // not once per query head); Q then comes through this map (make_packed_q_map), q_tile_bytes per tile.
  CUtensorMap tma_q_packed;
  std::uint32_t q_tile_bytes;
  int pack_gqa;  // query heads per tile: 1 (one head per tile) or group_size
  int map_rows_q, map_rows_k;  // the tensor maps' row extents
  int heads_q, heads_kv;
  int map_batch;  // the tensor maps' batch extent: batch (dense) or 1 (varlen)
  int batch;      // sequences

  void* out;
  std::int64_t o_batch_stride, o_row_stride, o_head_stride;
  float* lse;  // null: not wanted
  std::int64_t lse_batch_stride, lse_row_stride, lse_head_stride;

  const std::int32_t* cu_seqlens_q;  // device, [batch + 1]; null for dense
  const std::int32_t* cu_seqlens_k;
  std::int64_t total_q, total_k;
  int seqlen_q, seqlen_k;  // dense: every sequence's; varlen: the max (sizes the grid)
  int group_size;          // query heads per kv head

  float scale;       // softmax scale (> 0: forward_unsupported)
  float scale_log2;  // scale * log2(e): raw products to base-2 exponents
  const float* sinks;  // [heads_q]; null: none
  std::int64_t window_left, window_right;
  bool top_left;
  int num_m_blocks;
  // Read by the score-mod kernels only (kScoreMod); last in the block so the plain kernels' offsets stay put.
  float softcap;              // > 0: cap * tanh(s / cap)
  const float* alibi_slopes;  // element (b, h) at b * alibi_batch_stride + h; null: none
  std::int64_t alibi_batch_stride;
  // Varlen: zero the V rows a partial last key tile reads past the sequence's end (zero_v_rows). Off only through
  // IOATTN_SM90_UNSAFE_VARLEN_OVERHANG, so that a test can show it catches the leak.
  bool clear_v_overhang;
  int section_heads;  // TileOrder::heavy_first: (head, sequence) pairs sorted together (tile_scheduler.cuh)
};

}  // namespace ioattn::detail::sm90
