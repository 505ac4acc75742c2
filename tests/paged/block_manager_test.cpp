// The KV-cache block manager: each operation and each error on its own, then a randomized model test that drives
// thousands of operations against a shadow KV memory and checks that every sequence reads back its own tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "ioattn/block_manager.hpp"
#include "ioattn/error.hpp"
#include "support/random.hpp"

namespace ioattn {
namespace {

using Pages = std::vector<std::int32_t>;

Pages pages_of(const BlockManager& bm, SequenceId seq) {
  auto span = bm.pages(seq);
  return Pages(span.begin(), span.end());
}

// Runs `call`, which must throw ioattn::Error with `code` and a message holding every fragment.
template <class Call>
void expect_error(Call&& call, ErrorCode code, const std::vector<std::string>& fragments) {
  try {
    call();
    ADD_FAILURE() << "expected an ioattn::Error, none was thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const std::string& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

void expect_invalid(auto&& call, const std::vector<std::string>& fragments) {
  expect_error(call, ErrorCode::invalid_argument, fragments);
}

// Every observable of a manager, for checking that a rejected call changed nothing.
struct Snapshot {
  std::int32_t free_pages = 0;
  std::int64_t num_sequences = 0;
  std::vector<std::int32_t> ref_counts;
  std::map<SequenceId, std::pair<std::int64_t, Pages>> sequences;
  bool operator==(const Snapshot&) const = default;
};

// Ids are issued from 0 up, so every live id lies below `id_limit` when id_limit exceeds the last one issued.
Snapshot snapshot(const BlockManager& bm, SequenceId id_limit) {
  Snapshot s;
  s.free_pages = bm.num_free_pages();
  s.num_sequences = bm.num_sequences();
  for (std::int32_t p = 0; p < bm.num_pages(); ++p) s.ref_counts.push_back(bm.ref_count(p));
  for (SequenceId id = 0; id < id_limit; ++id) {
    if (bm.contains(id)) s.sequences[id] = {bm.length(id), pages_of(bm, id)};
  }
  return s;
}

// ---------------------------------------------------------------------------------------------- unit tests

TEST(BlockManager, ConstructionRejectsBadSizes) {
  expect_invalid([] { BlockManager(0, 16); }, {"num_pages", ">= 1", "got 0"});
  expect_invalid([] { BlockManager(-3, 16); }, {"num_pages", "got -3"});
  expect_invalid([] { BlockManager(8, 0); }, {"page_size", ">= 1", "got 0"});
  expect_invalid([] { BlockManager(8, -1); }, {"page_size", "got -1"});
  expect_invalid([] { BlockManager(1 << 24, 256); }, {"num_pages", "int32"});
  BlockManager bm(5, 7);
  EXPECT_EQ(bm.num_pages(), 5);
  EXPECT_EQ(bm.page_size(), 7);
  EXPECT_EQ(bm.num_free_pages(), 5);
  EXPECT_EQ(bm.num_sequences(), 0);
}

TEST(BlockManager, IdsAreNeverReused) {
  BlockManager bm(4, 4);
  const SequenceId a = bm.add_sequence();
  const SequenceId b = bm.add_sequence();
  EXPECT_NE(a, b);
  bm.free(a);
  EXPECT_FALSE(bm.contains(a));
  const SequenceId c = bm.add_sequence();
  EXPECT_NE(c, a);
  EXPECT_NE(c, b);
  EXPECT_TRUE(bm.contains(b) && bm.contains(c));
  EXPECT_EQ(bm.length(c), 0);
  EXPECT_TRUE(bm.pages(c).empty());
}

TEST(BlockManager, AppendAllocatesPagesAsNeededForEveryPageSize) {
  for (std::int32_t page_size : {1, 3, 16, 64, 256}) {
    SCOPED_TRACE("page_size " + std::to_string(page_size));
    BlockManager bm(12, page_size);
    const SequenceId s = bm.add_sequence();
    std::vector<std::int32_t> slots{-7};
    std::vector<BlockCopy> copies{{9, 9}};
    std::int64_t length = 0;
    for (std::int64_t n : {std::int64_t{1}, std::int64_t{page_size}, std::int64_t{2 * page_size + 1}, std::int64_t{0},
                           std::int64_t{page_size - 1}}) {
      const std::int64_t expect_new = (length + n + page_size - 1) / page_size - (length + page_size - 1) / page_size;
      EXPECT_EQ(bm.pages_needed(s, n), expect_new);
      const std::int32_t free_before = bm.num_free_pages();
      bm.append(s, n, slots, copies);
      EXPECT_EQ(free_before - bm.num_free_pages(), expect_new);
      EXPECT_TRUE(copies.empty());  // a private sequence never copies
      ASSERT_EQ(static_cast<std::int64_t>(slots.size()), n);
      const Pages pages = pages_of(bm, s);
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t t = length + i;
        EXPECT_EQ(slots[i], pages[t / page_size] * page_size + t % page_size) << "token " << t;
      }
      length += n;
      EXPECT_EQ(bm.length(s), length);
      EXPECT_EQ(static_cast<std::int64_t>(pages.size()), (length + page_size - 1) / page_size);
    }
    // A fresh pool hands out pages in address order, so one sequence's slots are 0, 1, 2, ...
    const Pages pages = pages_of(bm, s);
    for (std::size_t i = 0; i < pages.size(); ++i) EXPECT_EQ(pages[i], static_cast<std::int32_t>(i));
  }
}

TEST(BlockManager, ForkSharesPagesAndCopiesOnWrite) {
  BlockManager bm(8, 4);
  std::vector<std::int32_t> slots;
  std::vector<BlockCopy> copies;
  const SequenceId a = bm.add_sequence();
  bm.append(a, 6, slots, copies);  // pages 0 (full) and 1 (2 of 4 used)
  const SequenceId b = bm.fork(a);
  EXPECT_EQ(bm.length(b), 6);
  EXPECT_EQ(pages_of(bm, b), pages_of(bm, a));
  EXPECT_EQ(bm.ref_count(0), 2);
  EXPECT_EQ(bm.ref_count(1), 2);
  EXPECT_EQ(bm.num_free_pages(), 6);  // a fork allocates nothing

  EXPECT_EQ(bm.pages_needed(b, 1), 1);  // the copy of the shared, partly filled page
  bm.append(b, 1, slots, copies);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, 1);
  const std::int32_t own = copies[0].dst;
  EXPECT_NE(own, 0);
  EXPECT_NE(own, 1);
  EXPECT_EQ(pages_of(bm, b), (Pages{0, own}));
  EXPECT_EQ(slots, (std::vector<std::int32_t>{own * 4 + 2}));
  EXPECT_EQ(bm.ref_count(0), 2);  // full pages stay shared
  EXPECT_EQ(bm.ref_count(1), 1);
  EXPECT_EQ(bm.ref_count(own), 1);

  // a's last page is private again: it writes in place.
  EXPECT_EQ(bm.pages_needed(a, 2), 0);
  bm.append(a, 2, slots, copies);
  EXPECT_TRUE(copies.empty());
  EXPECT_EQ(slots, (std::vector<std::int32_t>{1 * 4 + 2, 1 * 4 + 3}));

  // Forking at a page boundary shares only full pages: appending needs a new page and no copy.
  const SequenceId c = bm.fork(a);  // a: 8 tokens, pages 0 and 1 both full
  EXPECT_EQ(bm.pages_needed(c, 1), 1);
  bm.append(c, 1, slots, copies);
  EXPECT_TRUE(copies.empty());
  EXPECT_EQ(bm.pages(c).size(), 3u);
  EXPECT_EQ(bm.ref_count(1), 2);
}

TEST(BlockManager, CopyOnWriteAndNewPagesInOneAppend) {
  BlockManager bm(8, 4);
  std::vector<std::int32_t> slots;
  std::vector<BlockCopy> copies;
  const SequenceId a = bm.add_sequence();
  bm.append(a, 3, slots, copies);
  const SequenceId b = bm.fork(a);
  EXPECT_EQ(bm.pages_needed(b, 6), 3);  // the copy (room for 1) + 2 new pages for the other 5
  bm.append(b, 6, slots, copies);
  ASSERT_EQ(copies.size(), 1u);
  const Pages pb = pages_of(bm, b);
  ASSERT_EQ(pb.size(), 3u);
  EXPECT_EQ(copies[0], (BlockCopy{0, pb[0]}));
  EXPECT_EQ(slots, (std::vector<std::int32_t>{pb[0] * 4 + 3, pb[1] * 4, pb[1] * 4 + 1, pb[1] * 4 + 2, pb[1] * 4 + 3,
                                              pb[2] * 4}));
  EXPECT_EQ(bm.num_free_pages(), 8 - 1 - 3);
}

TEST(BlockManager, PrefixSharing) {
  BlockManager bm(8, 4);
  std::vector<std::int32_t> slots;
  std::vector<BlockCopy> copies;
  const SequenceId donor = bm.add_sequence();
  bm.append(donor, 10, slots, copies);  // pages 0, 1 (full), 2 (half)
  const SequenceId p5 = bm.add_sequence_with_prefix(donor, 5);
  EXPECT_EQ(bm.length(p5), 5);
  EXPECT_EQ(pages_of(bm, p5), (Pages{0, 1}));
  const SequenceId p8 = bm.add_sequence_with_prefix(donor, 8);
  EXPECT_EQ(pages_of(bm, p8), (Pages{0, 1}));
  const SequenceId p0 = bm.add_sequence_with_prefix(donor, 0);
  EXPECT_EQ(bm.length(p0), 0);
  EXPECT_TRUE(bm.pages(p0).empty());
  EXPECT_EQ(bm.ref_count(0), 3);
  EXPECT_EQ(bm.ref_count(1), 3);
  EXPECT_EQ(bm.ref_count(2), 1);
  EXPECT_EQ(bm.num_free_pages(), 5);

  // p5 ends inside page 1, which donor and p8 also hold: its first append copies; the donor's does not.
  bm.append(p5, 1, slots, copies);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, 1);
  bm.append(donor, 1, slots, copies);
  EXPECT_TRUE(copies.empty());

