// ioattn: the KV-cache block manager, host-side bookkeeping for a paged KV cache (PagedAttention-style).
//
// The model. The KV cache is a pool of `num_pages` pages of `page_size` token slots each, laid out by the caller as
// [num_pages, page_size, heads_kv, head_dim] (one such pool per layer, all indexed alike). Token t of a sequence lives
// in slot pages(seq)[t / page_size] * page_size + t % page_size. A sequence holds a list of pages (its block table
// row); a page may be held by several sequences at once, and its reference count is the number of sequences holding
// it. A page held by nobody is free. Sharing comes from forks (parallel sampling, beam search) and from prefixes
// (a new sequence that starts with another's first tokens): both share the donor's pages and allocate nothing.
//
// Copy-on-write. A sequence writes only past its own length: into the unused tail of its last page, and into new
// pages. So sharing full pages costs nothing; but a partly filled last page that is shared would see one sequence's
// tokens overwrite another's, so append() first gives the sequence a fresh private page and reports a
// BlockCopy{old, new}. The caller must copy page old's K and V (every layer) to page new before writing the new tokens.
//
// What the caller must do after append(seq, n, slots, copies):
//   1. apply every BlockCopy in `copies` before writing any token of this append or a later one, and apply copies
//      in the order they were returned. Copies from several appends may go in one pass only if that pass keeps the
//      order: a later copy may read a page an earlier one wrote (a fork of a fork), or write a page an earlier one
//      read (a page freed in between and handed out again);
//   2. write the K and V of the n new tokens into `slots`, in order (slot = page * page_size + offset in page);
//   3. give the kernels block_table() and seqlens (their int32 inputs) for the batch.
// A copy takes page old as it is when applied, so fork or share a prefix only of tokens already written: forking
// a sequence between its append and the writing of that append's tokens would copy a page that lacks them.
// The manager never touches KV memory. A fresh page holds stale data; the kernels read only the first seqlen tokens
// of each sequence, all of them written (or copied) by the caller.
//
// Errors: every bad argument throws ioattn::Error(invalid_argument) naming it; an append the pool cannot hold throws
// ioattn::Error(out_of_memory). In both cases nothing changes: no page, reference count, length or output.
//
// Not thread-safe: calls on one BlockManager must not overlap unless all of them are const.
// Allocation and release of a page are O(1) (a free list); append is O(pages taken + tokens), free is O(pages held).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace ioattn {

// Copy page src's contents (every layer's K and V) to page dst, before writing new tokens (copy-on-write).
struct BlockCopy {
  std::int32_t src;
  std::int32_t dst;
  friend bool operator==(const BlockCopy&, const BlockCopy&) = default;
};
// So that the copies of a std::vector<BlockCopy> can be passed as one int32 [n, 2] array (paged_kv_copy_pages).
static_assert(sizeof(BlockCopy) == 2 * sizeof(std::int32_t) && alignof(BlockCopy) == alignof(std::int32_t));

using SequenceId = std::int64_t;

class BlockManager {
 public:
  // num_pages, page_size >= 1, and num_pages * page_size <= INT32_MAX so that every slot and every length fits in
  // the kernels' int32 block table and seqlens.
  BlockManager(std::int32_t num_pages, std::int32_t page_size);

  std::int32_t page_size() const { return page_size_; }
  std::int32_t num_pages() const { return num_pages_; }
  std::int32_t num_free_pages() const { return static_cast<std::int32_t>(free_pages_.size()); }
  std::int64_t num_sequences() const { return static_cast<std::int64_t>(sequences_.size()); }

  // An empty sequence. Ids are never reused, not even after free().
  SequenceId add_sequence();
  // A new sequence whose first `prefix_tokens` tokens are the donor's: it shares the donor's first
  // ceil(prefix_tokens / page_size) pages by reference count and allocates nothing. 0 <= prefix_tokens <= length(donor).
  SequenceId add_sequence_with_prefix(SequenceId donor, std::int64_t prefix_tokens);
  // = add_sequence_with_prefix(parent, length(parent)).
  SequenceId fork(SequenceId parent);
  // Releases the sequence's references; pages left with none return to the pool. The id becomes unknown.
  void free(SequenceId seq);

  // Reserves room for `num_tokens` more tokens at the end of `seq`: `slots_out` is cleared, then receives the new
  // tokens' slots in order; `copies_out` is cleared, then receives the copy-on-write copy, if any (see the top).
  // Strong guarantee: on any error (bad argument, or the pool having fewer free pages than pages_needed()), nothing
  // changes, `slots_out` and `copies_out` included. num_tokens == 0 clears the outputs and changes nothing else.
  void append(SequenceId seq, std::int64_t num_tokens, std::vector<std::int32_t>& slots_out,
              std::vector<BlockCopy>& copies_out);
  // The pages append(seq, num_tokens) would take from the pool: new pages, plus one if copy-on-write applies.
  std::int64_t pages_needed(SequenceId seq, std::int64_t num_tokens) const;
  // Drops the last `num_tokens` tokens (rejected speculative tokens); pages no longer used are released.
  // 0 <= num_tokens <= length(seq).
  void truncate(SequenceId seq, std::int64_t num_tokens);

  std::int64_t length(SequenceId seq) const;
  // Logical page p -> physical page, ceil(length / page_size) entries. Valid until the next non-const call.
  std::span<const std::int32_t> pages(SequenceId seq) const;
  // The number of sequences holding `page` (0 when free); 0 <= page < num_pages.
  std::int32_t ref_count(std::int32_t page) const;
  bool contains(SequenceId seq) const { return sequences_.count(seq) != 0; }

  // The kernels' inputs for a batch: block_table, row-major [seqs.size(), max_pages_per_seq] (entries past a
  // sequence's pages are 0), and seqlens [seqs.size()]. A sequence may appear more than once. On error (unknown id,
  // a sequence with more than max_pages_per_seq pages, null outputs for a non-empty batch) nothing is written.
  void block_table(std::span<const SequenceId> seqs, std::int64_t max_pages_per_seq, std::int32_t* block_table,
                   std::int32_t* seqlens) const;

 private:
  struct Sequence {
    std::int64_t length = 0;
    std::vector<std::int32_t> pages;  // ceil(length / page_size) entries, all distinct
  };

  const Sequence& find(SequenceId seq, const char* where) const;
  Sequence& find(SequenceId seq, const char* where);
  // Drops the sequence's references to its pages [keep, end) and shortens its page list.
  void release_pages_from(Sequence& s, std::size_t keep);
  std::int32_t take_free_page();

  std::int32_t num_pages_;
  std::int32_t page_size_;
  std::vector<std::int32_t> ref_counts_;  // [num_pages]
  std::vector<std::int32_t> free_pages_;  // a stack: exactly the pages whose ref count is 0
  std::unordered_map<SequenceId, Sequence> sequences_;
  SequenceId next_id_ = 0;
};

}  // namespace ioattn
