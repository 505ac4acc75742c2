// ioattn sm80: the "cuda" backend record (tensor-core kernels for Ampere and later).
#include <string>

#include "api/backend.hpp"
#include "cuda/sm80/backward.hpp"
#include "cuda/sm80/forward.cuh"

namespace ioattn::detail {
namespace {

std::string sm80_unsupported(const Problem& p, bool backward) {
  std::string why = sm80::forward_unsupported(p);
  if (!why.empty() || !backward) return why;
  return sm80::backward_unsupported(p);
}

std::size_t sm80_forward_workspace_bytes(const Problem&) { return 0; }

}  // namespace

// Priority 100: above the CPU backends, so "auto" picks it for tensors on a GPU.
const Backend kCudaSm80Backend{
    "cuda",
    Device::cuda,
    100,
    &sm80_unsupported,
    &sm80_forward_workspace_bytes,
    &sm80::backward_workspace_bytes,
    &sm80::run_forward,
    &sm80::run_backward,
};

}  // namespace ioattn::detail