  expect_invalid([&] { bm.add_sequence_with_prefix(donor, 12); }, {"prefix_tokens", "0 to 11", "got 12"});
  expect_invalid([&] { bm.add_sequence_with_prefix(donor, -1); }, {"prefix_tokens", "got -1"});
  expect_invalid([&] { bm.add_sequence_with_prefix(999, 0); }, {"seq", "999"});
}

TEST(BlockManager, FreeReturnsPagesWhenTheLastReferenceGoes) {
  BlockManager bm(6, 2);
  std::vector<std::int32_t> slots;
  std::vector<BlockCopy> copies;
  const SequenceId a = bm.add_sequence();
  bm.append(a, 5, slots, copies);  // 3 pages
  const SequenceId b = bm.fork(a);
  bm.free(a);
  EXPECT_EQ(bm.num_free_pages(), 3);  // b still holds all three
  for (std::int32_t p : bm.pages(b)) EXPECT_EQ(bm.ref_count(p), 1);
  bm.free(b);
  EXPECT_EQ(bm.num_free_pages(), 6);
  for (std::int32_t p = 0; p < 6; ++p) EXPECT_EQ(bm.ref_count(p), 0);
  expect_invalid([&] { bm.free(b); }, {"seq", std::to_string(b), "freed"});
  expect_invalid([&] { bm.free(77); }, {"seq", "77", "never issued"});
}

TEST(BlockManager, TruncateReleasesUnusedPages) {
  BlockManager bm(6, 4);
  std::vector<std::int32_t> slots;
  std::vector<BlockCopy> copies;
  const SequenceId a = bm.add_sequence();
  bm.append(a, 11, slots, copies);  // 3 pages
  bm.truncate(a, 0);
  EXPECT_EQ(bm.length(a), 11);
  bm.truncate(a, 3);  // 8 tokens: 2 full pages
  EXPECT_EQ(bm.length(a), 8);
  EXPECT_EQ(bm.pages(a).size(), 2u);
  EXPECT_EQ(bm.num_free_pages(), 4);
  EXPECT_EQ(bm.ref_count(2), 0);

  // Truncating into a shared page: the next append copies it.
  const SequenceId b = bm.fork(a);
  bm.truncate(b, 2);
  EXPECT_EQ(bm.ref_count(1), 2);
  bm.append(b, 1, slots, copies);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, 1);
  EXPECT_EQ(bm.length(b), 7);

