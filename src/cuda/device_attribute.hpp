// ioattn CUDA: a device attribute read once per device and cached, for launch decisions made on every call (the
// SM count of a persistent grid, the L2 size a tile order sorts by).
#pragma once

#include <atomic>

#include <cuda_runtime.h>

#include "cuda/sm80/common/cuda_check.cuh"

namespace ioattn::detail {

// The attribute of `device` (0 in the cache: not read yet); `fallback` for device indices past 63. `what` names the
// call in the error a failed read raises.
template <cudaDeviceAttr kAttribute>
int device_attribute(int device, int fallback, const char* what) {
  static std::atomic<int> values[64];
  if (device < 0 || device >= 64) return fallback;
  int n = values[device].load(std::memory_order_relaxed);
  if (n == 0) {
    sm80::cuda_check(cudaDeviceGetAttribute(&n, kAttribute, device), what);
    values[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

}  // namespace ioattn::detail
