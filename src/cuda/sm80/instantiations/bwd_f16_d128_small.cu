// ioattn sm80 backward main kernel: f16, head dims 128/128, the tiling for GPUs with less shared memory (backward_config.hpp).
#include "cuda/sm80/backward_kernel.cuh"

template void ioattn::detail::sm80::bwd::launch_backward_main<cutlass::half_t, 128, 128, 5>(
    const ioattn::detail::sm80::bwd::BwdMainParams&, cudaStream_t);
