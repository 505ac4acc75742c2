// ioattn CLI: the only door to the CUDA runtime. device_memory.cpp implements it with the runtime (CUDA builds);
// device_memory_none.cpp implements it for CPU-only builds, where every call says CUDA is not built in.
// Every runtime call is checked; a failure throws ioattn::Error(backend_failure) naming the call.
#pragma once

#include <cstddef>
#include <functional>

namespace ioattn::cli::gpu {

// True when this build of the tool was compiled with the CUDA runtime.
bool built_with_cuda();

void* allocate(std::size_t bytes);  // device memory; throws Error(out_of_memory) with the size when it fails
void release(void* device_ptr) noexcept;
// Synchronous copies on the legacy default stream (the host-to-device one may return before the data has landed:
// call synchronize_device() before kernels on another stream read it).
void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes);
void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes);
// Byte fill on `stream`, ordered before later work on that stream.
void fill_async(void* device_dst, int byte, std::size_t bytes, void* stream);

void* create_stream();
void destroy_stream(void* stream) noexcept;
void synchronize(void* stream);
// Waits for all work on the device, copies on the legacy default stream included.
void synchronize_device();

// Milliseconds between CUDA events recorded on `stream` just before and just after `enqueue` (which only launches
// work on that stream); waits for the second event.
double time_on_stream_ms(void* stream, const std::function<void()>& enqueue);

// cudaMemGetInfo's free bytes on the current device.
std::size_t free_bytes();
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" for the current device.
const char* device_name();

}  // namespace ioattn::cli::gpu
