// ioattn: the KV-cache block manager (see include/ioattn/block_manager.hpp for the model and the caller's duties).
#include "ioattn/block_manager.hpp"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "ioattn/error.hpp"

namespace ioattn {
namespace {

[[noreturn]] void fail(const char* where, const std::string& argument, const std::string& expected,
                       const std::string& got) {
  throw Error(ErrorCode::invalid_argument,
              std::string("BlockManager::") + where + ": " + argument + ": expected " + expected + ", got " + got);
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

void check_token_count(const char* where, std::int64_t num_tokens) {
  if (num_tokens < 0) fail(where, "num_tokens", "a token count >= 0", std::to_string(num_tokens));
}

}  // namespace

BlockManager::BlockManager(std::int32_t num_pages, std::int32_t page_size) : num_pages_(num_pages), page_size_(page_size) {
  if (num_pages < 1) fail("BlockManager", "num_pages", "a page count >= 1", std::to_string(num_pages));
  if (page_size < 1) fail("BlockManager", "page_size", "a page size >= 1 (tokens per page)", std::to_string(page_size));
  // Slots and lengths reach the kernels as int32; a sequence never holds a page twice, so its length is bounded by
  // the pool's capacity too.
  const std::int64_t capacity = std::int64_t{num_pages} * page_size;
  if (capacity > std::numeric_limits<std::int32_t>::max()) {
    fail("BlockManager", "num_pages", "num_pages * page_size <= 2147483647 (slots are int32)",
         std::to_string(num_pages) + " * " + std::to_string(page_size) + " = " + std::to_string(capacity));
  }
  ref_counts_.assign(static_cast<std::size_t>(num_pages), 0);
  free_pages_.reserve(static_cast<std::size_t>(num_pages));
  // Reversed, so that the stack hands out pages 0, 1, 2, ... first: a fresh pool fills in address order.
  for (std::int32_t p = num_pages - 1; p >= 0; --p) free_pages_.push_back(p);
}

const BlockManager::Sequence& BlockManager::find(SequenceId seq, const char* where) const {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    fail(where, "seq", "the id of a live sequence (" + std::to_string(sequences_.size()) + " live)",
         std::to_string(seq) + (seq >= 0 && seq < next_id_ ? " (freed)" : " (never issued)"));
  }
  return it->second;
}

BlockManager::Sequence& BlockManager::find(SequenceId seq, const char* where) {
  return const_cast<Sequence&>(static_cast<const BlockManager&>(*this).find(seq, where));
}

std::int32_t BlockManager::take_free_page() {
  const std::int32_t page = free_pages_.back();
  free_pages_.pop_back();
  ref_counts_[static_cast<std::size_t>(page)] = 1;
  return page;
}

void BlockManager::release_pages_from(Sequence& s, std::size_t keep) {
  for (std::size_t i = keep; i < s.pages.size(); ++i) {
    const std::int32_t page = s.pages[i];
    // free_pages_ was reserved to num_pages and holds only pages with no reference, so this never reallocates.
    if (--ref_counts_[static_cast<std::size_t>(page)] == 0) free_pages_.push_back(page);
  }
  s.pages.resize(keep);
}

SequenceId BlockManager::add_sequence() {
  const SequenceId id = next_id_;
  sequences_.emplace(id, Sequence{});
  ++next_id_;
  return id;
}

SequenceId BlockManager::add_sequence_with_prefix(SequenceId donor, std::int64_t prefix_tokens) {
  const Sequence& d = find(donor, "add_sequence_with_prefix");
  if (prefix_tokens < 0 || prefix_tokens > d.length) {
    fail("add_sequence_with_prefix", "prefix_tokens",
         "0 to " + std::to_string(d.length) + " (the length of donor " + std::to_string(donor) + ")",
         std::to_string(prefix_tokens));
  }
  Sequence s;
  s.length = prefix_tokens;
  s.pages.assign(d.pages.begin(), d.pages.begin() + ceil_div(prefix_tokens, page_size_));
  const SequenceId id = next_id_;
  sequences_.emplace(id, std::move(s));  // may throw bad_alloc: before any count changes
  ++next_id_;
  for (std::int32_t page : sequences_.at(id).pages) ++ref_counts_[static_cast<std::size_t>(page)];
  return id;
}

SequenceId BlockManager::fork(SequenceId parent) {
  return add_sequence_with_prefix(parent, find(parent, "fork").length);
}

void BlockManager::free(SequenceId seq) {
  Sequence& s = find(seq, "free");
  release_pages_from(s, 0);
  sequences_.erase(seq);
}

std::int64_t BlockManager::pages_needed(SequenceId seq, std::int64_t num_tokens) const {
  const Sequence& s = find(seq, "pages_needed");
  check_token_count("pages_needed", num_tokens);
  if (num_tokens == 0) return 0;
  // Beyond the pool's capacity the exact count does not matter (it cannot be met), but length + num_tokens must not
  // overflow: clamp to one token past the capacity.
  const std::int64_t capacity = std::int64_t{num_pages_} * page_size_;
  const std::int64_t new_length = num_tokens > capacity - s.length ? capacity + 1 : s.length + num_tokens;
  const std::int64_t fresh = ceil_div(new_length, page_size_) - ceil_div(s.length, page_size_);
  const bool copy_on_write =
      s.length % page_size_ != 0 && ref_counts_[static_cast<std::size_t>(s.pages.back())] > 1;
  return fresh + (copy_on_write ? 1 : 0);
}

void BlockManager::append(SequenceId seq, std::int64_t num_tokens, std::vector<std::int32_t>& slots_out,
                          std::vector<BlockCopy>& copies_out) {
  Sequence& s = find(seq, "append");
  check_token_count("append", num_tokens);
  const std::int64_t needed = pages_needed(seq, num_tokens);
  if (needed > num_free_pages()) {
    throw Error(ErrorCode::out_of_memory,
                "BlockManager::append: the KV page pool is exhausted: sequence " + std::to_string(seq) + " (" +
                    std::to_string(s.length) + " tokens) needs " + std::to_string(needed) + " free pages for " +
                    std::to_string(num_tokens) + " more tokens, but " + std::to_string(num_free_pages()) + " of " +
                    std::to_string(num_pages_) + " pages (of " + std::to_string(page_size_) +
                    " tokens) are free; nothing was changed");
  }
  // Every allocation that can throw happens here, before the first change, so that bad_alloc leaves all as it was.
  const std::int64_t fresh = ceil_div(s.length + num_tokens, page_size_) - ceil_div(s.length, page_size_);
  s.pages.reserve(s.pages.size() + static_cast<std::size_t>(fresh));
  slots_out.reserve(static_cast<std::size_t>(num_tokens));
  copies_out.reserve(1);
  slots_out.clear();
  copies_out.clear();
  if (num_tokens == 0) return;

  if (needed > fresh) {  // copy-on-write: the partly filled last page is shared, and the new tokens go into it
    const std::int32_t shared = s.pages.back();
    const std::int32_t own = take_free_page();
    --ref_counts_[static_cast<std::size_t>(shared)];  // was > 1: still held by another sequence
    s.pages.back() = own;
    copies_out.push_back(BlockCopy{shared, own});
  }
  for (std::int64_t i = 0; i < fresh; ++i) s.pages.push_back(take_free_page());
  for (std::int64_t t = s.length; t < s.length + num_tokens; ++t) {
    const std::int32_t page = s.pages[static_cast<std::size_t>(t / page_size_)];
    slots_out.push_back(page * page_size_ + static_cast<std::int32_t>(t % page_size_));
  }
  s.length += num_tokens;
}

void BlockManager::truncate(SequenceId seq, std::int64_t num_tokens) {
  Sequence& s = find(seq, "truncate");
  if (num_tokens < 0 || num_tokens > s.length) {
    fail("truncate", "num_tokens", "0 to " + std::to_string(s.length) + " (the length of sequence " +
                                       std::to_string(seq) + ")",
         std::to_string(num_tokens));
  }
  s.length -= num_tokens;
  release_pages_from(s, static_cast<std::size_t>(ceil_div(s.length, page_size_)));
}

std::int64_t BlockManager::length(SequenceId seq) const { return find(seq, "length").length; }

std::span<const std::int32_t> BlockManager::pages(SequenceId seq) const { return find(seq, "pages").pages; }

std::int32_t BlockManager::ref_count(std::int32_t page) const {
  if (page < 0 || page >= num_pages_) {
    fail("ref_count", "page", "a page index in [0, " + std::to_string(num_pages_) + ")", std::to_string(page));
  }
  return ref_counts_[static_cast<std::size_t>(page)];
}

void BlockManager::block_table(std::span<const SequenceId> seqs, std::int64_t max_pages_per_seq,
                               std::int32_t* block_table, std::int32_t* seqlens) const {
  if (max_pages_per_seq < 0) {
    fail("block_table", "max_pages_per_seq", "a page count >= 0", std::to_string(max_pages_per_seq));
  }
  // Every check before the first write: a rejected call leaves the caller's buffers as they were.
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    auto it = sequences_.find(seqs[b]);
    if (it == sequences_.end()) {
      fail("block_table", "seqs[" + std::to_string(b) + "]", "the id of a live sequence", std::to_string(seqs[b]));
    }
    const auto held = static_cast<std::int64_t>(it->second.pages.size());
    if (held > max_pages_per_seq) {
      fail("block_table", "max_pages_per_seq",
           ">= " + std::to_string(held) + " (sequence " + std::to_string(seqs[b]) + " at seqs[" + std::to_string(b) +
               "] holds " + std::to_string(held) + " pages)",
           std::to_string(max_pages_per_seq));
    }
  }
  if (seqs.empty()) return;
  if (block_table == nullptr && max_pages_per_seq > 0) {
    fail("block_table", "block_table", "a buffer of " + std::to_string(seqs.size()) + " x " +
                                           std::to_string(max_pages_per_seq) + " int32",
         "nullptr");
  }
  if (seqlens == nullptr) {
    fail("block_table", "seqlens", "a buffer of " + std::to_string(seqs.size()) + " int32", "nullptr");
  }
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    const Sequence& s = sequences_.find(seqs[b])->second;
    std::int32_t* row = block_table + static_cast<std::int64_t>(b) * max_pages_per_seq;
    std::int64_t p = 0;
    for (; p < static_cast<std::int64_t>(s.pages.size()); ++p) row[p] = s.pages[static_cast<std::size_t>(p)];
    for (; p < max_pages_per_seq; ++p) row[p] = 0;
    seqlens[b] = static_cast<std::int32_t>(s.length);  // <= num_pages * page_size <= INT32_MAX (constructor)
  }
}

}  // namespace ioattn
