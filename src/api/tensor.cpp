// ioattn: TensorView construction and the text that error messages quote.
#include <sstream>
#include <string>

#include "ioattn/error.hpp"
#include "ioattn/tensor.hpp"

namespace ioattn {

const char* to_string(DType dtype) {
  switch (dtype) {
    case DType::f32: return "fp32";
    case DType::f16: return "fp16";
    case DType::bf16: return "bf16";
    case DType::i32: return "int32";
    case DType::f8e4m3: return "fp8_e4m3";
  }
  return "unknown-dtype";
}

const char* to_string(Device device) {
  switch (device) {
    case Device::cpu: return "cpu";
    case Device::cuda: return "cuda";
  }
  return "unknown-device";
}

namespace {

void check_rank(std::size_t rank, const char* what) {
  if (rank > static_cast<std::size_t>(kMaxRank)) {
    throw Error(ErrorCode::invalid_argument, std::string("TensorView::") + what + ": expected at most " +
                                                 std::to_string(kMaxRank) + " dimensions, got " +
                                                 std::to_string(rank));
  }
}

}  // namespace

TensorView TensorView::contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape, Device device,
                                  int device_index) {
  check_rank(shape.size(), "contiguous");
  TensorView view;
  view.data = data;
  view.dtype = dtype;
  view.device = device;
  view.device_index = device_index;
  view.rank = static_cast<int>(shape.size());
  int d = 0;
  for (std::int64_t extent : shape) view.shape[static_cast<std::size_t>(d++)] = extent;
  // Row-major: the stride of a dim is the product of the extents after it. Extents of 0 or 1 still multiply as 1
  // so that the strides stay meaningful (and nonzero) for views of empty tensors.
  std::int64_t running = 1;
  for (int i = view.rank - 1; i >= 0; --i) {
    view.stride[static_cast<std::size_t>(i)] = running;
    const std::int64_t extent = view.shape[static_cast<std::size_t>(i)];
    running *= extent > 1 ? extent : 1;
  }
  return view;
}

TensorView TensorView::strided(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                               std::initializer_list<std::int64_t> stride, Device device, int device_index) {
  check_rank(shape.size(), "strided");
  if (shape.size() != stride.size()) {
    throw Error(ErrorCode::invalid_argument, "TensorView::strided: expected as many strides as dimensions (" +
                                                 std::to_string(shape.size()) + "), got " +
                                                 std::to_string(stride.size()));
  }
  TensorView view;
  view.data = data;
  view.dtype = dtype;
  view.device = device;
  view.device_index = device_index;
  view.rank = static_cast<int>(shape.size());
  int d = 0;
  for (std::int64_t extent : shape) view.shape[static_cast<std::size_t>(d++)] = extent;
  d = 0;
  for (std::int64_t s : stride) view.stride[static_cast<std::size_t>(d++)] = s;
  return view;
}

std::int64_t TensorView::numel() const {
  // Saturates instead of wrapping, so that an absurd shape can never look small; validation rejects it anyway.
  std::int64_t n = 1;
  for (int i = 0; i < rank && i < kMaxRank; ++i) {
    const std::int64_t extent = shape[static_cast<std::size_t>(i)];
    if (extent <= 0) return 0;
    if (__builtin_mul_overflow(n, extent, &n)) return INT64_MAX;
  }
  return n;
}

std::string TensorView::describe() const {
  if (empty()) return "(none)";
  std::ostringstream os;
  os << to_string(dtype) << "[";
  for (int i = 0; i < rank && i < kMaxRank; ++i) os << (i ? ", " : "") << shape[static_cast<std::size_t>(i)];
  os << "] strides [";
  for (int i = 0; i < rank && i < kMaxRank; ++i) os << (i ? ", " : "") << stride[static_cast<std::size_t>(i)];
  os << "] on " << to_string(device);
  if (device == Device::cuda) os << ":" << device_index;
  if (data == nullptr) os << " (data null)";
  return os.str();
}

}  // namespace ioattn
