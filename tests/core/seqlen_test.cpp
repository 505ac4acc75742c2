// core/seqlen.hpp: sequence spans of dense and packed layouts, and the clamp that keeps device-resident offsets the
// argument checks never read inside the packed tensors.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "ioattn/core/seqlen.hpp"

namespace ioattn::core {
namespace {

TEST(SeqSpan, DenseAndPacked) {
  const SeqSpan dense = seq_span(3, nullptr, nullptr, 5, 9);
  EXPECT_EQ(dense.q_offset, 0);
  EXPECT_EQ(dense.q_len, 5);
  EXPECT_EQ(dense.k_len, 9);
  const std::vector<std::int32_t> cu_q = {0, 2, 2, 7}, cu_k = {0, 4, 10, 11};
  const SeqSpan packed = seq_span(1, cu_q.data(), cu_k.data(), 0, 0);
  EXPECT_EQ(packed.q_offset, 2);
  EXPECT_EQ(packed.q_len, 0);
  EXPECT_EQ(packed.k_offset, 4);
  EXPECT_EQ(packed.k_len, 6);
}

TEST(SeqSpan, ClampToPackedKeepsGoodSpansAndBoundsBadOnes) {
  const SeqSpan good{2, 5, 4, 6};
  const SeqSpan kept = clamp_to_packed(good, 7, 10);
  EXPECT_EQ(kept.q_offset, 2);
  EXPECT_EQ(kept.q_len, 5);
  EXPECT_EQ(kept.k_offset, 4);
  EXPECT_EQ(kept.k_len, 6);
  // Offsets past the end, negative lengths, lengths running past the end: every row it reaches stays inside.
  const SeqSpan bad = clamp_to_packed(SeqSpan{9, 3, -4, 100}, 7, 10);
  EXPECT_EQ(bad.q_offset, 7);
  EXPECT_EQ(bad.q_len, 0);
  EXPECT_EQ(bad.k_offset, 0);
  EXPECT_EQ(bad.k_len, 10);
  const SeqSpan negative = clamp_to_packed(SeqSpan{3, -2, 8, 5}, 7, 10);
  EXPECT_EQ(negative.q_len, 0);
  EXPECT_EQ(negative.k_offset + negative.k_len, 10);
}

}  // namespace
}  // namespace ioattn::core
