// ioattn cuda paged: a kernel launch that may be a programmatic dependent launch (sm90 and later): the kernel's CTAs
// may then be scheduled before the stream's previous kernel ends (once that kernel's CTAs all reached
// griddepcontrol.launch_dependents, or ended), so the kernel must run griddepcontrol.wait before it reads anything
// the previous kernel writes. The decode and the combine launch through it.
#pragma once

#include <cstddef>
#include <utility>

#include <cuda_runtime.h>

#include "cuda/sm80/common/cuda_check.cuh"

namespace ioattn::detail::paged {

template <class... Params, class... Args>
void launch_maybe_programmatic(void (*kernel)(Params...), dim3 grid, dim3 block, int smem_bytes, void* stream,
                               bool programmatic, const char* what, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = static_cast<std::size_t>(smem_bytes);
  config.stream = static_cast<cudaStream_t>(stream);
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = programmatic ? 1 : 0;
  sm80::cuda_check(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), what);
}

}  // namespace ioattn::detail::paged
