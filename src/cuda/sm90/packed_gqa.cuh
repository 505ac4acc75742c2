// ioattn sm90 packed GQA, shared by the bf16 and FP8 forwards: a kv head's query heads in one query tile, row r =
// token r / group of head r % group, so that a tile of few queries is full and K and V are read once per tile
// instead of once per query head. When to pack, the packed query map, and its load.
#pragma once

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <cuda.h>
#include <cute/arch/copy_sm90_tma.hpp>

#include "api/problem.hpp"
#include "cuda/sm90/tma_view.cuh"
#include "ioattn/error.hpp"

namespace ioattn::detail::sm90 {

// IOATTN_SM90_PACK_GQA (read at every launch, like the variant): 0 never packs, 1 packs wherever it can (for tests
// and side-by-side timing); unset, pack_gqa_pays decides.
inline int pack_gqa_from_env() {
  const char* env = std::getenv("IOATTN_SM90_PACK_GQA");
  return env && *env ? std::atoi(env) : -1;
}

// Packing a kv head's query heads into one tile pays where a query tile of one head would be mostly empty (few
// queries: decoding with a draft, chunked prefill): the tile's share of valid rows, against what packing gives,
// with FlashAttention-3's margin (pack when one head per tile fills less than 90% of what packing fills). It also
// reads each kv head's K and V once per tile instead of once per query head.
inline bool pack_gqa_pays(std::int64_t seqlen_q, int group, int block_m) {
  const int tokens = block_m / group;
  const double one_head = double(seqlen_q) / double((seqlen_q + block_m - 1) / block_m * block_m);
  const double packed = double(seqlen_q * group) / double((seqlen_q + tokens - 1) / tokens * block_m);
  return one_head < 0.9 * packed;
}

// The query heads a tile of block_m rows holds: the group size where packing is possible and chosen, else 1. Not
// with ALiBi (its slope is per query head; the score-mod code takes one per tile).
inline int choose_pack_gqa(const Problem& p, int block_m) {
  const std::int64_t group = p.group_size();
  if (group < 2 || group > block_m || p.alibi_slopes != nullptr) return 1;
  const int forced = pack_gqa_from_env();
  if (forced == 0) return 1;
  if (forced < 0 && !pack_gqa_pays(p.seqlen_q, int(group), block_m)) return 1;
  const std::int64_t tokens = block_m / group;
  if ((p.seqlen_q + tokens - 1) / tokens * p.heads_kv * p.batch > INT_MAX) return 1;  // the grid's limit
  return int(group);
}

// The packed query map of a pack chosen by choose_pack_gqa, and the bytes one tile's loads bring. `pack` comes back
// as 1 where the driver refused the map (one head per tile, as without packing); loudly where packing was forced, so
// that a test which forces it cannot pass without it.
template <class Element>
void make_packed_q(const Problem& p, int dim, int block_m, std::int64_t rows_q, std::int64_t batches, int& pack,
                   CUtensorMap* map, std::uint32_t& tile_bytes) {
  if (pack <= 1) return;
  const int tokens = block_m / pack;
  tile_bytes = std::uint32_t(tokens * pack * dim * sizeof(Element));
  if (make_packed_q_map<Element>(map, p.q, dim, rows_q, p.heads_kv, pack, batches, tokens)) return;
  if (pack_gqa_from_env() == 1) {
    throw Error(ErrorCode::backend_failure, "IOATTN_SM90_PACK_GQA=1, but cuTensorMapEncodeTiled refused the packed "
                                            "query map (group " + std::to_string(pack) + ")");
  }
  pack = 1;
}

// The packed query tile from `token0` of kv head h_kv's group into sQ (kBlockM rows of kDim Elements, 128-byte
// swizzled), completing on `bar` (which expects the map's tile bytes): one load per 128-byte column block.
template <int kBlockM, int kDim, class Element>
__forceinline__ __device__ void load_packed_q(const CUtensorMap* map, std::uint64_t* bar, Element* sq, int token0,
                                              int h_kv, int batch) {
  constexpr int kCols = 128 / int(sizeof(Element));
  CUTE_UNROLL
  for (int c = 0; c < kDim / kCols; ++c) {
    cute::SM90_TMA_LOAD_5D::copy(map, bar, static_cast<std::uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL),
                                 sq + c * kBlockM * kCols, c * kCols, 0, token0, h_kv, batch);
  }
}

}  // namespace ioattn::detail::sm90
