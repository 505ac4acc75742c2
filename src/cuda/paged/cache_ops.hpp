// ioattn cuda paged: the cache write and page copy kernels' entry points (cache_ops.cu).
#pragma once

#include "api/paged_problem.hpp"

namespace ioattn::detail::paged {

void kv_write(const PagedWriteProblem& p);
void copy_pages(const PagedCopyProblem& p);

}  // namespace ioattn::detail::paged
