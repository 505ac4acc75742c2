// ioattn CUDA: paged attention (placeholder until the split-KV kernels land).
#include <string>

#include "api/paged_problem.hpp"

namespace ioattn::detail {
namespace {

std::string cuda_paged_unsupported(const PagedProblem&) { return "not implemented yet"; }
PagedSplit cuda_paged_plan(const PagedProblem&, SplitKV, std::int64_t) { return {1, 1, 0}; }
void cuda_paged_forward(const PagedProblem&) {}
void cuda_paged_write(const PagedWriteProblem&) {}
void cuda_paged_copy(const PagedCopyProblem&) {}

}  // namespace

const PagedBackend kCudaPagedBackend{"cuda", Device::cuda, 100, cuda_paged_unsupported, cuda_paged_plan,
                                     cuda_paged_forward, cuda_paged_write, cuda_paged_copy};

}  // namespace ioattn::detail
