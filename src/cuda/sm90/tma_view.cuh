// ioattn sm90: the global-memory views tensor maps are made from, shared by the Hopper kernels' launchers.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda.h>
#include <cute/tensor.hpp>
#include <cutlass/cuda_host_adapter.hpp>
#include <cutlass/numeric_types.h>

#include "api/problem.hpp"

namespace ioattn::detail::sm90 {

// An operand as (rows, dim, heads, batch) with rows of kCols Elements. A dimension of extent 1 is never stepped,
// but a tensor map still wants a valid stride there (a 16-byte multiple, and cute's mode ordering is happier with
// no zero): the row length.
template <class Element, int kCols>
auto make_gmem_view(const Operand& x, std::int64_t rows, std::int64_t heads, std::int64_t batches) {
  using namespace cute;
  const std::int64_t row_stride = rows > 1 ? x.seq_stride : kCols;
  const std::int64_t head_stride = heads > 1 ? x.head_stride : kCols;
  const std::int64_t batch_stride = batches > 1 ? x.batch_stride : kCols;
  return make_tensor(make_gmem_ptr(static_cast<Element const*>(x.ptr)),
                     make_shape(int(rows > 1 ? rows : 1), int(kCols), int(heads), int(batches)),
                     make_stride(row_stride, _1{}, head_stride, batch_stride));
}

// A tensor map can describe x as (rows, dim, heads, batch): a 16-byte aligned base, and 16-byte multiples for the
// strides of every extent above 1 (the others are replaced by make_gmem_view).
inline bool tma_describable(const Operand& x, std::int64_t rows, std::int64_t heads, std::int64_t batches,
                            std::int64_t element_bytes) {
  const auto fits = [&](std::int64_t extent, std::int64_t stride) {
    return extent <= 1 || (stride > 0 && stride * element_bytes % 16 == 0);
  };
  return reinterpret_cast<std::uintptr_t>(x.ptr) % 16 == 0 && fits(rows, x.seq_stride) &&
         fits(heads, x.head_stride) && fits(batches, x.batch_stride);
}

// Packed GQA: the tensor map that loads a query tile of `tokens` rows x `group` heads of one kv head's group, as
// tokens * group consecutive tile rows (row r = token r / group, head r % group), 128 bytes (the swizzle's width:
// 64 bf16 / fp16 or 128 e4m3 columns) per load. Dimensions, innermost first: (dim, head in group, row, kv head,
// batch). cute's tensor maps need the box as a compile-time shape; the group is a run-time value, so this one is
// encoded directly. Returns false where the driver refuses it (the caller then does not pack).
template <class Element>
bool make_packed_q_map(CUtensorMap* map, const Operand& q, int dim, std::int64_t rows, std::int64_t heads_kv,
                       int group, std::int64_t batches, int tokens) {
  static_assert(sizeof(Element) == 2 || std::is_same_v<Element, cutlass::float_e4m3_t>);
  constexpr CUtensorMapDataType kType = std::is_same_v<Element, cutlass::bfloat16_t> ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                        : sizeof(Element) == 2                         ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                                                       : CU_TENSOR_MAP_DATA_TYPE_UINT8;
  constexpr std::uint64_t kBytes = sizeof(Element);
  // A dimension of extent 1 is never stepped; give it a valid stride all the same (a 16-byte multiple).
  const std::uint64_t head_stride = std::uint64_t(q.head_stride > 0 ? q.head_stride : dim) * kBytes;
  const std::uint64_t row_stride = std::uint64_t(rows > 1 ? q.seq_stride : dim) * kBytes;
  const std::uint64_t batch_stride = std::uint64_t(batches > 1 ? q.batch_stride : dim) * kBytes;
  const cuuint64_t extent[5] = {cuuint64_t(dim), cuuint64_t(group), cuuint64_t(rows > 1 ? rows : 1),
                                cuuint64_t(heads_kv), cuuint64_t(batches)};
  const cuuint64_t stride[4] = {head_stride, row_stride, head_stride * group, batch_stride};
  const cuuint32_t box[5] = {cuuint32_t(128 / kBytes), cuuint32_t(group), cuuint32_t(tokens), 1, 1};
  const cuuint32_t step[5] = {1, 1, 1, 1, 1};
  const CUresult status = CUTLASS_CUDA_DRIVER_WRAPPER_CALL(cuTensorMapEncodeTiled)(
      map, kType, 5, q.ptr, extent, stride, box, step, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return status == CUDA_SUCCESS;
}

}  // namespace ioattn::detail::sm90
