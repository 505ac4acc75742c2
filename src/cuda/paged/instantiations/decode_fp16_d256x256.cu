// One instantiation of the paged decode kernels (both row-block variants); see src/cuda/paged/launch.cuh.
#include "cuda/paged/launch.cuh"

namespace ioattn::detail::paged {
IOATTN_PAGED_INSTANTIATE(__half, 256, 256)
}  // namespace ioattn::detail::paged