  bm.truncate(a, 8);
  EXPECT_EQ(bm.length(a), 0);
  EXPECT_TRUE(bm.pages(a).empty());
  expect_invalid([&] { bm.truncate(b, 8); }, {"num_tokens", "0 to 7", "got 8"});
  expect_invalid([&] { bm.truncate(b, -1); }, {"num_tokens", "got -1"});
  expect_invalid([&] { bm.truncate(1234, 0); }, {"seq", "1234"});
}

TEST(BlockManager, BadArgumentsNameTheArgumentAndChangeNothing) {
  BlockManager bm(4, 4);
  std::vector<std::int32_t> slots{11, 12};
  std::vector<BlockCopy> copies{{1, 2}};
  const SequenceId a = bm.add_sequence();
  bm.append(a, 5, slots, copies);
  const auto saved_slots = slots;
  const auto saved_copies = copies;
  const Snapshot before = snapshot(bm, 10);
  expect_invalid([&] { bm.append(a, -1, slots, copies); }, {"num_tokens", ">= 0", "got -1"});
  expect_invalid([&] { bm.append(42, 1, slots, copies); }, {"seq", "42"});
  expect_invalid([&] { (void)bm.pages_needed(a, -2); }, {"num_tokens", "got -2"});
  expect_invalid([&] { (void)bm.pages_needed(-5, 1); }, {"seq", "-5"});
  expect_invalid([&] { (void)bm.length(9); }, {"seq", "9"});
  expect_invalid([&] { (void)bm.pages(9); }, {"seq", "9"});
  expect_invalid([&] { (void)bm.fork(9); }, {"seq", "9"});
  expect_invalid([&] { (void)bm.ref_count(4); }, {"page", "[0, 4)", "got 4"});
  expect_invalid([&] { (void)bm.ref_count(-1); }, {"page", "got -1"});
  EXPECT_EQ(slots, saved_slots);
  EXPECT_EQ(copies, saved_copies);
  EXPECT_EQ(snapshot(bm, 10), before);
}

