// One instantiation of the paged decode kernels (both row-block variants); see src/cuda/paged/launch.cuh.
#include "cuda/paged/launch.cuh"

namespace ioattn::detail::paged {
IOATTN_PAGED_INSTANTIATE(__nv_bfloat16, 128, 128)
}  // namespace ioattn::detail::paged
