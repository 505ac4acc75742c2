// ioattn sm90: the "cuda_sm90" backend record (placeholder until the Hopper kernels land).
#include <string>

#include "api/backend.hpp"

namespace ioattn::detail {
namespace {

std::string sm90_unsupported(const Problem&, bool) { return "not implemented yet"; }
std::size_t no_forward_workspace(const Problem&) { return 0; }
std::size_t no_backward_workspace(const BackwardProblem&) { return 0; }
void no_forward(const Problem&) {}
void no_backward(const BackwardProblem&) {}

}  // namespace

// Priority 200: above the sm80 "cuda" backend, so "auto" picks it on Hopper for the problems it supports.
const Backend kCudaSm90Backend{"cuda_sm90",          Device::cuda,           200,       &sm90_unsupported,
                               &no_forward_workspace, &no_backward_workspace, &no_forward, &no_backward};

}  // namespace ioattn::detail
