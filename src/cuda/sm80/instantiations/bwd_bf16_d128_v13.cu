// ioattn sm80 backward main kernel: bf16, head dims 128/128, tuning variant 13 (built with IOATTN_SM80_BWD_VARIANTS=ON).
#include "cuda/sm80/backward_kernel.cuh"

template void ioattn::detail::sm80::bwd::launch_backward_main<cutlass::bfloat16_t, 128, 128, 13>(
    const ioattn::detail::sm80::bwd::BwdMainParams&, cudaStream_t);
