// ioattn sm90: the "cuda_sm90" backend record (Hopper: TMA, wgmma, warp specialization). Forward only; the
// backward is refused so that "auto" hands it to the sm80 "cuda" backend.
#include <string>

#include "api/backend.hpp"
#include "ioattn/error.hpp"
#include "cuda/sm90/forward.hpp"

namespace ioattn::detail {
namespace {

std::size_t sm90_forward_workspace_bytes(const Problem&) { return 0; }
std::size_t sm90_backward_workspace_bytes(const BackwardProblem&) { return 0; }
void sm90_backward(const BackwardProblem& p) { throw Error(ErrorCode::unsupported, sm90::forward_unsupported(p, true)); }

}  // namespace

// Priority 200: above the sm80 "cuda" backend, so "auto" picks it on Hopper for the problems it supports.
const Backend kCudaSm90Backend{"cuda_sm90",
                               Device::cuda,
                               200,
                               &sm90::forward_unsupported,
                               &sm90_forward_workspace_bytes,
                               &sm90_backward_workspace_bytes,
                               &sm90::run_forward,
                               &sm90_backward};

}  // namespace ioattn::detail
