// ioattn internal: a validated attention problem, normalized for the backends.
//
// src/api/validate.cpp builds these from the public ForwardArgs/BackwardArgs after every check has passed, so a
// backend may trust every field. Dense and varlen layouts are addressed the same way:
//   row (b, i, h) of operand X lives at  X.ptr + b * X.batch_stride + (span.q_offset + i) * X.seq_stride
//                                          + h * X.head_stride      (elements; the last dimension is contiguous)
// where span = core::seq_span(b, cu_seqlens_q, cu_seqlens_k, seqlen_q, seqlen_k) and, for varlen, batch_stride = 0.
// The lse operand follows the same formula with the head dim of size 1.
#pragma once

#include <cstdint>

#include "ioattn/attention.hpp"
#include "ioattn/core/mask.hpp"
#include "ioattn/core/seqlen.hpp"

namespace ioattn::detail {

struct Operand {
  void* ptr = nullptr;
  std::int64_t batch_stride = 0;
  std::int64_t seq_stride = 0;
  std::int64_t head_stride = 0;

  // Element offset of row i (already including the sequence's offset) of batch b, head h.
  std::int64_t offset(std::int64_t b, std::int64_t row, std::int64_t h) const {
    return b * batch_stride + row * seq_stride + h * head_stride;
  }
};

struct Problem {
  DType dtype = DType::f32;  // of q, k, v, out (and dout, dq, dk, dv)
  Device device = Device::cpu;
  int device_index = 0;

  std::int64_t batch = 0;
  std::int64_t heads_q = 0;
  std::int64_t heads_kv = 0;
  std::int64_t seqlen_q = 0;  // dense: every sequence's length; varlen: the max over the batch
  std::int64_t seqlen_k = 0;
  std::int64_t dim_qk = 0;
  std::int64_t dim_v = 0;

  // Varlen: int32 [batch + 1] cumulative offsets on `device`, else null. total_* = rows in the packed layout.
  const std::int32_t* cu_seqlens_q = nullptr;
  const std::int32_t* cu_seqlens_k = nullptr;
  std::int64_t total_q = 0;
  std::int64_t total_k = 0;

  Operand q, k, v, out;
  Operand lse;  // fp32; ptr may be null in the forward when the caller asked for no lse

  float scale = 1.0f;
  float softcap = 0.0f;
  Mask mask;
  const float* alibi_slopes = nullptr;    // fp32, element (b, h) at b * alibi_batch_stride + h
  std::int64_t alibi_batch_stride = 0;    // 0 when the slopes are [heads_q]
  const float* sinks = nullptr;           // fp32 [heads_q]

  bool deterministic = false;
  void* stream = nullptr;
  Workspace workspace;
  int num_threads = 0;

  bool is_varlen() const { return cu_seqlens_q != nullptr; }
  std::int64_t group_size() const { return heads_q / heads_kv; }  // query heads per kv head
  core::SeqSpan span(std::int64_t b) const {
    return core::seq_span(b, cu_seqlens_q, cu_seqlens_k, seqlen_q, seqlen_k);
  }
  core::MaskRule mask_rule(const core::SeqSpan& s) const {
    return core::MaskRule::make(mask.window_left, mask.window_right, mask.alignment == Alignment::top_left, s.q_len,
                                s.k_len);
  }
  float alibi_slope(std::int64_t b, std::int64_t h) const {
    return alibi_slopes ? alibi_slopes[b * alibi_batch_stride + h] : 0.0f;
  }
};

struct BackwardProblem : Problem {
  Operand dout, dq, dk, dv;
  float* dsinks = nullptr;  // fp32 [heads_q], written when sinks is set
};

}  // namespace ioattn::detail
