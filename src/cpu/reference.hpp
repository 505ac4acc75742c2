// ioattn internal: the fp64 reference (the oracle), and the same-precision naive baseline the tests measure against.
//
// Both work on fp64 copies of the operands in one canonical layout, so that dense and varlen problems, any strides
// and any dtype compare element for element:
//   token t of query row i of sequence b:  t = b * seqlen_q + i (dense)  or  cu_seqlens_q[b] + i (varlen)
//   q, dq     [tokens_q, heads_q,  dim_qk]     out, dout [tokens_q, heads_q, dim_v]     lse [tokens_q, heads_q]
//   k, dk     [tokens_k, heads_kv, dim_qk]     v, dv     [tokens_k, heads_kv, dim_v]     dsinks [heads_q]
// The fp64 functions read only the metadata of the Problem (shape, spans, scale, softcap, mask, alibi, sinks); the
// operand pointers in it are ignored. That lets the finite-difference test run the oracle on true fp64 inputs.
#pragma once

#include <cstdint>
#include <vector>

#include "api/problem.hpp"

namespace ioattn::cpu::ref {

struct Canonical {
  std::int64_t tokens_q = 0;
  std::int64_t tokens_k = 0;

  explicit Canonical(const detail::Problem& p)
      : tokens_q(p.is_varlen() ? p.total_q : p.batch * p.seqlen_q),
        tokens_k(p.is_varlen() ? p.total_k : p.batch * p.seqlen_k) {}

  static std::int64_t token_q(const detail::Problem& p, std::int64_t b, const core::SeqSpan& s, std::int64_t i) {
    return (p.is_varlen() ? 0 : b * p.seqlen_q) + s.q_offset + i;
  }
  static std::int64_t token_k(const detail::Problem& p, std::int64_t b, const core::SeqSpan& s, std::int64_t j) {
    return (p.is_varlen() ? 0 : b * p.seqlen_k) + s.k_offset + j;
  }
};

// Widens operand `op` (dtype `dtype`: the problem's dtype, or f32 for lse with dim = 1 and head_stride from op) of a
// problem into the canonical layout. `query_side` selects the query token map (q, out, dout, dq, lse) or the key one.
std::vector<double> gather(const detail::Problem& p, const detail::Operand& op, DType dtype, bool query_side,
                           std::int64_t heads, std::int64_t dim);
// Rounds canonical values to `dtype` and writes them through operand `op`; the inverse of gather.
void scatter(const detail::Problem& p, const std::vector<double>& src, const detail::Operand& op, DType dtype,
             bool query_side, std::int64_t heads, std::int64_t dim);

// out and lse (natural log; -inf for a row that sees nothing and has no sink, with out = 0).
void forward_f64(const detail::Problem& p, const double* q, const double* k, const double* v, double* out,
                 double* lse);

// dq, dk, dv (dk and dv summed over each GQA group) and, when p.sinks is set, dsinks, from the given out and lse:
// P = exp(s - lse) and D_i = dout_i . out_i, as a FlashAttention backward uses them. Every output is overwritten.
void backward_f64(const detail::Problem& p, const double* q, const double* k, const double* v, const double* out,
                  const double* lse, const double* dout, double* dq, double* dk, double* dv, double* dsinks);

// The same computation in fp32 arithmetic, for naive::backward_from_stored.
void backward_f32(const detail::Problem& p, const float* q, const float* k, const float* v, const float* out,
                  const float* lse, const float* dout, float* dq, float* dk, float* dv, float* dsinks);

}  // namespace ioattn::cpu::ref

namespace ioattn::cpu::naive {

// The yardstick: materialized attention as a straightforward PyTorch program in the inputs' dtype computes it.
// Matrix products accumulate in fp32 and round their result to `dtype`; softmax runs in fp32 on the rounded scores
// and P is rounded to `dtype`; elementwise steps (scaling q, softcap) round after each op. lse, which a naive program
// does not produce, is taken in fp32 from the rounded scores. For dtype f32 every rounding is the identity.
// Inputs and outputs are canonical (see above) and hold values of `dtype` widened to fp64.
void forward(const detail::Problem& p, DType dtype, const double* q, const double* k, const double* v, double* out,
             double* lse);

// The autograd backward of the program above, in the same precision, recomputing its own forward (as autograd keeps
// its saved tensors); dsinks when p.sinks is set (the sink joins the softmax as one more column; its gradient,
// summed over rows, is rounded to dtype as the sum of a dtype tensor is).
void backward(const detail::Problem& p, DType dtype, const double* q, const double* k, const double* v,
              const double* dout, double* dq, double* dk, double* dv, double* dsinks);

// The second yardstick for gradients: the FlashAttention formulation of the backward, materialized in fp32
// arithmetic, from out and lse as stored (`out` already rounded to dtype, `lse` to fp32): P = exp(s - lse) and
// D_i = dout_i . out_i. Any backward behind this API starts from those stored values, and where a row's softmax is
// nearly one-hot (a sink or one dominant key) D_i cancels against dP_ij and amplifies their fp32 rounding: an error
// the PyTorch-style program above does not show (it takes D from its own P), most visibly in fp32. Results are
// rounded to dtype (dsinks stays fp32).
void backward_from_stored(const detail::Problem& p, DType dtype, const double* q, const double* k, const double* v,
                          const double* out, const double* lse, const double* dout, double* dq, double* dk,
                          double* dv, double* dsinks);

}  // namespace ioattn::cpu::naive
