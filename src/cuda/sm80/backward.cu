// Stub: the real kernels land in backward_*.cu{,h}.
#include "cuda/sm80/backward.hpp"

#include "ioattn/error.hpp"

namespace ioattn::detail::sm80 {

void run_backward(const BackwardProblem&) {
  throw Error(ErrorCode::unsupported, "cuda backward: not implemented yet");
}
std::size_t backward_workspace_bytes(const BackwardProblem&) { return 0; }
std::string backward_unsupported(const Problem&) { return "cuda backward: not implemented yet"; }

}  // namespace ioattn::detail::sm80
