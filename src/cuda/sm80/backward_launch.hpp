// ioattn sm80 backward: the launchers backward.cu calls. The main kernel's template is defined in
// backward_kernel.cuh and instantiated once per (dtype, head dims) in instantiations/bwd_*.cu, so no other
// translation unit compiles it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "api/problem.hpp"
#include "cuda/sm80/backward_params.hpp"

namespace ioattn::detail::sm80::bwd {

// The workspace, carved by backward.cu (see backward_params.hpp for each buffer's layout).
struct Workspace {
  float* dq_accum = nullptr;
  float* lse2 = nullptr;
  float* dpre = nullptr;
  int* dq_sem = nullptr;
  std::int64_t rows = 0;  // R
};

// Where the Workspace's buffers sit in one allocation: dq_accum, lse2 and dpre for the problem's query rows, then
// `semaphores` ints (the deterministic dQ order; 0 without it), each 256-byte aligned. The sm80 and sm90 backwards
// both carve their scratch this way for the passes above.
struct WorkspaceLayout {
  std::int64_t rows = 0;
  std::size_t dq_accum = 0, lse2 = 0, dpre = 0, sem = 0, total = 0;  // byte offsets, then the size

  static WorkspaceLayout make(const BackwardProblem& p, std::size_t semaphores);
  Workspace carve(unsigned char* base) const;  // dq_sem null without semaphores
};

template <class Elem, int kDimQK, int kDimV, int kVariant>
void launch_backward_main(const BwdMainParams& p, cudaStream_t stream);

// D = rowsum(dO * O) and lse2 for every (row, head).
void launch_backward_prepass(const BackwardProblem& p, const Workspace& ws, cudaStream_t stream);
// dq = scale * dq_accum in the output dtype and layout.
void launch_backward_postpass(const BackwardProblem& p, const Workspace& ws, cudaStream_t stream);
// dsinks[h] = -sum over rows of exp(sink_h - lse) * D, reduced in a fixed order.
void launch_backward_dsinks(const BackwardProblem& p, const Workspace& ws, cudaStream_t stream);

}  // namespace ioattn::detail::sm80::bwd