TEST(BlockManager, ExhaustedPoolThrowsAndChangesNothing) {
  BlockManager bm(4, 4);
  std::vector<std::int32_t> slots;
  std::vector<BlockCopy> copies;
  const SequenceId a = bm.add_sequence();
  bm.append(a, 10, slots, copies);  // 3 pages, the last half full
  const SequenceId b = bm.fork(a);
  const SequenceId c = bm.add_sequence();
  slots = {-1, -2, -3};
  copies = {{5, 6}};
  const Snapshot before = snapshot(bm, 10);

  // c wants 2 pages, 1 is free.
  EXPECT_EQ(bm.pages_needed(c, 5), 2);
  expect_error([&] { bm.append(c, 5, slots, copies); }, ErrorCode::out_of_memory,
               {"needs 2 free pages", "but 1 of 4 pages", "sequence " + std::to_string(c)});
  // b needs a copy of its shared last page and one new page: 2 > 1.
  EXPECT_EQ(bm.pages_needed(b, 3), 2);
  expect_error([&] { bm.append(b, 3, slots, copies); }, ErrorCode::out_of_memory, {"needs 2 free pages"});
  // No pool is that large, and length + num_tokens must not overflow on the way to saying so.
  expect_error([&] { bm.append(a, std::numeric_limits<std::int64_t>::max(), slots, copies); },
               ErrorCode::out_of_memory, {"free pages"});
  EXPECT_EQ(slots, (std::vector<std::int32_t>{-1, -2, -3}));
  EXPECT_EQ(copies, (std::vector<BlockCopy>{{5, 6}}));
  EXPECT_EQ(snapshot(bm, 10), before);

  // The same calls succeed once there is room, and exactly the last free page can be used.
  bm.append(b, 2, slots, copies);  // the copy only: 10 + 2 fits in 3 pages
  EXPECT_EQ(copies.size(), 1u);
  EXPECT_EQ(bm.num_free_pages(), 0);
  expect_error([&] { bm.append(c, 1, slots, copies); }, ErrorCode::out_of_memory, {"but 0 of 4"});
  bm.free(a);  // releases only a's private last page: b holds the others
  EXPECT_EQ(bm.num_free_pages(), 1);
  bm.append(c, 4, slots, copies);
  EXPECT_EQ(slots.size(), 4u);
}

TEST(BlockManager, BlockTableFillsRowsAndPadsWithZero) {
  BlockManager bm(10, 2);
  std::vector<std::int32_t> slots;
  std::vector<BlockCopy> copies;
  const SequenceId a = bm.add_sequence();
  const SequenceId b = bm.add_sequence();
  const SequenceId e = bm.add_sequence();  // stays empty
  bm.append(a, 5, slots, copies);
  bm.append(b, 2, slots, copies);
  const std::vector<SequenceId> batch{b, e, a, b};
  std::vector<std::int32_t> table(4 * 4, -9), seqlens(4, -9);
  bm.block_table(batch, 4, table.data(), seqlens.data());
  const Pages pa = pages_of(bm, a), pb = pages_of(bm, b);
  EXPECT_EQ(seqlens, (std::vector<std::int32_t>{2, 0, 5, 2}));
  EXPECT_EQ(table, (std::vector<std::int32_t>{pb[0], 0, 0, 0, 0, 0, 0, 0, pa[0], pa[1], pa[2], 0, pb[0], 0, 0, 0}));

  std::vector<std::int32_t> untouched_table(4 * 2, -9), untouched_seqlens(4, -9);
  const auto poison_table = untouched_table;
  const auto poison_seqlens = untouched_seqlens;
  expect_invalid([&] { bm.block_table(batch, 2, untouched_table.data(), untouched_seqlens.data()); },
                 {"max_pages_per_seq", ">= 3", "got 2", "seqs[2]"});
  expect_invalid([&] { bm.block_table(batch, -1, untouched_table.data(), untouched_seqlens.data()); },
                 {"max_pages_per_seq", "got -1"});
  const std::vector<SequenceId> unknown{a, 31};
  expect_invalid([&] { bm.block_table(unknown, 4, untouched_table.data(), untouched_seqlens.data()); },
                 {"seqs[1]", "31"});
  expect_invalid([&] { bm.block_table(batch, 4, nullptr, untouched_seqlens.data()); }, {"block_table", "nullptr"});
  expect_invalid([&] { bm.block_table(batch, 4, untouched_table.data(), nullptr); }, {"seqlens", "nullptr"});
  EXPECT_EQ(untouched_table, poison_table);
  EXPECT_EQ(untouched_seqlens, poison_seqlens);
  EXPECT_NO_THROW(bm.block_table({}, 0, nullptr, nullptr));  // an empty batch writes nothing
}

