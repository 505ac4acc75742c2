// ioattn: the non-owning tensor view every public function takes.
//
// A TensorView names memory the caller owns: a pointer, an element type, where the memory lives, and a shape with
// strides counted in elements (not bytes). ioattn never allocates, frees or keeps a view after a call returns.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace ioattn {

enum class DType : std::uint8_t {
  f32,   // IEEE binary32
  f16,   // IEEE binary16
  bf16,  // bfloat16 (8-bit exponent, 7-bit mantissa)
  i32,   // 32-bit signed integer: cumulative sequence offsets
  f8e4m3,  // OCP FP8 E4M3FN (bias 7, largest finite 448, no infinities): operands of attention_forward_fp8 only
};

enum class Device : std::uint8_t { cpu, cuda };

// Bytes of one element of `dtype`.
constexpr std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::f8e4m3: return 1;
  }
  return 0;
}

const char* to_string(DType dtype);
const char* to_string(Device device);

// Largest rank a view can have. Attention tensors are at most [batch, seqlen, heads, head_dim].
inline constexpr int kMaxRank = 4;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int device_index = 0;  // CUDA ordinal; ignored on the CPU
  int rank = 0;
  std::array<std::int64_t, kMaxRank> shape{};
  std::array<std::int64_t, kMaxRank> stride{};  // in elements

  // A view with contiguous (row-major) strides.
  static TensorView contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                               Device device = Device::cpu, int device_index = 0);
  // A view with explicit strides (elements). Shape and strides must have the same length.
  static TensorView strided(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                            std::initializer_list<std::int64_t> stride, Device device = Device::cpu,
                            int device_index = 0);

  bool empty() const { return data == nullptr && rank == 0; }
  std::int64_t numel() const;
  std::int64_t size(int dim) const { return shape[static_cast<std::size_t>(dim)]; }
  // "bf16[2, 4096, 16, 128] strides [8388608, 2048, 128, 1] on cpu": what error messages quote.
  std::string describe() const;
};

}  // namespace ioattn
