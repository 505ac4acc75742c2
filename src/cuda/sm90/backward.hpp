// ioattn sm90 backward: what the backend record sees. No CuTe or CUDA headers here.
//
// The backward runs three passes on the problem's stream: a pre-pass (lse2 = lse log2(e) and delta = rowsum(dO * O)
// into the workspace, the fp32 dQ accumulator zeroed; backward_passes.cuh, or at other head dims the sm80 backward's
// pre-pass and a memset), the Hopper main kernel (backward_kernel.cuh: dK and dV, and dQ accumulated in fp32), and a
// post-pass (dQ = scale * accumulator in the output dtype; backward_passes.cuh or the sm80 one); with sinks, the
// sm80 dsinks pass too.
#pragma once

#include <cstddef>
#include <string>

#include "api/problem.hpp"

namespace ioattn::detail::sm90 {

// Empty when run_backward can take the problem (dispatch passes the BackwardProblem it built); otherwise why not,
// so that "auto" hands it to the sm80 "cuda" backend.
std::string backward_unsupported(const Problem& p);

// Scratch bytes run_backward needs: the fp32 dQ accumulator, lse2 and delta (deterministic: and a semaphore per
// query tile of every query head and sequence).
std::size_t backward_workspace_bytes(const BackwardProblem& p);

// Queries per tile of the main kernel at head dim `dim` (its keys: 128 per CTA, 64 at head dim 256). Head dim 64
// takes 128 queries: S^T and dP^T are 64 registers a thread each, dK and dV 32; head dims 128 and 256 take 64
// queries: S^T, dP^T 32, dK and dV 64 each (at 256, half the columns each: backward_traits.cuh).
constexpr int backward_block_m(int dim) { return dim == 64 ? 128 : 64; }

// dQ warps of the main kernel at head dim `dim`: one, or above 128 one per consumer warpgroup, each sending its own
// columns (backward_traits.cuh). The deterministic order keeps a semaphore per query tile and dQ warp.
constexpr int backward_dq_warps(int dim) { return dim > 128 ? 2 : 1; }

// Uses p.workspace when it holds backward_workspace_bytes(p), else allocates (stream-ordered) and frees its own.
void run_backward(const BackwardProblem& p);

// The main kernel's workspace buffers (the layout of sm80/backward_params.hpp).
struct BackwardBuffers {
  const float* lse2;
  const float* delta;
  float* dq_accum;
  std::int64_t rows;
  // Deterministic: [batch][heads_q][query tiles of seqlen_q] key tiles already added into each query tile's dQ,
  // zeroed; else null.
  int* dq_sem;
};

// One compiled instantiation (instantiations/bwd.cu.in): this dtype, head dim kDim for q, k and v.
template <DType kDtype, int kDim>
void launch_backward(const BackwardProblem& p, const BackwardBuffers& buffers);

}  // namespace ioattn::detail::sm90