// ------------------------------------------------------------------------------------------ the model test

// A shadow of the KV memory the manager describes: one token id per slot. Each operation goes to the manager and to
// the shadow; the caller's duties after an append (apply the copies, then write the new tokens into their slots) are
// carried out on the shadow as a real caller carries them out on K and V. check() then reads every live sequence back
// through the manager's pages: a missing or misplaced copy-on-write, a page handed out twice or a wrong slot shows as
// a token that is not the sequence's own.
class ShadowModel {
 public:
  enum class Fault { none, skip_copies };  // skip_copies: a caller that forgets the copy-on-write copies

  ShadowModel(std::int32_t num_pages, std::int32_t page_size, Fault fault)
      : bm_(num_pages, page_size),
        page_size_(page_size),
        kv_(static_cast<std::size_t>(num_pages) * page_size, kPoison),
        fault_(fault) {}

  const BlockManager& manager() const { return bm_; }
  std::vector<SequenceId> live_ids() const {
    std::vector<SequenceId> ids;
    for (const auto& entry : history_) ids.push_back(entry.first);
    return ids;
  }
  std::int64_t length(SequenceId seq) const { return static_cast<std::int64_t>(history_.at(seq).size()); }

  std::int64_t copies_seen = 0, exhausted_seen = 0, partial_prefixes_seen = 0;

  void add() { history_[issued(bm_.add_sequence())] = {}; }
  void add_with_prefix(SequenceId donor, std::int64_t prefix_tokens) {
    const auto& h = history_.at(donor);
    if (prefix_tokens % page_size_ != 0 && prefix_tokens < length(donor)) ++partial_prefixes_seen;
    history_[issued(bm_.add_sequence_with_prefix(donor, prefix_tokens))] =
        std::vector<std::int64_t>(h.begin(), h.begin() + prefix_tokens);
  }
  void fork(SequenceId parent) { history_[issued(bm_.fork(parent))] = history_.at(parent); }
  void free(SequenceId seq) {
    bm_.free(seq);
    history_.erase(seq);
  }
  void truncate(SequenceId seq, std::int64_t num_tokens) {
    bm_.truncate(seq, num_tokens);
    history_.at(seq).resize(history_.at(seq).size() - static_cast<std::size_t>(num_tokens));
  }

