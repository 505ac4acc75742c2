// ioattn sm90 forward epilogue: O by TMA stores, shared by the bf16 and FP8 forwards.
//
// Each consumer warpgroup writes its 64 rows of O by stmatrix into a shared-memory buffer of its own and a TMA
// store by its first thread takes them to global memory. Against a 4-byte global store per element pair from
// registers this is fewer instructions, and it is asynchronous: the warpgroup goes on to its next tile (persistent
// grid) or ends while the TMA unit writes. Measured on an H200 (2026-11-22, bf16, 16k tokens): +12-21% at head dim
// 128 and +14-26% at 256 for 512-1k tokens, -1..+6% from 4k (docs/PERF.md, twelfth session).
#pragma once

#include <cstdint>
#include <cstdlib>

#include <cute/arch/copy_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "api/problem.hpp"
#include "cuda/sm80/common/tile_ops.cuh"
#include "cuda/sm90/forward_mainloop.cuh"
#include "cuda/sm90/tile_scheduler.cuh"
#include "cuda/sm90/tma_view.cuh"

namespace ioattn::detail::sm90 {

using namespace cute;

// Layouts and types of the O buffers for a kernel whose other shared memory takes kOtherSmemBytes. The buffers hold
// kCols columns: all of O's where they fit (head dims 64 and 128), else half (256: 128 columns; 192/128: 64), and
// the store then goes chunk by chunk of columns.
template <class OutElement, int kBlockM, int kConsumerWarpgroups, int kDimV, int kBlockN, int kOtherSmemBytes>
struct OutStoreTraits {
  using Element = OutElement;
  static constexpr int kDimOut = kDimV;  // O's columns
  static constexpr int kWarpgroups = kConsumerWarpgroups;
  static constexpr int kRows = kBlockM / kConsumerWarpgroups;  // one warpgroup's rows
  static constexpr bool fits(int cols) {
    return kOtherSmemBytes + kBlockM * cols * int(sizeof(OutElement)) + 1024 <= 227 * 1024;
  }
  static constexpr int kCols = fits(kDimV) ? kDimV : kDimV / 2;
  static_assert(kCols % 64 == 0 && fits(kCols), "O's buffers: whole 128-byte swizzle atoms beside the rest");
  static constexpr int kChunks = kDimV / kCols;

  using SmemAtom = GMMA::Layout_K_SW128_Atom<OutElement>;
  using SmemLayoutHalf = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kRows>, Int<kCols>>{}));
  // (query row, column of the chunk) of the whole tile, each warpgroup's rows in its own contiguous buffer.
  using SmemLayoutHalves =
      decltype(tile_to_shape(SmemAtom{}, Shape<Int<kRows>, Int<kCols>, Int<kConsumerWarpgroups>>{}));
  using SmemLayout = decltype(composition(
      SmemLayoutHalves{}, Layout<Shape<Shape<Int<kRows>, Int<kConsumerWarpgroups>>, Int<kCols>>,
                                 Stride<Stride<_1, Int<kRows * kCols>>, Int<kRows>>>{}));
  static constexpr int kBufferElements = int(cosize_v<SmemLayout>);
  // P V's accumulator layout over one chunk of columns, for the stmatrix copy (it runs no products; the accumulator
  // layout is the same for 16-bit and FP8 inputs). A thread's values of chunk c are those of O's accumulator from
  // c * kCols / 2 on, as wgmma orders them by 8-column group last.
  using TiledMma = decltype(make_tiled_mma(
      GMMA::rs_op_selector<OutElement, OutElement, float, Shape<Int<kBlockM>, Int<kCols>, Int<kBlockN>>,
                           GMMA::Major::K, GMMA::Major::MN>(),
      Layout<Shape<Int<kConsumerWarpgroups>, _1, _1>>{}));

  // out as the tensor map sees it: (rows, dim, heads, batch).
  using GmemTensor = decltype(make_tensor(make_gmem_ptr(static_cast<OutElement const*>(nullptr)),
                                          Shape<int, int, int, int>{},
                                          Stride<std::int64_t, _1, std::int64_t, std::int64_t>{}));
  using Tma = decltype(make_tma_copy(SM90_TMA_STORE{}, GmemTensor{}, SmemLayoutHalf{},
                                     Shape<Int<kRows>, Int<kCols>>{}, _1{}));
};

// IOATTN_SM90_FWD_OUT_STORE (read at every launch, like IOATTN_SM90_PACK_GQA): unset or 0, O leaves by TMA stores
// where the tensor allows a tensor map; 1, always straight from registers (for tests and side-by-side timing).
inline bool out_tma_from_env() {
  const char* env = std::getenv("IOATTN_SM90_FWD_OUT_STORE");
  return !(env && *env && std::atoi(env) == 1);
}

// The store's tensor map over out as (rows, dim, heads, batch), into `tma`; false (O then leaves from registers)
// where IOATTN_SM90_FWD_OUT_STORE=1 or where no tensor map can describe out.
template <class OutStore>
bool make_out_tma(const Operand& out, std::int64_t rows, std::int64_t heads, std::int64_t batches,
                  typename OutStore::Tma& tma) {
  using Element = typename OutStore::Element;
  if (!out_tma_from_env() || !tma_describable(out, rows, heads, batches, sizeof(Element))) return false;
  tma = make_tma_copy(SM90_TMA_STORE{}, make_gmem_view<Element, OutStore::kDimOut>(out, rows, heads, batches),
                      typename OutStore::SmemLayoutHalf{}, Shape<Int<OutStore::kRows>, Int<OutStore::kCols>>{}, _1{});
  return true;
}

