// CPU-only builds of the ioattn tool: the device interface exists, and every use of it says why it cannot work.
#include "device_memory.hpp"

#include "ioattn/error.hpp"

namespace ioattn::cli::gpu {
namespace {

[[noreturn]] void no_cuda() {
  throw Error(ErrorCode::unsupported, "--device cuda: this build of ioattn has no CUDA support (configured with "
                                      "IOATTN_CUDA=OFF)");
}

}  // namespace

bool built_with_cuda() { return false; }
void* allocate(std::size_t) { no_cuda(); }
void release(void*) noexcept {}
void copy_to_device(void*, const void*, std::size_t) { no_cuda(); }
void copy_to_host(void*, const void*, std::size_t) { no_cuda(); }
void fill_async(void*, int, std::size_t, void*) { no_cuda(); }
void* create_stream() { no_cuda(); }
void destroy_stream(void*) noexcept {}
void synchronize(void*) { no_cuda(); }
void synchronize_device() { no_cuda(); }
double time_on_stream_ms(void*, const std::function<void()>&) { no_cuda(); }
std::size_t free_bytes() { no_cuda(); }
const char* device_name() { return "none"; }

}  // namespace ioattn::cli::gpu
