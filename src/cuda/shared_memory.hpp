// ioattn CUDA: the dynamic shared-memory opt-in that every kernel above 48 KB needs, once per kernel and device.
#pragma once

namespace ioattn::detail {

// Sets `kernel`'s maximum dynamic shared memory to smem_bytes on `device` (the current device), once per (kernel,
// device); with max_carveout, also asks for all of L1 as shared memory. Throws ErrorCode::backend_failure naming
// `what` when the runtime refuses. Remembered in one non-inline function (src/cuda/device.cu) rather than in a static
// of each launch template: such a static is one object per process (STB_GNU_UNIQUE), shared with another copy of the
// library loaded beside this one, which would then skip its own opt-in and fail to launch.
void opt_in_shared_memory(const void* kernel, int smem_bytes, int device, const char* what,
                          bool max_carveout = false);

}  // namespace ioattn::detail
