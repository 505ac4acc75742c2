// ioattn sm90: the global-memory view a tensor map is made from, shared by the Hopper kernels' launchers.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

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

}  // namespace ioattn::detail::sm90
