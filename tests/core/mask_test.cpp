// core/mask.hpp against a brute force that spells out the rule of attention.hpp directly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "ioattn/core/mask.hpp"
#include "support/random.hpp"

namespace {

using ioattn::core::MaskRule;
using ioattn::core::TileKind;

// The rule as attention.hpp states it, independent of MaskRule's arithmetic.
struct BruteRule {
  std::int64_t wl, wr, sq, sk;
  bool top_left;
  bool visible(std::int64_t i, std::int64_t j) const {
    const std::int64_t diag = i + (top_left ? 0 : sk - sq);
    if (j < 0 || j >= sk) return false;
    if (wl >= 0 && j < diag - wl) return false;
    if (wr >= 0 && j > diag + wr) return false;
    return true;
  }
};

std::string describe(const BruteRule& r) {
  return "window (" + std::to_string(r.wl) + ", " + std::to_string(r.wr) + ") seqlen " + std::to_string(r.sq) + "x" +
         std::to_string(r.sk) + (r.top_left ? " top-left" : " bottom-right") + " " + ioattn::test::seed_text();
}

std::int64_t draw_window(ioattn::test::Rng& rng, std::int64_t sk) {
  switch (rng.uniform_int(0, 3)) {
    case 0: return -1;
    case 1: return 0;
    case 2: return rng.uniform_int(0, 4);
    default: return rng.uniform_int(0, sk + 8);
  }
}

BruteRule draw_rule(ioattn::test::Rng& rng) {
  BruteRule r{};
  r.sq = rng.uniform_int(1, 48);
  r.sk = rng.uniform_int(1, 48);
  r.wl = draw_window(rng, r.sk);
  r.wr = draw_window(rng, r.sk);
  r.top_left = rng.uniform_int(0, 1) == 1;
  return r;
}

TEST(MaskRule, NamedMasksMatchTheDocumentedDiagonal) {
  // Causal bottom-right, 2 queries over 4 keys: row 0 sees keys 0..2, row 1 sees 0..3 (FlashAttention's convention).
  const MaskRule br = MaskRule::make(-1, 0, false, 2, 4);
  EXPECT_EQ(br.key_begin(0), 0);
  EXPECT_EQ(br.key_end(0), 3);
  EXPECT_EQ(br.key_end(1), 4);
  // Top-left (PyTorch's is_causal): row 0 sees key 0 only.
  const MaskRule tl = MaskRule::make(-1, 0, true, 2, 4);
  EXPECT_EQ(tl.key_end(0), 1);
  EXPECT_EQ(tl.key_end(1), 2);
  // Bottom-right with more queries than keys: the first rows see nothing.
  const MaskRule empty_rows = MaskRule::make(-1, 0, false, 5, 2);
  EXPECT_TRUE(empty_rows.row_empty(0));
  EXPECT_TRUE(empty_rows.row_empty(2));
  EXPECT_FALSE(empty_rows.row_empty(3));
  // No mask: everything visible.
  const MaskRule none = MaskRule::make(-1, -1, false, 3, 7);
  EXPECT_EQ(none.key_begin(2), 0);
  EXPECT_EQ(none.key_end(0), 7);
}

TEST(MaskRule, VisibleAndKeyRangeAgreeWithBruteForce) {
  ioattn::test::Rng rng("MaskRule.Visible");
  for (int trial = 0; trial < 3000; ++trial) {
    const BruteRule r = draw_rule(rng);
    const MaskRule rule = MaskRule::make(r.wl, r.wr, r.top_left, r.sq, r.sk);
    for (std::int64_t i = 0; i < r.sq; ++i) {
      std::int64_t first = -1, last = -1;
      for (std::int64_t j = 0; j < r.sk; ++j) {
        const bool want = r.visible(i, j);
        ASSERT_EQ(rule.visible(i, j), want) << describe(r) << " i " << i << " j " << j;
        if (want && first < 0) first = j;
        if (want) last = j;
      }
      ASSERT_EQ(rule.row_empty(i), first < 0) << describe(r) << " i " << i;
      if (first >= 0) {
        // The visible keys of a row are one interval: [key_begin, key_end).
        ASSERT_EQ(rule.key_begin(i), first) << describe(r) << " i " << i;
        ASSERT_EQ(rule.key_end(i), last + 1) << describe(r) << " i " << i;
      }
    }
  }
}

TEST(MaskRule, ClassifyIsNeverWrongAboutSkipOrFull) {
  ioattn::test::Rng rng("MaskRule.Classify");
  int seen[3] = {0, 0, 0};
  for (int trial = 0; trial < 20000; ++trial) {
    const BruteRule r = draw_rule(rng);
    const MaskRule rule = MaskRule::make(r.wl, r.wr, r.top_left, r.sq, r.sk);
    const std::int64_t qb = rng.uniform_int(0, r.sq - 1);
    const std::int64_t qe = rng.uniform_int(qb + 1, r.sq);
    const std::int64_t kb = rng.uniform_int(0, r.sk - 1);
    const std::int64_t ke = rng.uniform_int(kb + 1, r.sk);
    std::int64_t visible = 0;
    for (std::int64_t i = qb; i < qe; ++i) {
      for (std::int64_t j = kb; j < ke; ++j) visible += r.visible(i, j) ? 1 : 0;
    }
    const std::int64_t pairs = (qe - qb) * (ke - kb);
    const TileKind kind = rule.classify(qb, qe, kb, ke);
    ++seen[static_cast<int>(kind)];
    const std::string where = describe(r) + " tile q [" + std::to_string(qb) + ", " + std::to_string(qe) + ") k [" +
                              std::to_string(kb) + ", " + std::to_string(ke) + ")";
    if (kind == TileKind::skip) ASSERT_EQ(visible, 0) << where;
    if (kind == TileKind::full) ASSERT_EQ(visible, pairs) << where;
    // Exact where it matters for speed: a fully visible tile runs mask-free, a mixed one is partial.
    if (visible == pairs) ASSERT_EQ(kind, TileKind::full) << where;
    if (visible > 0 && visible < pairs) ASSERT_EQ(kind, TileKind::partial) << where;
    // The documented slack: an invisible tile may be called partial only when a row at one end sees nothing.
    if (visible == 0 && kind != TileKind::skip) {
      ASSERT_TRUE(rule.row_empty(qb) || rule.row_empty(qe - 1)) << where;
    }
  }
  // The draw must exercise all three answers, or the checks above prove little.
  EXPECT_GT(seen[0], 100);
  EXPECT_GT(seen[1], 100);
  EXPECT_GT(seen[2], 100);
}

TEST(MaskRule, TileKeyRangeCoversEveryVisibleKey) {
  ioattn::test::Rng rng("MaskRule.TileKeyRange");
  for (int trial = 0; trial < 5000; ++trial) {
    const BruteRule r = draw_rule(rng);
    const MaskRule rule = MaskRule::make(r.wl, r.wr, r.top_left, r.sq, r.sk);
    const std::int64_t qb = rng.uniform_int(0, r.sq - 1);
    const std::int64_t qe = rng.uniform_int(qb + 1, r.sq);
    const std::int64_t begin = rule.tile_key_begin(qb), end = rule.tile_key_end(qe);
    for (std::int64_t i = qb; i < qe; ++i) {
      for (std::int64_t j = 0; j < r.sk; ++j) {
        if (r.visible(i, j)) ASSERT_TRUE(j >= begin && j < end) << describe(r) << " i " << i << " j " << j;
      }
    }
  }
}

// query_tiles_seeing must name exactly the query tiles classify would not skip (the backward kernels walk that run
// and nothing else), for random masks, tile sizes and key ranges.
TEST(MaskRule, QueryTilesSeeingIsTheRunClassifyKeeps) {
  ioattn::test::Rng rng("MaskRule.QueryTilesSeeing");
  int empty_runs = 0, partial_runs = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const BruteRule r = draw_rule(rng);
    const MaskRule rule = MaskRule::make(r.wl, r.wr, r.top_left, r.sq, r.sk);
    const int block = static_cast<int>(rng.uniform_int(1, 9));
    const std::int64_t kb = rng.uniform_int(0, r.sk - 1);
    const std::int64_t ke = rng.uniform_int(kb + 1, r.sk);
    const MaskRule::TileRun run = rule.query_tiles_seeing(kb, ke, block, r.sq);
    const int tiles = static_cast<int>((r.sq + block - 1) / block);
    const std::string where = describe(r) + " block " + std::to_string(block) + " k [" + std::to_string(kb) + ", " +
                              std::to_string(ke) + ")";
    ASSERT_LE(0, run.first) << where;
    ASSERT_LE(run.first, run.last) << where;
    ASSERT_LE(run.last, tiles) << where;
    for (int m = 0; m < tiles; ++m) {
      const std::int64_t qb = std::int64_t(m) * block, qe = std::min<std::int64_t>(qb + block, r.sq);
      const bool kept = rule.classify(qb, qe, kb, ke) != TileKind::skip;
      ASSERT_EQ(kept, m >= run.first && m < run.last) << where << " tile " << m;
    }
    empty_runs += run.first == run.last ? 1 : 0;
    partial_runs += run.first > 0 || run.last < tiles ? 1 : 0;
  }
  // Both kinds of answer must come up, or the check above proves little.
  EXPECT_GT(empty_runs, 100);
  EXPECT_GT(partial_runs, 1000);
}

}  // namespace
