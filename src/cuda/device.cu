// ioattn CUDA: how many GPUs this build can use, and the kernels' shared-memory opt-in.
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include <cuda_runtime.h>

#include "api/backend.hpp"
#include "cuda/scratch.hpp"
#include "cuda/shared_memory.hpp"
#include "ioattn/error.hpp"

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

void opt_in_shared_memory(const void* kernel, int smem_bytes, int device, const char* what, bool max_carveout) {
  static std::mutex mutex;
  static std::set<std::pair<const void*, int>> configured;
  std::lock_guard<std::mutex> lock(mutex);
  if (configured.count({kernel, device}) != 0) return;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (err == cudaSuccess && max_carveout) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw Error(ErrorCode::backend_failure, std::string(what) + ": cudaFuncSetAttribute(" +
                                                std::to_string(smem_bytes) + " bytes of shared memory) failed: " +
                                                cudaGetErrorString(err));
  }
  configured.insert({kernel, device});
}

StreamScratch::StreamScratch(const Workspace& given, std::size_t bytes, cudaStream_t stream, const char* what)
    : stream_(stream) {
  if (bytes == 0) return;
  if (given.data != nullptr && given.bytes >= bytes) {
    data_ = static_cast<unsigned char*>(given.data);
    return;
  }
  void* ptr = nullptr;
  const cudaError_t err = cudaMallocAsync(&ptr, bytes, stream);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw Error(ErrorCode::out_of_memory, std::string(what) + ": cannot allocate " + std::to_string(bytes) +
                                              " bytes of workspace: " + cudaGetErrorString(err));
  }
  data_ = static_cast<unsigned char*>(ptr);
  owned_ = true;
}

StreamScratch::~StreamScratch() {
  if (owned_) cudaFreeAsync(data_, stream_);
}

}  // namespace ioattn::detail
