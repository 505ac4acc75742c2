// ioattn: the CPU paged-cache operations (see paged_cache.hpp).
#include "cpu/paged_cache.hpp"

#include <cstring>

#include "ioattn/tensor.hpp"

namespace ioattn::cpu {
namespace {

// Rows are copied as bytes: a write or a copy moves stored values, it never converts them.
void copy_row(void* dst_base, std::int64_t dst_offset, const void* src_base, std::int64_t src_offset,
              std::int64_t dim, std::size_t elem) {
  std::memcpy(static_cast<char*>(dst_base) + dst_offset * static_cast<std::int64_t>(elem),
              static_cast<const char*>(src_base) + src_offset * static_cast<std::int64_t>(elem),
              static_cast<std::size_t>(dim) * elem);
}

}  // namespace

void paged_write(const detail::PagedWriteProblem& p) {
  const std::size_t elem = dtype_size(p.dtype);
#pragma omp parallel for schedule(static)
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const std::int64_t slot = p.slot_mapping[t];
    if (slot < 0) continue;  // padding row
    const std::int64_t page = slot / p.page_size, in_page = slot % p.page_size;
    for (std::int64_t h = 0; h < p.heads_kv; ++h) {
      copy_row(p.k_cache.ptr, p.k_cache.offset(page, in_page, h), p.k_new.ptr, p.k_new.offset(0, t, h), p.dim_qk, elem);
      copy_row(p.v_cache.ptr, p.v_cache.offset(page, in_page, h), p.v_new.ptr, p.v_new.offset(0, t, h), p.dim_v, elem);
    }
  }
}

// Validation has made sure no page is both read and written by the list, so the order does not matter.
void paged_copy_pages(const detail::PagedCopyProblem& p) {
  const std::size_t elem = dtype_size(p.dtype);
  for (std::int64_t i = 0; i < p.num_copies; ++i) {
    const std::int64_t src = p.copies[i * p.copies_stride], dst = p.copies[i * p.copies_stride + 1];
    if (src == dst) continue;
    for (std::int64_t t = 0; t < p.page_size; ++t) {
      for (std::int64_t h = 0; h < p.heads_kv; ++h) {
        const detail::Operand& k = p.k_cache;
        const detail::Operand& v = p.v_cache;
        copy_row(k.ptr, k.offset(dst, t, h), k.ptr, k.offset(src, t, h), p.dim_qk, elem);
        copy_row(v.ptr, v.offset(dst, t, h), v.ptr, v.offset(src, t, h), p.dim_v, elem);
      }
    }
  }
}

}  // namespace ioattn::cpu