// One named barrier per consumer warpgroup for its buffer: after WarpgroupTurns' 1 and 2, the zeroing's 3 and the
// FP8 block descales' 4.
constexpr std::uint32_t kOutBufferBarrier = 5;  // + the consumer warpgroup (0, 1)

// Whether this warpgroup's rows of tile w go by TMA: one head per tile (packed GQA maps rows to heads), and for
// varlen only where the sequence holds all of them (the packed tensor map would write the next sequence's rows).
// Rows past a dense sequence's end fall outside the tensor map and are not written.
template <class OutStore, class Params>
__forceinline__ __device__ bool out_goes_by_tma(const Params& p, const TileWork& w, int consumer) {
  const int first_row = consumer * OutStore::kRows;
  return p.out_tma && p.pack_gqa == 1 &&
         (p.cu_seqlens_q == nullptr ? w.rows_here > first_row : w.rows_here >= first_row + OutStore::kRows);
}

// This consumer warpgroup's rows of acc_o (O in the P V accumulator's layout, already scaled) to out by TMA,
// chunk by chunk. The last store is left in flight; the next call, and out_store_drain at the kernel's end, wait
// for the buffer to have been read.
template <class OutStore, class OutElement, class Params, class AccO>
__forceinline__ __device__ void store_out_tma(const Params& p, OutElement* buffer, const AccO& acc_o,
                                              const TileWork& w, int consumer, int ctid) {
  constexpr int kRows = OutStore::kRows;
  constexpr int kCols = OutStore::kCols;
  typename OutStore::TiledMma mma_out;
  auto store = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, OutElement>{}, mma_out);
  auto thr_store = store.get_thread_slice(ctid);
  Tensor sOut = make_tensor(make_smem_ptr(buffer), typename OutStore::SmemLayout{});
  Tensor tOsOut = thr_store.partition_D(sOut);
  using ChunkLayout =
      decltype(partition_fragment_C(mma_out, Shape<Int<kRows * OutStore::kWarpgroups>, Int<kCols>>{}).layout());
  constexpr int kChunkValues = decltype(size(ChunkLayout{}))::value;
  static_assert(kChunkValues * OutStore::kChunks == decltype(size(acc_o))::value);
  Tensor rOut = sm80::convert_tensor<OutElement>(acc_o);

  const bool leader = ctid % 128 == 0;
  const std::uint32_t barrier = kOutBufferBarrier + consumer;
  const int bq = p.cu_seqlens_q != nullptr ? 0 : w.b;
  using HalfLayout = typename OutStore::SmemLayoutHalf;
  Tensor sHalf = make_tensor(make_smem_ptr(buffer + consumer * cosize_v<HalfLayout>), HalfLayout{});
  CUTE_UNROLL
  for (int chunk = 0; chunk < OutStore::kChunks; ++chunk) {
    if (leader) tma_store_wait<0>();  // this warpgroup's previous store has read its buffer
    cutlass::arch::NamedBarrier::sync(128, barrier);
    Tensor rChunk = make_tensor(rOut.data() + chunk * kChunkValues, ChunkLayout{});
    copy(store, thr_store.retile_S(rChunk), tOsOut);
    cutlass::arch::fence_view_async_shared();  // visible to the TMA unit (the async proxy)
    cutlass::arch::NamedBarrier::sync(128, barrier);
    if (leader) {
      Tensor mO = p.tma_out.get_tma_tensor(make_shape(p.map_rows_q, int(OutStore::kDimOut), p.heads_q, p.map_batch));
      Tensor gO = local_tile(domain_offset(make_coord(int(w.span.q_offset), _0{}), mO(_, _, w.h, bq)),
                             Shape<Int<kRows>, Int<kCols>>{},
                             make_coord(w.m_block * OutStore::kWarpgroups + consumer, chunk));
      auto cta = p.tma_out.get_slice(_0{});
      copy(p.tma_out, cta.partition_S(sHalf), cta.partition_D(gO));
      tma_store_arrive();
    }
  }
}

// This consumer warpgroup's rows of a finished tile to out: by TMA where out_goes_by_tma allows (returns true: a
// store may be in flight), else straight from registers (store_out, forward_mainloop.cuh), which also writes the
// rows that packed GQA maps to heads.
template <class OutStore, class OutElement, class Params, class AccO, class OCoords>
__forceinline__ __device__ bool store_out_tile(const Params& p, OutElement* buffer, const AccO& acc_o,
                                               const TileWork& w, const TileRows& rows, const OCoords& cO,
                                               int consumer, int ctid) {
  if (out_goes_by_tma<OutStore>(p, w, consumer)) {
    store_out_tma<OutStore>(p, buffer, acc_o, w, consumer, ctid);
    return true;
  }
  store_out<OutElement>(p, w.b, rows, cO, acc_o);
  return false;
}

// At the kernel's end, by every consumer thread: the buffers stay valid until the stores have read them.
__forceinline__ __device__ void out_store_drain(int ctid) {
  if (ctid % 128 == 0) tma_store_wait<0>();
}

}  // namespace ioattn::detail::sm90
