// tests/api: a contiguous ioattn_tensor (the C ABI's view) over a buffer, for the C ABI tests.
#pragma once

#include <cstdint>
#include <vector>

#include "ioattn/ioattn.h"

namespace ioattn::apitest {

// Row-major strides, on the CPU.
inline ioattn_tensor c_tensor(void* data, int32_t dtype, std::vector<int64_t> shape) {
  ioattn_tensor t{};
  t.data = data;
  t.dtype = dtype;
  t.device = IOATTN_DEVICE_CPU;
  t.rank = static_cast<int32_t>(shape.size());
  int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.shape[d] = shape[static_cast<std::size_t>(d)];
    t.stride[d] = stride;
    stride *= shape[static_cast<std::size_t>(d)];
  }
  return t;
}

}  // namespace ioattn::apitest
