// ioattn CPU benchmark: the baseline the tiled kernels are measured against. Attention written the textbook way on
// a BLAS: the whole score matrix S = Q K^T of one head in memory (seqlen^2 fp32), a row softmax, then O = P V.
// fp32, one sequence, layout [seqlen, heads, head_dim] (the library's dense layout with batch 1).
#pragma once

#include <cstdint>

namespace ioattn::bench {

struct MaterializedShape {
  std::int64_t seqlen = 0;
  std::int64_t heads = 0;
  std::int64_t head_dim = 0;
  bool causal = false;  // top-left = bottom-right here (square): key j visible to query i when j <= i
};

// Bytes of score storage each function needs: forward seqlen^2 floats, backward twice that (P and dP).
std::int64_t materialized_forward_bytes(const MaterializedShape& s);
std::int64_t materialized_backward_bytes(const MaterializedShape& s);

// out [seqlen, heads, head_dim], lse [heads, seqlen]; scores: materialized_forward_bytes of scratch.
void materialized_forward(const MaterializedShape& s, const float* q, const float* k, const float* v, float* out,
                          float* lse, float* scores);

// dq, dk, dv from out and lse of the forward: S recomputed (one more GEMM), P = exp(S - lse), dP = dO V^T,
// dS = P (dP - rowsum(dO O)), dV = P^T dO, dQ = dS K, dK = dS^T Q. scratch: materialized_backward_bytes.
void materialized_backward(const MaterializedShape& s, const float* q, const float* k, const float* v,
                           const float* out, const float* dout, const float* lse, float* dq, float* dk, float* dv,
                           float* scratch);

}  // namespace ioattn::bench