  // Appends num_tokens fresh tokens to seq; "" or what went wrong.
  std::string append(SequenceId seq, std::int64_t num_tokens) {
    const std::vector<std::int32_t> held = references();
    const Pages old_pages = pages_of(bm_, seq);
    const std::int64_t old_length = bm_.length(seq);
    const std::int64_t needed = bm_.pages_needed(seq, num_tokens);
    const std::int32_t free_before = bm_.num_free_pages();
    const Snapshot before = snapshot(bm_, id_limit_);
    const std::vector<std::int32_t> sentinel_slots{-77};
    const std::vector<BlockCopy> sentinel_copies{{-77, -78}};
    std::vector<std::int32_t> slots = sentinel_slots;
    std::vector<BlockCopy> copies = sentinel_copies;
    try {
      bm_.append(seq, num_tokens, slots, copies);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::out_of_memory) return std::string("append threw ") + e.what();
      if (needed <= free_before) {
        return "append threw out_of_memory with " + std::to_string(free_before) + " free pages, pages_needed " +
               std::to_string(needed);
      }
      if (!(snapshot(bm_, id_limit_) == before)) return "an exhausted append changed the manager's state";
      if (slots != sentinel_slots || copies != sentinel_copies) return "an exhausted append changed its outputs";
      ++exhausted_seen;
      return "";
    }
    const std::string where = "append(" + std::to_string(seq) + ", " + std::to_string(num_tokens) + "): ";
    if (needed > free_before) return where + "succeeded needing " + std::to_string(needed) + " pages of fewer free";
    if (free_before - bm_.num_free_pages() != needed) return where + "took a number of pages other than pages_needed";
    const Pages new_pages = pages_of(bm_, seq);
    if (new_pages.size() < old_pages.size()) return where + "dropped pages";
    for (std::size_t i = 0; i < new_pages.size(); ++i) {
      if (i < old_pages.size() && new_pages[i] == old_pages[i]) continue;
      if (i + 1 < old_pages.size()) return where + "replaced a full page";
      // A page the sequence did not hold before must have been held by nobody: else it is used twice.
      if (held[static_cast<std::size_t>(new_pages[i])] != 0) {
        return where + "handed out page " + std::to_string(new_pages[i]) + ", held by a live sequence";
      }
      // A fresh page's contents are undefined: poison them, so that relying on stale contents shows.
      std::fill_n(kv_.begin() + std::int64_t{new_pages[i]} * page_size_, page_size_, kPoison);
    }
    const bool shared_partial =
        num_tokens > 0 && old_length % page_size_ != 0 && held[static_cast<std::size_t>(old_pages.back())] > 1;
    if (copies.size() != (shared_partial ? 1u : 0u)) return where + "wrong number of copies";
    if (shared_partial) {
      if (copies[0].src != old_pages.back() || copies[0].dst != new_pages[old_pages.size() - 1]) {
        return where + "the copy is not {old last page, new last page}";
      }
      ++copies_seen;
      if (fault_ != Fault::skip_copies) {
        std::copy_n(kv_.begin() + std::int64_t{copies[0].src} * page_size_, page_size_,
                    kv_.begin() + std::int64_t{copies[0].dst} * page_size_);
      }
    }
    if (static_cast<std::int64_t>(slots.size()) != num_tokens) return where + "wrong number of slots";
    for (std::int64_t i = 0; i < num_tokens; ++i) {
      const std::int64_t t = old_length + i;
      const std::int64_t slot = std::int64_t{new_pages[static_cast<std::size_t>(t / page_size_)]} * page_size_ +
                                t % page_size_;
      if (slots[static_cast<std::size_t>(i)] != slot) return where + "slot of token " + std::to_string(t);
      kv_[static_cast<std::size_t>(slot)] = next_token_;
      history_.at(seq).push_back(next_token_++);
    }
    return "";
  }

  // "" when every live sequence reads back its own history and the reference counts and free pages add up.
  std::string check() const {
    if (bm_.num_sequences() != static_cast<std::int64_t>(history_.size())) return "wrong number of sequences";
    std::vector<std::int32_t> refs = references();
    for (const auto& [id, h] : history_) {
      const std::string seq = "sequence " + std::to_string(id) + ": ";
      if (!bm_.contains(id)) return seq + "unknown to the manager";
      if (bm_.length(id) != static_cast<std::int64_t>(h.size())) return seq + "wrong length";
      Pages pages = pages_of(bm_, id);
      if (static_cast<std::int64_t>(pages.size()) != ceil_pages(h.size())) return seq + "wrong page count";
      for (std::size_t t = 0; t < h.size(); ++t) {
        const std::int64_t slot = std::int64_t{pages[t / page_size_]} * page_size_ + std::int64_t(t) % page_size_;
        if (kv_[static_cast<std::size_t>(slot)] != h[t]) {
          return seq + "token " + std::to_string(t) + " reads " + std::to_string(kv_[static_cast<std::size_t>(slot)]) +
                 " from slot " + std::to_string(slot) + ", expected token " + std::to_string(h[t]);
        }
      }
      std::sort(pages.begin(), pages.end());
      if (std::adjacent_find(pages.begin(), pages.end()) != pages.end()) return seq + "holds a page twice";
    }
    std::int32_t unreferenced = 0;
    for (std::int32_t p = 0; p < bm_.num_pages(); ++p) {
      if (bm_.ref_count(p) != refs[static_cast<std::size_t>(p)]) {
        return "page " + std::to_string(p) + ": ref_count " + std::to_string(bm_.ref_count(p)) + ", held by " +
               std::to_string(refs[static_cast<std::size_t>(p)]) + " sequences";
      }
      unreferenced += refs[static_cast<std::size_t>(p)] == 0;
    }
    if (unreferenced != bm_.num_free_pages()) {
      return std::to_string(unreferenced) + " pages unreferenced but " + std::to_string(bm_.num_free_pages()) +
             " free (a leak, or a page both free and held)";
    }
    return "";
  }

  // The kernels' view: a batch of live sequences (repeats allowed) read back through block_table and seqlens.
  std::string check_block_table(test::Rng& rng) const {
    const std::vector<SequenceId> ids = live_ids();
    std::vector<SequenceId> batch(static_cast<std::size_t>(rng.uniform_int(0, 6)));
    std::int64_t widest = 0;
    for (SequenceId& id : batch) {
      id = ids[static_cast<std::size_t>(rng.uniform_int(0, static_cast<std::int64_t>(ids.size()) - 1))];
      widest = std::max(widest, ceil_pages(history_.at(id).size()));
    }
    const std::int64_t width = widest + rng.uniform_int(0, 2);
    std::vector<std::int32_t> table(batch.size() * static_cast<std::size_t>(width), -5), seqlens(batch.size(), -5);
    if (widest > 0) {  // one page too narrow: rejected, nothing written
      try {
        bm_.block_table(batch, widest - 1, table.data(), seqlens.data());
        return "block_table accepted max_pages_per_seq below a sequence's page count";
      } catch (const Error&) {
      }
      if (std::count(table.begin(), table.end(), -5) != std::ssize(table) ||
          std::count(seqlens.begin(), seqlens.end(), -5) != std::ssize(seqlens)) {
        return "a rejected block_table call wrote its outputs";
      }
    }
    bm_.block_table(batch, width, table.data(), seqlens.data());
    for (std::size_t b = 0; b < batch.size(); ++b) {
      const auto& h = history_.at(batch[b]);
      const std::int32_t* row = table.data() + b * static_cast<std::size_t>(width);
      if (seqlens[b] != static_cast<std::int32_t>(h.size())) return "block_table: wrong seqlen";
      for (std::int64_t j = ceil_pages(h.size()); j < width; ++j) {
        if (row[j] != 0) return "block_table: padding not 0";
      }
      for (std::size_t t = 0; t < h.size(); ++t) {
        const std::int64_t slot = std::int64_t{row[t / page_size_]} * page_size_ + std::int64_t(t) % page_size_;
        if (kv_[static_cast<std::size_t>(slot)] != h[t]) return "block_table: a token reads back wrong";
      }
    }
    return "";
  }

 private:
  static constexpr std::int64_t kPoison = -1;

  SequenceId issued(SequenceId id) {
    id_limit_ = std::max(id_limit_, id + 1);
    return id;
  }
  std::int64_t ceil_pages(std::size_t tokens) const {
    return (static_cast<std::int64_t>(tokens) + page_size_ - 1) / page_size_;
  }
  // How many live sequences list each page, by the manager's page lists (independent of its reference counts).
  std::vector<std::int32_t> references() const {
    std::vector<std::int32_t> refs(static_cast<std::size_t>(bm_.num_pages()), 0);
    for (const auto& entry : history_) {
      for (std::int32_t p : bm_.pages(entry.first)) {
        if (p >= 0 && p < bm_.num_pages()) ++refs[static_cast<std::size_t>(p)];
      }
    }
    return refs;
  }

  BlockManager bm_;
  std::int32_t page_size_;
  std::vector<std::int64_t> kv_;  // [num_pages * page_size]: the id of the token each slot holds
  std::map<SequenceId, std::vector<std::int64_t>> history_;  // each live sequence's tokens, in order
  std::int64_t next_token_ = 0;
  SequenceId id_limit_ = 0;
  Fault fault_;
};

