// ioattn sm80 forward: what the backend record sees. No CuTe or CUDA headers here.
#pragma once

#include <string>

#include "api/problem.hpp"

namespace ioattn::detail::sm80 {

// Runs the forward on the problem's stream. Throws ErrorCode::unsupported for a (dtype, head dim) pair not compiled
// into this build, ErrorCode::backend_failure when a CUDA call fails.
void run_forward(const Problem& p);

// Empty when run_forward can take the problem; otherwise the reason, naming the CMake option where it is a build
// choice.
std::string forward_unsupported(const Problem& p);

// One compiled instantiation: kernels for this dtype and (qk, v) head dims. Defined in instantiations/fwd_*.cu.
template <DType kDtype, int kDimQK, int kDimV>
void launch_forward(const Problem& p);

}  // namespace ioattn::detail::sm80
