// ioattn sm90 forward: what the backend record sees. No CuTe or CUDA headers here.
#pragma once

#include <string>

#include "api/problem.hpp"

namespace ioattn::detail::sm90 {

// Empty when run_forward can take the problem on this build and device; otherwise the reason (what the backward
// refuses is backward.hpp's backward_unsupported, which starts from this).
std::string forward_unsupported(const Problem& p);

// Empty when this build holds sm_90a code and device `device_index` is a compute capability 9.x GPU; otherwise why
// not (shared by every cuda_sm90 kernel's checks).
std::string hopper_unavailable(int device_index);

// Runs the forward on the problem's stream. Throws ErrorCode::unsupported where forward_unsupported is not empty,
// ErrorCode::backend_failure when a CUDA call fails.
void run_forward(const Problem& p);

// One compiled instantiation (instantiations/fwd.cu.in): this dtype, head dim kDim for q and k, kDimV for v.
template <DType kDtype, int kDim, int kDimV = kDim>
void launch_forward(const Problem& p);

}  // namespace ioattn::detail::sm90
