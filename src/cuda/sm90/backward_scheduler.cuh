// ioattn sm90 backward: which key tiles each CTA works on, in which order.
//
// An item is (key tile of kBlockN keys, kv head, sequence): the CTA that takes it walks every query tile of every
// query head of the group that sees those keys, and writes the item's dK and dV. Two orders (BackwardOrder):
//  - one_per_cta: a CTA per item, the key tiles of one (kv head, sequence) adjacent (from the first up; from the
//    last down for the deterministic dQ order, which also forces this order), so CTAs running together share
//    that head's Q and dO in L2. The hardware hands CTAs out as SMs free up, which balances uneven work, but each
//    CTA pays its prologue (K, V and the first Q, dO loads) and its epilogue (dK, dV stores, the last dQ reduce-add)
//    with nothing to overlap them: at short sequences, a few query tiles per item, that is much of the time.
//  - heavy_first: one CTA per SM looping over items, so the producer loads the next item's K, V and first Q, dO
//    tiles while the consumers finish this item's last tile and store its dK, dV. Under a causal mask the first key
//    tiles see the most query tiles, so items go by key tile from the first up (heaviest first), the (kv head,
//    sequence) pairs in turn for each, within sections of `section_pairs` pairs whose Q and dO fit in half the L2
//    (sorting across all heads at once would stream every head's Q and dO through the L2 for each key tile), and
//    are dealt out in a zigzag (round k: CTA c takes position k G + c when k is even, k G + G - 1 - c when odd) so
//    that each CTA's heavy items pair with light ones.
#pragma once

#include <cstdint>

namespace ioattn::detail::sm90 {

enum class BackwardOrder : int { one_per_cta = 0, heavy_first = 2 };

struct BackwardSchedule {
  int order;          // BackwardOrder
  bool keys_descending;  // one_per_cta: each pair's key tiles from the last down (the deterministic dQ order's)
  int num_n_blocks;   // key tiles per sequence (varlen: of the longest)
  int pairs;          // heads_kv * batch
  int section_pairs;  // heavy_first: pairs sorted together
  std::int64_t num_items;
};

struct BackwardItem {
  int n_block, h_kv, b;
};

// Rounds of the CTA loop: each round gives a CTA at most one item.
__forceinline__ __device__ std::int64_t backward_rounds(const BackwardSchedule& s) {
  if (s.order == int(BackwardOrder::one_per_cta)) return 1;
  return (s.num_items + gridDim.x - 1) / gridDim.x;
}

// The item position this CTA takes in round k; >= num_items: none (the last round's stragglers).
__forceinline__ __device__ std::int64_t backward_position(const BackwardSchedule& s, std::int64_t k) {
  const std::int64_t ctas = gridDim.x;
  if (s.order == int(BackwardOrder::one_per_cta)) return blockIdx.x;
  return k * ctas + ((k & 1) ? ctas - 1 - blockIdx.x : blockIdx.x);
}

// Position -> item. heads_kv: to split a pair into (kv head, sequence).
__forceinline__ __device__ BackwardItem backward_item(const BackwardSchedule& s, std::int64_t t, int heads_kv) {
  BackwardItem item;
  std::int64_t pair;
  if (s.order == int(BackwardOrder::one_per_cta)) {
    item.n_block = int(t % s.num_n_blocks);
    if (s.keys_descending) item.n_block = s.num_n_blocks - 1 - item.n_block;
    pair = t / s.num_n_blocks;
  } else {
    const std::int64_t per_section = std::int64_t(s.section_pairs) * s.num_n_blocks;
    const std::int64_t section = t / per_section;
    const std::int64_t first_pair = section * s.section_pairs;
    const std::int64_t pairs_here = s.pairs - first_pair < s.section_pairs ? s.pairs - first_pair : s.section_pairs;
    const std::int64_t r = t - section * per_section;
    item.n_block = int(r / pairs_here);
    pair = first_pair + r % pairs_here;
  }
  item.h_kv = int(pair % heads_kv);
  item.b = int(pair / heads_kv);
  return item;
}

}  // namespace ioattn::detail::sm90
