// ioattn sm90: the "cuda_sm90" backend record (Hopper: TMA, wgmma, warp specialization). What either direction
// refuses goes to the sm80 "cuda" backend under "auto".
#include <string>

#include "api/backend.hpp"
#include "cuda/sm90/backward.hpp"
#include "cuda/sm90/forward.hpp"

namespace ioattn::detail {
namespace {

std::string sm90_unsupported(const Problem& p, bool backward) {
  return backward ? sm90::backward_unsupported(p) : sm90::forward_unsupported(p);
}

std::size_t sm90_forward_workspace_bytes(const Problem&) { return 0; }

}  // namespace

// Priority 200: above the sm80 "cuda" backend, so "auto" picks it on Hopper for the problems it supports.
const Backend kCudaSm90Backend{"cuda_sm90",
                               Device::cuda,
                               200,
                               &sm90_unsupported,
                               &sm90_forward_workspace_bytes,
                               &sm90::backward_workspace_bytes,
                               &sm90::run_forward,
                               &sm90::run_backward};

}  // namespace ioattn::detail
