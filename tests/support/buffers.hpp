// Test support: owned host memory behind the library's non-owning views, and its mirror in CUDA device memory.
//
// A HostBuffer is raw storage of one dtype; views into it (TensorView) may be strided slices, so that several
// operands can share one buffer (q, k, v as slices of a packed qkv tensor) and gaps between rows exist. Poisoning
// fills all of it with NaN, gaps included, so a backend that skips an element it should write leaves a NaN behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "ioattn/tensor.hpp"

namespace ioattn::test {

class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(DType dtype, std::int64_t elements);

  DType dtype() const { return dtype_; }
  std::int64_t elements() const { return elements_; }
  std::size_t bytes() const { return bytes_.size(); }
  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }

  // A view of `shape` with `strides` (elements) starting `offset` elements in; contiguous strides when none given.
  TensorView view(std::initializer_list<std::int64_t> shape, std::initializer_list<std::int64_t> strides = {},
                  std::int64_t offset = 0);

  // Every element = NaN (floating dtypes) or 0x7fffffff (i32).
  void poison();
  // Element e = value, rounded to the buffer's dtype (i32: truncated).
  void set(std::int64_t e, double value);
  double get(std::int64_t e) const;
  // Every element drawn from `draw` (a callable returning double), rounded to the dtype.
  template <class Draw>
  void fill(Draw&& draw) {
    for (std::int64_t e = 0; e < elements_; ++e) set(e, draw());
  }

 private:
  DType dtype_ = DType::f32;
  std::int64_t elements_ = 0;
  std::vector<std::byte> bytes_;
};

// The same bytes in CUDA device memory (device 0). Without a CUDA build or without a GPU, constructing one throws.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(const HostBuffer& host);  // allocates and uploads
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void upload(const HostBuffer& host);
  void download(HostBuffer& host) const;
  // `host_view` (a view into `host`) rebased onto this buffer: same shape, strides and offset, device memory.
  TensorView rebase(const TensorView& host_view, const HostBuffer& host) const;

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// True when this build has CUDA and a GPU is usable.
bool gpu_available();

}  // namespace ioattn::test
