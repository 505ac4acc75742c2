// CUDA runtime calls of the ioattn tool, all in this one file (compiled only when IOATTN_CUDA is ON).
#include "device_memory.hpp"

#include <cuda_runtime.h>

#include <string>

#include "ioattn/error.hpp"

namespace ioattn::cli::gpu {
namespace {

void check(cudaError_t status, const char* call) {
  if (status == cudaSuccess) return;
  const ErrorCode code =
      status == cudaErrorMemoryAllocation ? ErrorCode::out_of_memory : ErrorCode::backend_failure;
  throw Error(code, std::string(call) + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) +
                        ")");
}

cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

bool built_with_cuda() { return true; }

void* allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // take it out of the runtime's last-error slot, or the next launch check reports it
    throw Error(ErrorCode::out_of_memory, "cudaMalloc of " + std::to_string(bytes) + " bytes failed: out of memory");
  }
  check(status, "cudaMalloc");
  return ptr;
}

void release(void* device_ptr) noexcept {
  if (device_ptr != nullptr) cudaFree(device_ptr);  // no throw from destructors; a failure here is not actionable
}

void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemcpy(device_dst, host_src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (host to device)");
}

void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemcpy(host_dst, device_src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (device to host)");
}

void fill_async(void* device_dst, int byte, std::size_t bytes, void* stream) {
  if (bytes == 0) return;
  check(cudaMemsetAsync(device_dst, byte, bytes, as_stream(stream)), "cudaMemsetAsync");
}

void* create_stream() {
  // A blocking stream: it orders itself after the legacy default stream, where cudaMemcpy and cudaMemset run.
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamDefault), "cudaStreamCreateWithFlags");
  return stream;
}

void destroy_stream(void* stream) noexcept {
  if (stream != nullptr) cudaStreamDestroy(as_stream(stream));
}

void synchronize(void* stream) { check(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize"); }

void synchronize_device() { check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

double time_on_stream_ms(void* stream, const std::function<void()>& enqueue) {
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  check(cudaEventCreate(&start), "cudaEventCreate");
  // The events must be destroyed on every path, including an exception thrown by enqueue().
  struct Events {
    cudaEvent_t& a;
    cudaEvent_t& b;
    ~Events() {
      if (a) cudaEventDestroy(a);
      if (b) cudaEventDestroy(b);
    }
  } events{start, stop};
  check(cudaEventCreate(&stop), "cudaEventCreate");
  check(cudaEventRecord(start, as_stream(stream)), "cudaEventRecord");
  enqueue();
  check(cudaGetLastError(), "kernel launch");
  check(cudaEventRecord(stop, as_stream(stream)), "cudaEventRecord");
  check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0.0f;
  check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  return ms;
}

std::size_t free_bytes() {
  std::size_t free_now = 0;
  std::size_t total = 0;
  check(cudaMemGetInfo(&free_now, &total), "cudaMemGetInfo");
  return free_now;
}

const char* device_name() {
  static std::string name;
  if (name.empty()) {
    int device = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    name = std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
           std::to_string(prop.totalGlobalMem >> 30) + " GiB)";
  }
  return name.c_str();
}

}  // namespace ioattn::cli::gpu
