// ioattn sm80 forward: the kernel's parameter block, built on the host from a validated Problem.
#pragma once

#include <cstdint>

namespace ioattn::detail::sm80 {

// Strides are in elements. Row (b, i, h) of X starts at X + b * x_batch_stride + (seq_offset + i) * x_row_stride
// + h * x_head_stride (src/api/problem.hpp); lse uses the same formula with a head dim of 1.
struct ForwardParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // null: not wanted
  std::int64_t q_batch_stride, q_row_stride, q_head_stride;
  std::int64_t k_batch_stride, k_row_stride, k_head_stride;
  std::int64_t v_batch_stride, v_row_stride, v_head_stride;
  std::int64_t o_batch_stride, o_row_stride, o_head_stride;
  std::int64_t lse_batch_stride, lse_row_stride, lse_head_stride;

  const std::int32_t* cu_seqlens_q;  // device, [batch + 1]; null for dense
  const std::int32_t* cu_seqlens_k;
  std::int64_t total_q, total_k;  // varlen: rows of the packed tensors
  int seqlen_q;  // dense: every sequence's; varlen: the max (sizes the grid)
  int seqlen_k;
  int group_size;  // query heads per kv head

  float scale;
  float softcap;
  const float* alibi_slopes;  // element (b, h) at b * alibi_batch_stride + h; null: none
  std::int64_t alibi_batch_stride;
  const float* sinks;  // [heads_q]; null: none
  std::int64_t window_left, window_right;
  bool top_left;

  int num_m_blocks;  // query tiles per (batch, head)
};

}  // namespace ioattn::detail::sm80