struct ModelRun {
  std::string failure;  // "" when every step checked out
  std::int64_t copies = 0, exhausted = 0, partial_prefixes = 0;
};

// `steps` random operations on a pool small enough to run dry, each followed by a full check; then everything is
// freed and the pool must be whole again.
ModelRun run_model(const std::string& stream, std::int32_t page_size, int steps, ShadowModel::Fault fault) {
  constexpr std::int32_t kNumPages = 64;
  constexpr std::size_t kMaxLive = 10;
  test::Rng rng(stream);
  ShadowModel m(kNumPages, page_size, fault);
  ModelRun run;
  auto pick = [&](const std::vector<SequenceId>& ids) {
    return ids[static_cast<std::size_t>(rng.uniform_int(0, static_cast<std::int64_t>(ids.size()) - 1))];
  };
  for (int step = 0; step < steps && run.failure.empty(); ++step) {
    const std::vector<SequenceId> ids = m.live_ids();
    const bool room = ids.size() < kMaxLive;
    const std::int64_t op = rng.uniform_int(0, 99);
    std::string what, error;
    try {
      if (ids.empty() || (op < 8 && room)) {
        what = "add";
        m.add();
      } else if (op < 16 && room) {
        const SequenceId donor = pick(ids);
        what = "add_with_prefix";
        m.add_with_prefix(donor, rng.uniform_int(0, m.length(donor)));
      } else if (op < 24 && room) {
        what = "fork";
        m.fork(pick(ids));
      } else if (op < 64) {
        what = "append";
        error = m.append(pick(ids), rng.uniform_int(0, 3 * std::int64_t{page_size}));
      } else if (op < 76) {
        const SequenceId seq = pick(ids);
        // Mostly a few rejected speculative tokens, now and then the whole sequence.
        const std::int64_t most = op < 74 ? std::min<std::int64_t>(m.length(seq), 2 * page_size) : m.length(seq);
        what = "truncate";
        m.truncate(seq, rng.uniform_int(0, most));
      } else if (op < 90) {
        what = "free";
        m.free(pick(ids));
      } else {
        what = "block_table";
        error = m.check_block_table(rng);
      }
    } catch (const std::exception& e) {
      error = std::string("threw ") + e.what();
    }
    if (error.empty()) error = m.check();
    if (!error.empty()) run.failure = "step " + std::to_string(step) + " (" + what + "): " + error;
  }
  run.copies = m.copies_seen;
  run.exhausted = m.exhausted_seen;
  run.partial_prefixes = m.partial_prefixes_seen;
  if (!run.failure.empty()) return run;

  for (SequenceId id : m.live_ids()) m.free(id);
  if (std::string error = m.check(); !error.empty()) run.failure = "after freeing all: " + error;
  if (m.manager().num_free_pages() != kNumPages) run.failure = "after freeing all: pages missing from the pool";
  return run;
}

