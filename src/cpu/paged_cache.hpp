// ioattn internal: the CPU side of the paged KV cache: writing new tokens into their slots, copying pages, and
// reading a sequence's keys back into a contiguous layout (the reference's way in).
#pragma once

#include <cstdint>

#include "api/paged_problem.hpp"

namespace ioattn::cpu {

// Element offset of key j of sequence b, kv head h in a cache operand (k or v) of the problem.
inline std::int64_t paged_offset(const detail::PagedProblem& p, const detail::Operand& cache, std::int64_t b,
                                 std::int64_t j, std::int64_t h) {
  const std::int64_t page = p.block_table[b * p.block_table_stride + j / p.page_size];
  return page * cache.batch_stride + (j % p.page_size) * cache.seq_stride + h * cache.head_stride;
}

// Sequence b's length in the cache (seqlens_k is host memory on the CPU, and validated there).
inline std::int64_t paged_seqlen(const detail::PagedProblem& p, std::int64_t b) { return p.seqlens_k[b]; }

void paged_write(const detail::PagedWriteProblem& p);
void paged_copy_pages(const detail::PagedCopyProblem& p);

}  // namespace ioattn::cpu
