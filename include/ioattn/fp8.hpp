// ioattn: FP8 (e4m3) attention forward, and the quantization that makes its operands.
//
// Operands are OCP FP8 E4M3FN codes (DType::f8e4m3) with fp32 descale factors: the value an operand stands for is
//   value = fp8 code (as a number) x descale
// where one descale covers a group of elements:
//   block_rows == 0   one per (batch, head): q_descale [batch, heads_q], k_descale and v_descale [batch, heads_kv]
//   block_rows  > 0   one per (batch, head, block of block_rows consecutive sequence rows; a multiple of 16):
//                     q_descale [batch, heads_q, ceil(seqlen_q / block_rows)],
//                     k_descale and v_descale [batch, heads_kv, ceil(seqlen_k / block_rows)]
// (the same block_rows for q, k and v; descales may have any strides with a contiguous last dimension).
//
// attention_forward_fp8 computes exactly what attention_forward (attention.hpp) computes on the dequantized q, k, v:
// the same masks, softcap, ALiBi, sinks, GQA and lse. Layouts are the dense ones of attention.hpp:
//   q [batch, seqlen_q, heads_q, head_dim_qk], k [batch, seqlen_k, heads_kv, head_dim_qk],
//   v [batch, seqlen_k, heads_kv, head_dim_v]  (fp8 e4m3)
//   out [batch, seqlen_q, heads_q, head_dim_v] (fp32, fp16 or bf16), lse [batch, heads_q, seqlen_q] (fp32, optional)
// Varlen layouts are not supported yet (ErrorCode::unsupported). Backends: "reference" (fp64 on the CPU) and
// "cuda_sm90" (Hopper GPUs: head dims 128 and 256, bf16 or fp16 out, one descale per (batch, head) or per block of
// a power of two of rows, no softcap or ALiBi yet; what it refuses gets ErrorCode::unsupported naming why). P goes through P V as e4m3 too, so the GPU
// result carries that rounding on top of the operands' (docs/NUMERICS.md).
//
// Incoherent processing: quantize_fp8(..., rotate = true) multiplies each head's row by the normalized
// Walsh-Hadamard matrix H / sqrt(head_dim) before quantizing. H / sqrt(d) is orthogonal and symmetric, so rotating
// both q and k leaves every score <q_i, k_j> unchanged while spreading an outlier coordinate over the whole head
// dim, which shrinks the group's largest |value| and with it the quantization step. Rotate q and k, never v (a
// rotated v would rotate out).
#pragma once

#include <cstdint>
#include <optional>

#include "ioattn/attention.hpp"
#include "ioattn/tensor.hpp"

namespace ioattn {

struct Fp8Scales {
  TensorView q_descale, k_descale, v_descale;  // fp32, shapes above
  std::int64_t block_rows = 0;                 // 0: per (batch, head); else rows per block, a multiple of 16
};

struct Fp8ForwardArgs {
  TensorView q, k, v;  // fp8 e4m3, dense layouts
  Fp8Scales scales;
  TensorView out;  // written: fp32, fp16 or bf16
  TensorView lse;  // written when given: fp32 [batch, heads_q, seqlen_q], natural log
  std::optional<Varlen> varlen;  // not supported yet: a call with varlen set gets ErrorCode::unsupported
};

// FP8 attention forward. Throws ioattn::Error naming the argument on bad input, leaving out and lse untouched.
void attention_forward_fp8(const Fp8ForwardArgs& args, const AttentionParams& params = {});

// Quantizes input (fp32, fp16 or bf16 [batch, seqlen, heads, head_dim]) into output (fp8 e4m3, the same shape) and
// descale (fp32 [batch, heads] for block_rows 0, else [batch, heads, ceil(seqlen / block_rows)]). Each group's
// descale is max|value| / 448 (so the largest maps to 448 and nothing saturates; 1 for a group of zeros), and each
// code is the scaled value rounded to nearest even. rotate: apply H / sqrt(head_dim) to each row first (head_dim a
// power of two). Input must be finite. CPU tensors only for now. Throws ioattn::Error naming the argument, writing
// nothing, on bad input.
void quantize_fp8(const TensorView& input, const TensorView& output, const TensorView& descale,
                  std::int64_t block_rows = 0, bool rotate = false);

}  // namespace ioattn
