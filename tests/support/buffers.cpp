#include "support/buffers.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "cpu/tensor_access.hpp"
#include "ioattn/attention.hpp"

#if IOATTN_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace ioattn::test {

HostBuffer::HostBuffer(DType dtype, std::int64_t elements)
    : dtype_(dtype), elements_(elements), bytes_(static_cast<std::size_t>(elements) * dtype_size(dtype)) {}

TensorView HostBuffer::view(std::initializer_list<std::int64_t> shape, std::initializer_list<std::int64_t> strides,
                            std::int64_t offset) {
  void* base = static_cast<std::byte*>(data()) + offset * static_cast<std::int64_t>(dtype_size(dtype_));
  TensorView v = strides.size() == 0 ? TensorView::contiguous(base, dtype_, shape)
                                     : TensorView::strided(base, dtype_, shape, strides);
  // A view reaching past the storage would be a bug in the test, not in the library: stop here, loudly.
  std::int64_t reach = offset;
  for (int d = 0; d < v.rank; ++d) {
    if (v.shape[d] == 0) return v;
    reach += (v.shape[d] - 1) * v.stride[d];
  }
  if (reach >= elements_) throw std::logic_error("HostBuffer::view: view reaches past the buffer");
  return v;
}

void HostBuffer::poison() {
  for (std::int64_t e = 0; e < elements_; ++e) {
    if (dtype_ == DType::i32) {
      static_cast<std::int32_t*>(data())[e] = 0x7fffffff;
    } else {
      cpu::store(data(), dtype_, e, std::numeric_limits<float>::quiet_NaN());
    }
  }
}

void HostBuffer::set(std::int64_t e, double value) {
  if (dtype_ == DType::i32) {
    static_cast<std::int32_t*>(data())[e] = static_cast<std::int32_t>(value);
  } else {
    cpu::store(data(), dtype_, e, static_cast<float>(value));
  }
}

double HostBuffer::get(std::int64_t e) const {
  if (dtype_ == DType::i32) return static_cast<const std::int32_t*>(data())[e];
  return cpu::load(data(), dtype_, e);
}

#if IOATTN_HAVE_CUDA

namespace {
void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}
}  // namespace

bool gpu_available() { return ioattn::cuda_device_count() > 0; }

DeviceBuffer::DeviceBuffer(const HostBuffer& host) : bytes_(host.bytes()) {
  if (!gpu_available()) throw std::runtime_error("DeviceBuffer: no usable GPU");
  if (bytes_ > 0) cuda_check(cudaMalloc(&ptr_, bytes_), "cudaMalloc");
  upload(host);
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

void DeviceBuffer::upload(const HostBuffer& host) {
  if (host.bytes() != bytes_) throw std::logic_error("DeviceBuffer::upload: size mismatch");
  if (bytes_ > 0) cuda_check(cudaMemcpy(ptr_, host.data(), bytes_, cudaMemcpyHostToDevice), "cudaMemcpy to device");
}

void DeviceBuffer::download(HostBuffer& host) const {
  if (host.bytes() != bytes_) throw std::logic_error("DeviceBuffer::download: size mismatch");
  cuda_check(cudaDeviceSynchronize(), "kernel execution (cudaDeviceSynchronize)");
  if (bytes_ > 0) cuda_check(cudaMemcpy(host.data(), ptr_, bytes_, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
}

#else

bool gpu_available() { return false; }

DeviceBuffer::DeviceBuffer(const HostBuffer&) { throw std::runtime_error("DeviceBuffer: built without CUDA"); }
DeviceBuffer::~DeviceBuffer() = default;
void DeviceBuffer::upload(const HostBuffer&) { throw std::runtime_error("DeviceBuffer: built without CUDA"); }
void DeviceBuffer::download(HostBuffer&) const { throw std::runtime_error("DeviceBuffer: built without CUDA"); }

#endif

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  std::swap(ptr_, other.ptr_);
  std::swap(bytes_, other.bytes_);
  return *this;
}

TensorView DeviceBuffer::rebase(const TensorView& host_view, const HostBuffer& host) const {
  TensorView v = host_view;
  if (host_view.data == nullptr) return v;
  const std::ptrdiff_t offset = static_cast<const std::byte*>(host_view.data) - static_cast<const std::byte*>(host.data());
  v.data = static_cast<std::byte*>(ptr_) + offset;
  v.device = Device::cuda;
  v.device_index = 0;
  return v;
}

}  // namespace ioattn::test