class BlockManagerModel : public ::testing::TestWithParam<std::int32_t> {};

TEST_P(BlockManagerModel, RandomOperationsKeepEverySequencesTokens) {
  const std::int32_t page_size = GetParam();
  ModelRun total;
  for (int run = 0; run < 6; ++run) {
    const std::string stream = "block_manager/ps" + std::to_string(page_size) + "/run" + std::to_string(run);
    const ModelRun r = run_model(stream, page_size, 5000, ShadowModel::Fault::none);
    ASSERT_EQ(r.failure, "") << stream << ", " << test::seed_text();
    total.copies += r.copies;
    total.exhausted += r.exhausted;
    total.partial_prefixes += r.partial_prefixes;
  }
  // The runs must have met what they claim to test. With one token per page no page is ever partly filled.
  EXPECT_GT(total.exhausted, 0) << test::seed_text();
  if (page_size > 1) {
    EXPECT_GT(total.copies, 0) << test::seed_text();
    EXPECT_GT(total.partial_prefixes, 0) << test::seed_text();
  }
}

INSTANTIATE_TEST_SUITE_P(PageSizes, BlockManagerModel, ::testing::Values(1, 3, 16),
                         [](const auto& info) { return "page_size_" + std::to_string(info.param); });

// The model test can fail: a caller that skips the copy-on-write copies reads poisoned or foreign tokens.
TEST(BlockManagerModel, DetectsSkippedCopies) {
  ShadowModel m(8, 4, ShadowModel::Fault::skip_copies);
  m.add();
  const SequenceId a = m.live_ids().front();
  ASSERT_EQ(m.append(a, 6), "");
  m.fork(a);
  const SequenceId b = m.live_ids().back();
  ASSERT_EQ(m.check(), "");
  ASSERT_EQ(m.append(b, 1), "");
  EXPECT_NE(m.check().find("reads -1"), std::string::npos) << m.check();

  for (std::int32_t page_size : {3, 16}) {
    const ModelRun r = run_model("block_manager/fault/ps" + std::to_string(page_size), page_size, 3000,
                                 ShadowModel::Fault::skip_copies);
    EXPECT_NE(r.failure.find("expected token"), std::string::npos) << r.failure << ", " << test::seed_text();
  }
}

// After any history, an emptied pool hands out every page exactly once, and not one more.
TEST(BlockManagerModel, EmptiedPoolHandsOutEveryPageOnce) {
  BlockManager bm(9, 5);
  std::vector<std::int32_t> slots;
  std::vector<BlockCopy> copies;
  const SequenceId a = bm.add_sequence();
  bm.append(a, 13, slots, copies);
  const SequenceId b = bm.fork(a);
  bm.append(b, 9, slots, copies);
  const SequenceId c = bm.add_sequence_with_prefix(b, 7);
  bm.truncate(b, 4);
  bm.append(c, 11, slots, copies);
  for (SequenceId id : {a, b, c}) bm.free(id);
  ASSERT_EQ(bm.num_free_pages(), 9);

  const SequenceId whole = bm.add_sequence();
  bm.append(whole, 9 * 5, slots, copies);
  Pages pages = pages_of(bm, whole);
  std::sort(pages.begin(), pages.end());
  Pages all(9);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(pages, all);
  std::sort(slots.begin(), slots.end());
  for (std::int32_t i = 0; i < 45; ++i) EXPECT_EQ(slots[static_cast<std::size_t>(i)], i);
  expect_error([&] { bm.append(bm.add_sequence(), 1, slots, copies); }, ErrorCode::out_of_memory, {"but 0 of 9"});
}
}  // namespace
}  // namespace ioattn
