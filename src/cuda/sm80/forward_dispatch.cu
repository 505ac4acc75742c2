// ioattn sm80 forward: which instantiations this build holds, and what the forward refuses.
#include <climits>
#include <cstdint>
#include <string>

#include "cuda/sm80/common/cuda_check.cuh"
#include "cuda/sm80/forward.cuh"
#include "ioattn_sm80_config.hpp"  // generated: IOATTN_SM80_FWD_INSTANTIATIONS, IOATTN_SM80_BUILD_*

namespace ioattn::detail::sm80 {
namespace {

using Launch = void (*)(const Problem&);

Launch find_forward(DType dtype, std::int64_t dim_qk, std::int64_t dim_v) {
#define IOATTN_SM80_FWD_CASE(DT, DQK, DV) \
  if (dtype == DType::DT && dim_qk == DQK && dim_v == DV) return &launch_forward<DType::DT, DQK, DV>;
  IOATTN_SM80_FWD_INSTANTIATIONS(IOATTN_SM80_FWD_CASE)
#undef IOATTN_SM80_FWD_CASE
  return nullptr;
}

bool supported_dims(std::int64_t dim_qk, std::int64_t dim_v) {
  if (dim_qk == 192) return dim_v == 128;
  return dim_qk == dim_v && (dim_qk == 64 || dim_qk == 96 || dim_qk == 128 || dim_qk == 256);
}

// cp.async moves 16-byte vectors: every row the kernel reads or writes must start on a 16-byte boundary.
std::string alignment_problem(const char* name, const Operand& x, std::size_t elem_bytes) {
  const std::int64_t vec = 16 / static_cast<std::int64_t>(elem_bytes);
  const bool ok = reinterpret_cast<std::uintptr_t>(x.ptr) % 16 == 0 && x.batch_stride % vec == 0 &&
                  x.seq_stride % vec == 0 && x.head_stride % vec == 0;
  if (ok) return {};
  return std::string("the cuda backend needs 16-byte aligned rows: ") + name +
         " must start on a 16-byte boundary with batch, seq and head strides that are multiples of " +
         std::to_string(vec) + " elements; got strides [" + std::to_string(x.batch_stride) + ", " +
         std::to_string(x.seq_stride) + ", " + std::to_string(x.head_stride) + "]";
}

std::string dims_text(std::int64_t dim_qk, std::int64_t dim_v) {
  return dim_qk == dim_v ? std::to_string(dim_qk) : std::to_string(dim_qk) + "/" + std::to_string(dim_v);
}

}  // namespace

std::string forward_unsupported(const Problem& p) {
  if (p.device != Device::cuda) return std::string("the cuda backend needs tensors on cuda; got ") + to_string(p.device);
  if (p.dtype != DType::f16 && p.dtype != DType::bf16) {
    return std::string("the cuda backend takes fp16 or bf16; got ") + to_string(p.dtype);
  }
  if (!supported_dims(p.dim_qk, p.dim_v)) {
    return "the cuda backend supports head dims 64, 96, 128, 192/128 (qk/v) and 256; got " +
           dims_text(p.dim_qk, p.dim_v);
  }
  if (find_forward(p.dtype, p.dim_qk, p.dim_v) == nullptr) {
    return "head dim " + dims_text(p.dim_qk, p.dim_v) + " in " + to_string(p.dtype) +
           " is not compiled into this build (built with IOATTN_CUDA_HEAD_DIMS=\"" IOATTN_SM80_BUILD_HEAD_DIMS
           "\" IOATTN_CUDA_DTYPES=\"" IOATTN_SM80_BUILD_DTYPES "\"; reconfigure with it included)";
  }
  if (p.batch > 65535 || p.heads_q > 65535) {
    return "the cuda backend takes at most 65535 sequences and 65535 query heads; got batch " +
           std::to_string(p.batch) + ", heads " + std::to_string(p.heads_q);
  }
  if (p.seqlen_q > INT_MAX / 2 || p.seqlen_k > INT_MAX / 2) {
    return "the cuda backend takes sequences of at most 2^30 tokens; got seqlen_q " + std::to_string(p.seqlen_q) +
           ", seqlen_k " + std::to_string(p.seqlen_k);
  }
  const std::size_t elem = dtype_size(p.dtype);
  for (const auto& [name, x] : {std::pair<const char*, const Operand&>{"q", p.q}, {"k", p.k}, {"v", p.v},
                                {"out", p.out}}) {
    if (std::string why = alignment_problem(name, x, elem); !why.empty()) return why;
  }
  return {};
}

void run_forward(const Problem& p) {
  const Launch launch = find_forward(p.dtype, p.dim_qk, p.dim_v);
  if (launch == nullptr) throw Error(ErrorCode::unsupported, forward_unsupported(p));
  launch(p);
}

}  // namespace ioattn::detail::sm80
