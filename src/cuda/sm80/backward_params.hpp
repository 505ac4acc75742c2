// ioattn sm80 backward: the plain-data parameters of the backward kernels, filled on the host by backward.cu.
//
// Internal buffers (all in the workspace) are indexed by a "flat row": b * seqlen_q + i for dense layouts,
// q_offset + i (the packed token index) for varlen, R = batch * seqlen_q or total_q rows in all.
//   lse2     fp32 [heads_q][R]            lse * log2(e); rows with lse = -inf (they see nothing) hold 0, so that
//                                          exp2(-inf - lse2) is 0 rather than NaN in the main kernel
//   dpre     fp32 [heads_q][R]            D = rowsum(dO * O)
//   dq_accum fp32 [R][heads_q][dim_qk]    sum over key tiles of dS K, unscaled
//   dq_sem   int32 [batch][heads_q][n_qtiles]   deterministic mode only: key tiles already added per query tile
#pragma once

#include <cstdint>

namespace ioattn::detail::sm80::bwd {

// One strided operand of the public layout: element (b, row, h, d) at ptr + b*sb + row*ss + h*sh + d.
struct BwdOperand {
  void* ptr;
  std::int64_t sb, ss, sh;
};

struct BwdMainParams {
  BwdOperand q, k, v, dout, dk, dv;
  const float* lse2;
  const float* dpre;
  float* dq_accum;
  int* dq_sem;  // null unless deterministic

  const std::int32_t* cu_q;  // varlen offsets, or null (dense)
  const std::int32_t* cu_k;
  std::int64_t seqlen_q, seqlen_k;  // dense lengths, or the max over the batch (varlen)
  std::int64_t rows;                // R
  int batch, heads_q, heads_kv, group;
  int n_qtiles;  // ceil(seqlen_q / Br): the dq_sem stride

  float scale;
  float softcap;
  const float* alibi;  // null: none; element (b, h) at b * alibi_bstride + h
  std::int64_t alibi_bstride;
  std::int64_t window_left, window_right;
  bool top_left;
};

}  // namespace ioattn::detail::sm80::bwd
