// ioattn cuda paged: what the decode and combine kernels receive (a plain struct, passed by value), built once per
// call from the validated PagedProblem.
#pragma once

#include <cstdint>

#include "api/paged_problem.hpp"

namespace ioattn::detail::paged {

// Division by a runtime constant as a multiply-high and a shift (Granlund-Montgomery): exact for dividends below
// 2^31, where the add cannot overflow 32 bits.
struct FastDivisor {
  std::uint32_t multiplier = 1;
  int shift = 0;
  static FastDivisor make(std::uint32_t divisor) {
    FastDivisor f;
    while ((std::uint64_t{1} << f.shift) < divisor) ++f.shift;
    f.multiplier = static_cast<std::uint32_t>(((std::uint64_t{1} << 32) * ((std::uint64_t{1} << f.shift) - divisor)) /
                                                  divisor + 1);
    return f;
  }
#if defined(__CUDACC__)
  __device__ __forceinline__ int quotient(int n) const {
    const std::uint32_t u = static_cast<std::uint32_t>(n);
    return static_cast<int>((__umulhi(u, multiplier) + u) >> shift);
  }
#endif
};

struct DecodeParams {
  const void* q;
  const void* k_cache;
  const void* v_cache;
  void* out;
  float* lse;  // null: not asked for
  const std::int32_t* block_table;  // null: sequence b's keys are page b (a dense cache, max_pages_per_seq 1)
  const std::int32_t* seqlens_k;    // null: every sequence holds `capacity` keys
  const std::int32_t* cu_seqlens_q;  // null: dense q
  float* partial_out;  // [max_splits, rows, heads_q, dim_v]; null when max_splits == 1
  float* partial_lse;  // [max_splits, rows, heads_q]

  std::int64_t q_batch_stride, q_row_stride, q_head_stride;
  std::int64_t o_batch_stride, o_row_stride, o_head_stride;
  std::int64_t lse_batch_stride, lse_row_stride, lse_head_stride;
  // Caches: the page base is 64-bit (num_pages * page stride may pass 2^31, the stride itself stays below 2^32);
  // inside a page, 32-bit offsets suffice (cuda_paged_unsupported checks both).
  std::uint32_t k_page_stride, v_page_stride;  // below 2^32 (cuda_paged_unsupported)
  int k_row_stride, k_head_stride, v_row_stride, v_head_stride;
  std::int64_t block_table_stride;

  int batch, heads_q, heads_kv, group;  // group = heads_q / heads_kv
  int seqlen_q;                         // dense: every sequence's; packed: the largest
  int rows;                             // batch * seqlen_q (dense) or total_q (packed)
  int capacity;                         // max_pages_per_seq * page_size: seqlens_k is clamped to it
  int page_size;
  int max_pages_per_seq;                // the block table's width
  FastDivisor page_div;                 // key index -> page index
  int split_tokens, max_splits;

  float scale, softcap;
  const float* alibi_slopes;
  std::int64_t alibi_batch_stride;
  const float* sinks;
  std::int64_t window_left, window_right;
  bool top_left;

  // Trace builds only (trace.cuh): per-CTA event times of the decode and the combine kernels; null otherwise.
  std::uint64_t* trace_decode = nullptr;
  std::uint64_t* trace_combine = nullptr;
};

DecodeParams make_decode_params(const PagedProblem& p, float* workspace);

}  // namespace ioattn::detail::paged
