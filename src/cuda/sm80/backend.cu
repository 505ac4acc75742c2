// ioattn sm80: the "cuda" backend record (tensor-core kernels for Ampere and later).
#include <string>

#include "api/backend.hpp"
#include "cuda/sm80/forward.cuh"
#include "ioattn/error.hpp"

#if __has_include("cuda/sm80/backward.hpp")
#include "cuda/sm80/backward.hpp"
#define IOATTN_SM80_HAVE_BACKWARD 1
#else
#define IOATTN_SM80_HAVE_BACKWARD 0
#endif

namespace ioattn::detail {
namespace {

std::string sm80_unsupported(const Problem& p, bool backward) {
  std::string why = sm80::forward_unsupported(p);
  if (!why.empty() || !backward) return why;
#if IOATTN_SM80_HAVE_BACKWARD
  return sm80::backward_unsupported(p);
#else
  return "the cuda backend's backward is not built yet";
#endif
}

std::size_t sm80_forward_workspace_bytes(const Problem&) { return 0; }

std::size_t sm80_backward_workspace_bytes(const BackwardProblem& p) {
#if IOATTN_SM80_HAVE_BACKWARD && defined(IOATTN_SM80_BACKWARD_WORKSPACE)
  return sm80::backward_workspace_bytes(p);
#else
  (void)p;
  return 0;
#endif
}

void sm80_forward(const Problem& p) { sm80::run_forward(p); }

void sm80_backward(const BackwardProblem& p) {
#if IOATTN_SM80_HAVE_BACKWARD
  sm80::run_backward(p);
#else
  (void)p;
  throw Error(ErrorCode::unsupported, "the cuda backend's backward is not built yet");
#endif
}

}  // namespace

// Priority 100: above the CPU backends, so "auto" picks it for tensors on a GPU.
const Backend kCudaSm80Backend{
    "cuda",
    Device::cuda,
    100,
    &sm80_unsupported,
    &sm80_forward_workspace_bytes,
    &sm80_backward_workspace_bytes,
    &sm80_forward,
    &sm80_backward,
};

}  // namespace ioattn::detail
