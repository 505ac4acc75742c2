// ioattn cuda paged: what the decode and combine kernels receive (a plain struct, passed by value), built once per
// call from the validated PagedProblem.
#pragma once

#include <cstdint>

#include "api/paged_problem.hpp"

namespace ioattn::detail::paged {

struct DecodeParams {
  const void* q;
  const void* k_cache;
  const void* v_cache;
  void* out;
  float* lse;  // null: not asked for
  const std::int32_t* block_table;
  const std::int32_t* seqlens_k;
  const std::int32_t* cu_seqlens_q;  // null: dense q
  float* partial_out;  // [max_splits, rows, heads_q, dim_v]; null when max_splits == 1
  float* partial_lse;  // [max_splits, rows, heads_q]

  std::int64_t q_batch_stride, q_row_stride, q_head_stride;
  std::int64_t o_batch_stride, o_row_stride, o_head_stride;
  std::int64_t lse_batch_stride, lse_row_stride, lse_head_stride;
  // Caches: the page base is 64-bit (num_pages * page stride may pass 2^31); inside a page, 32-bit offsets suffice
  // (cuda_paged_unsupported checks page_size * row stride and heads * head stride).
  std::int64_t k_page_stride, v_page_stride;
  int k_row_stride, k_head_stride, v_row_stride, v_head_stride;
  std::int64_t block_table_stride;

  int batch, heads_q, heads_kv, group;  // group = heads_q / heads_kv
  int seqlen_q;                         // dense: every sequence's; packed: the largest
  int rows;                             // batch * seqlen_q (dense) or total_q (packed)
  int capacity;                         // max_pages_per_seq * page_size: seqlens_k is clamped to it
  int page_size;
  int page_shift;                       // log2(page_size) when a power of two, else -1
  int split_tokens, max_splits;

  float scale, softcap;
  const float* alibi_slopes;
  std::int64_t alibi_batch_stride;
  const float* sinks;
  std::int64_t window_left, window_right;
  bool top_left;
};

DecodeParams make_decode_params(const PagedProblem& p, float* workspace);

}  // namespace ioattn::detail::paged
