// ioattn cuda paged: writing new tokens into their cache slots, and copying whole pages. Both are plain copies bound
// by memory bandwidth: one CTA per token row (or page row), threads over heads x head dim, in 16-byte units when
// every pointer and stride allows it, else element by element (the bits are copied, so any dtype works).
// Device-resident slot mappings and copy lists cannot be checked without a host round trip: entries outside the
// cache are skipped rather than written out of bounds.
#include <cstdint>

#include <cuda_runtime.h>

#include "api/paged_problem.hpp"
#include "cuda/paged/cache_ops.hpp"
#include "cuda/sm80/common/cuda_check.cuh"

namespace ioattn::detail::paged {
namespace {

constexpr int kCopyThreads = 128;


template <class Unit>
__device__ __forceinline__ void copy_row(const Unit* src, Unit* dst, std::int64_t src_head, std::int64_t dst_head,
                                         int heads, int units) {
  for (int e = threadIdx.x; e < heads * units; e += blockDim.x) {
    const int h = e / units, d = e % units;
    dst[h * dst_head + d] = src[h * src_head + d];
  }
}

struct WriteParams {
  const void* k_new;
  const void* v_new;
  void* k_cache;
  void* v_cache;
  const std::int32_t* slots;
  std::int64_t slot_count;                      // num_pages * page_size
  int page_size, heads;
  int k_units, v_units;                         // per head row
  std::int64_t kn_row, kn_head, vn_row, vn_head;  // new rows
  std::int64_t kc_page, kc_row, kc_head, vc_page, vc_row, vc_head;
};

template <class Unit>
__global__ void __launch_bounds__(kCopyThreads) paged_write_kernel(const WriteParams p) {
  const std::int64_t t = blockIdx.x;
  const std::int64_t slot = p.slots[t];
  if (slot < 0 || slot >= p.slot_count) return;  // negative: padding; past the cache: refused (see the top)
  const std::int64_t page = slot / p.page_size, in_page = slot % p.page_size;
  copy_row(static_cast<const Unit*>(p.k_new) + t * p.kn_row,
           static_cast<Unit*>(p.k_cache) + page * p.kc_page + in_page * p.kc_row, p.kn_head, p.kc_head, p.heads,
           p.k_units);
  copy_row(static_cast<const Unit*>(p.v_new) + t * p.vn_row,
           static_cast<Unit*>(p.v_cache) + page * p.vc_page + in_page * p.vc_row, p.vn_head, p.vc_head, p.heads,
           p.v_units);
}

struct CopyParams {
  void* k_cache;
  void* v_cache;
  const std::int32_t* copies;
  std::int64_t copies_stride, num_pages;
  int page_size, heads, k_units, v_units;
  std::int64_t k_page, k_row, k_head, v_page, v_row, v_head;
};

template <class Unit>
__global__ void __launch_bounds__(kCopyThreads) paged_copy_kernel(const CopyParams p) {
  const std::int64_t i = blockIdx.x;
  const std::int64_t from = p.copies[i * p.copies_stride], to = p.copies[i * p.copies_stride + 1];
  if (from < 0 || from >= p.num_pages || to < 0 || to >= p.num_pages || from == to) return;
  Unit* k = static_cast<Unit*>(p.k_cache);
  Unit* v = static_cast<Unit*>(p.v_cache);
  for (std::int64_t row = blockIdx.y; row < p.page_size; row += gridDim.y) {  // token rows of the page
    copy_row(k + from * p.k_page + row * p.k_row, k + to * p.k_page + row * p.k_row, p.k_head, p.k_head, p.heads,
             p.k_units);
    copy_row(v + from * p.v_page + row * p.v_row, v + to * p.v_page + row * p.v_row, p.v_head, p.v_head, p.heads,
             p.v_units);
  }
}

// How many elements make one copy unit: 16 bytes when every pointer, stride and row length is a multiple of it.
int unit_elements(std::size_t elem_bytes, std::initializer_list<const void*> ptrs,
                  std::initializer_list<std::int64_t> strides_and_dims) {
  const std::int64_t vec = 16 / static_cast<std::int64_t>(elem_bytes);
  for (const void* ptr : ptrs) {
    if (reinterpret_cast<std::uintptr_t>(ptr) % 16 != 0) return 1;
  }
  for (std::int64_t s : strides_and_dims) {
    if (s % vec != 0) return 1;
  }
  return static_cast<int>(vec);
}

template <class Launch>
void by_unit(std::size_t elem_bytes, int unit, Launch&& launch) {
  if (unit > 1) return launch(uint4{});
  if (elem_bytes == 2) return launch(std::uint16_t{});
  if (elem_bytes == 4) return launch(std::uint32_t{});
  return launch(std::uint64_t{});
}

}  // namespace

void kv_write(const PagedWriteProblem& p) {
  if (p.tokens == 0) return;
  sm80::DeviceScope device(p.device_index);
  const std::size_t elem = dtype_size(p.dtype);
  const int unit = unit_elements(elem, {p.k_new.ptr, p.v_new.ptr, p.k_cache.ptr, p.v_cache.ptr},
                                 {p.dim_qk, p.dim_v, p.k_new.seq_stride, p.k_new.head_stride, p.v_new.seq_stride,
                                  p.v_new.head_stride, p.k_cache.batch_stride, p.k_cache.seq_stride,
                                  p.k_cache.head_stride, p.v_cache.batch_stride, p.v_cache.seq_stride,
                                  p.v_cache.head_stride});
  WriteParams w{p.k_new.ptr, p.v_new.ptr, p.k_cache.ptr, p.v_cache.ptr, p.slot_mapping, p.num_pages * p.page_size,
                static_cast<int>(p.page_size), static_cast<int>(p.heads_kv), static_cast<int>(p.dim_qk / unit),
                static_cast<int>(p.dim_v / unit), p.k_new.seq_stride / unit, p.k_new.head_stride / unit,
                p.v_new.seq_stride / unit, p.v_new.head_stride / unit, p.k_cache.batch_stride / unit,
                p.k_cache.seq_stride / unit, p.k_cache.head_stride / unit, p.v_cache.batch_stride / unit,
                p.v_cache.seq_stride / unit, p.v_cache.head_stride / unit};
  by_unit(elem, unit, [&](auto u) {
    paged_write_kernel<decltype(u)><<<static_cast<unsigned>(p.tokens), kCopyThreads, 0,
                                      static_cast<cudaStream_t>(p.stream)>>>(w);
  });
  sm80::cuda_check(cudaGetLastError(), "paged kv write kernel launch");
}

void copy_pages(const PagedCopyProblem& p) {
  if (p.num_copies == 0 || p.page_size == 0) return;
  sm80::DeviceScope device(p.device_index);
  const std::size_t elem = dtype_size(p.dtype);
  const int unit = unit_elements(elem, {p.k_cache.ptr, p.v_cache.ptr},
                                 {p.dim_qk, p.dim_v, p.k_cache.batch_stride, p.k_cache.seq_stride,
                                  p.k_cache.head_stride, p.v_cache.batch_stride, p.v_cache.seq_stride,
                                  p.v_cache.head_stride});
  CopyParams c{p.k_cache.ptr, p.v_cache.ptr, p.copies, p.copies_stride, p.num_pages,
               static_cast<int>(p.page_size), static_cast<int>(p.heads_kv),
               static_cast<int>(p.dim_qk / unit), static_cast<int>(p.dim_v / unit), p.k_cache.batch_stride / unit,
               p.k_cache.seq_stride / unit, p.k_cache.head_stride / unit, p.v_cache.batch_stride / unit,
               p.v_cache.seq_stride / unit, p.v_cache.head_stride / unit};
  const auto rows = static_cast<unsigned>(p.page_size < 65535 ? p.page_size : 65535);  // grid.y limit; rows loop
  const dim3 grid(static_cast<unsigned>(p.num_copies), rows);
  by_unit(elem, unit, [&](auto u) {
    paged_copy_kernel<decltype(u)><<<grid, kCopyThreads, 0, static_cast<cudaStream_t>(p.stream)>>>(c);
  });
  sm80::cuda_check(cudaGetLastError(), "paged page copy kernel launch");
}

}  // namespace ioattn::detail::paged
