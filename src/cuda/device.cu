// ioattn CUDA: how many GPUs this build can use.
#include <cuda_runtime.h>

#include "api/backend.hpp"

namespace ioattn::detail {

int cuda_device_count() {
  int count = 0;
  // No driver, no device, or a driver older than the runtime: all mean "no usable GPU", never an exception.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

}  // namespace ioattn::detail
