// ioattn sm90: the FP8 (e4m3) forward on Hopper, as src/api/fp8_dispatch.cpp sees it. No CuTe or CUDA headers here.
#pragma once

#include <string>

#include "api/fp8_problem.hpp"

namespace ioattn::detail::sm90 {

// Empty when run_forward_fp8 can take the problem on this build and device; otherwise the reason.
std::string fp8_forward_unsupported(const Fp8Problem& fp);

// Runs the FP8 forward on the problem's stream. Throws ErrorCode::unsupported where fp8_forward_unsupported is not
// empty, ErrorCode::backend_failure when a CUDA call fails.
void run_forward_fp8(const Fp8Problem& fp);

// One compiled instantiation (instantiations/fp8.cu.in): this output dtype, head dim kDim for q, k and v.
template <DType kOut, int kDim>
void launch_forward_fp8(const Fp8Problem& fp);

}  // namespace ioattn::detail::sm90
