// ioattn: paged attention in the fp64 reference backend. The paged keys and values are gathered into the dense
// oracle's packed layout and the dense oracle (reference.cpp) runs unchanged, so paged and dense attention share one
// definition of the math by construction. Splits are ignored: the oracle sums every key in fp64 in one pass.
#include <algorithm>
#include <string>
#include <vector>

#include "api/paged_problem.hpp"
#include "cpu/paged_cache.hpp"
#include "cpu/reference.hpp"
#include "cpu/tensor_access.hpp"

namespace ioattn::detail {
namespace {

std::string paged_reference_unsupported(const PagedProblem& p) {
  if (p.device != Device::cpu) return std::string("runs on the CPU; the tensors are on ") + to_string(p.device);
  constexpr std::int64_t kMaxHeadDim = 512;  // as the dense reference
  if (p.dim_qk > kMaxHeadDim || p.dim_v > kMaxHeadDim) return "head dims up to 512";
  return {};
}

PagedSplit paged_reference_plan(const PagedProblem& p, SplitKV /*split*/, std::int64_t /*expected*/) {
  return {std::max<std::int64_t>(p.capacity(), 1), 1, 0};
}

void paged_reference_forward(const PagedProblem& p) {
  // The dense problem the oracle sees: packed q (dense q's rows b * seqlen_q + i are the same canonical tokens) and
  // packed keys, sequence b holding its seqlens_k[b] cached tokens.
  std::vector<std::int32_t> cu_q(static_cast<std::size_t>(p.batch + 1), 0), cu_k(cu_q);
  std::int64_t max_k = 0;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t len_k = cpu::paged_seqlen(p, b);
    cu_q[b + 1] = static_cast<std::int32_t>(cu_q[b] + p.span(b).q_len);
    cu_k[b + 1] = static_cast<std::int32_t>(cu_k[b] + len_k);
    max_k = std::max(max_k, len_k);
  }
  Problem dense = p;
  dense.cu_seqlens_q = cu_q.data();
  dense.cu_seqlens_k = cu_k.data();
  dense.total_q = cu_q.back();
  dense.total_k = cu_k.back();
  dense.seqlen_k = max_k;

  const auto q = cpu::ref::gather(p, p.q, p.dtype, true, p.heads_q, p.dim_qk);
  std::vector<double> k(static_cast<std::size_t>(dense.total_k * p.heads_kv * p.dim_qk));
  std::vector<double> v(static_cast<std::size_t>(dense.total_k * p.heads_kv * p.dim_v));
  std::vector<float> row(static_cast<std::size_t>(std::max(p.dim_qk, p.dim_v)));
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t j = 0; j < cu_k[b + 1] - cu_k[b]; ++j) {
      const std::int64_t t = cu_k[b] + j;
      for (std::int64_t h = 0; h < p.heads_kv; ++h) {
        cpu::load_row(p.k.ptr, p.dtype, cpu::paged_offset(p, p.k, b, j, h), p.dim_qk, row.data());
        std::copy(row.begin(), row.begin() + p.dim_qk, k.begin() + (t * p.heads_kv + h) * p.dim_qk);
        cpu::load_row(p.v.ptr, p.dtype, cpu::paged_offset(p, p.v, b, j, h), p.dim_v, row.data());
        std::copy(row.begin(), row.begin() + p.dim_v, v.begin() + (t * p.heads_kv + h) * p.dim_v);
      }
    }
  }
  std::vector<double> out(static_cast<std::size_t>(dense.total_q * p.heads_q * p.dim_v));
  std::vector<double> lse(static_cast<std::size_t>(dense.total_q * p.heads_q));
  cpu::ref::forward_f64(dense, q.data(), k.data(), v.data(), out.data(), lse.data());
  cpu::ref::scatter(p, out, p.out, p.dtype, true, p.heads_q, p.dim_v);
  if (p.lse.ptr) cpu::ref::scatter(p, lse, p.lse, DType::f32, true, p.heads_q, 1);
}

}  // namespace

const PagedBackend kReferencePagedBackend{"reference",      Device::cpu,
                                          0,                paged_reference_unsupported,
                                          paged_reference_plan, paged_reference_forward,
                                          cpu::paged_write, cpu::paged_copy_pages};

}  // namespace ioattn::detail
