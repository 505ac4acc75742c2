// ioattn sm90 FP8 forward: which instantiations this build holds, and what the kernel refuses (with the reason in
// the ErrorCode::unsupported message; the FP8 entry point has no other GPU backend to fall back to).
#include <climits>
#include <cstdint>
#include <string>
#include <tuple>

#include "cuda/sm90/forward.hpp"
#include "cuda/sm90/fp8_forward.hpp"
#include "ioattn/error.hpp"
#include "ioattn_sm90_config.hpp"  // generated: IOATTN_SM90_FP8_INSTANTIATIONS, ...

namespace ioattn::detail::sm90 {
namespace {

using Launch = void (*)(const Fp8Problem&);

Launch find_fp8(DType out, std::int64_t dim) {
#define IOATTN_SM90_FP8_CASE(DT, D) \
  if (out == DType::DT && dim == D) return &launch_forward_fp8<DType::DT, D>;
  IOATTN_SM90_FP8_INSTANTIATIONS(IOATTN_SM90_FP8_CASE)
#undef IOATTN_SM90_FP8_CASE
  return nullptr;
}

// TMA reads q, k and v (one byte an element) through tensor maps: 16-byte aligned bases and strides, none
// negative or zero where the dimension has more than one entry. The output is stored 4 bytes at a time.
std::string layout_problem(const char* name, const Operand& x, std::int64_t batch, std::int64_t rows,
                           std::int64_t heads, std::int64_t align_elements) {
  const bool aligned = reinterpret_cast<std::uintptr_t>(x.ptr) % 16 == 0 && x.batch_stride % align_elements == 0 &&
                       x.seq_stride % align_elements == 0 && x.head_stride % align_elements == 0;
  const bool positive = (batch <= 1 || x.batch_stride > 0) && (rows <= 1 || x.seq_stride > 0) &&
                        (heads <= 1 || x.head_stride > 0);
  if (aligned && positive) return {};
  return std::string("the cuda_sm90 FP8 forward needs ") + name + " on a 16-byte boundary with positive batch, seq " +
         "and head strides that are multiples of " + std::to_string(align_elements) + " elements; got strides [" +
         std::to_string(x.batch_stride) + ", " + std::to_string(x.seq_stride) + ", " + std::to_string(x.head_stride) +
         "]";
}

}  // namespace

std::string fp8_forward_unsupported(const Fp8Problem& fp) {
  const Problem& p = fp.attn;
  if (p.device != Device::cuda) {
    return std::string("the cuda_sm90 FP8 forward needs tensors on cuda; got ") + to_string(p.device);
  }
  if (std::string why = hopper_unavailable(p.device_index); !why.empty()) return why;
  if (p.dtype != DType::bf16 && p.dtype != DType::f16) {
    return std::string("the cuda_sm90 FP8 forward writes out in bf16 or fp16; got ") + to_string(p.dtype);
  }
  if (p.dim_qk != p.dim_v || (p.dim_qk != 128 && p.dim_qk != 256)) {
    return "the cuda_sm90 FP8 forward supports head dims 128 and 256 (equal for qk and v); got " +
           std::to_string(p.dim_qk) + "/" + std::to_string(p.dim_v);
  }
  if (find_fp8(p.dtype, p.dim_qk) == nullptr) {
    return "head dim " + std::to_string(p.dim_qk) + " with " + to_string(p.dtype) +
           " output is not compiled into this build's FP8 forward (built with IOATTN_CUDA_HEAD_DIMS=\""
           IOATTN_SM90_BUILD_HEAD_DIMS "\" IOATTN_CUDA_DTYPES=\"" IOATTN_SM90_BUILD_DTYPES "\")";
  }
  if (fp.block_rows != 0 && (fp.block_rows & (fp.block_rows - 1)) != 0) {
    return "the cuda_sm90 FP8 forward takes block descales over a power of two of rows (16, 32, 64, ...); got "
           "block_rows " + std::to_string(fp.block_rows);
  }
  if (p.softcap > 0.0f || p.alibi_slopes != nullptr) {
    return "the cuda_sm90 FP8 forward has no softcap or ALiBi yet";
  }
  if (!(p.scale > 0.0f)) return "the cuda_sm90 FP8 forward needs a positive scale; got " + std::to_string(p.scale);
  if (p.seqlen_q > INT_MAX / 2 || p.seqlen_k > INT_MAX / 2) {
    return "the cuda_sm90 FP8 forward takes at most 2^30 rows per sequence; got seqlen_q " +
           std::to_string(p.seqlen_q) + ", seqlen_k " + std::to_string(p.seqlen_k);
  }
  if ((p.seqlen_q + 127) / 128 * p.heads_q * p.batch > INT_MAX) {
    return "the cuda_sm90 FP8 forward takes at most 2^31 - 1 query tiles of 128 rows (x heads x sequences)";
  }
  for (const auto& [name, x, rows, heads, align] :
       {std::tuple<const char*, const Operand&, std::int64_t, std::int64_t, std::int64_t>{"q", p.q, p.seqlen_q,
                                                                                        p.heads_q, 16},
        {"k", p.k, p.seqlen_k, p.heads_kv, 16},
        {"v", p.v, p.seqlen_k, p.heads_kv, 16},
        {"out", p.out, p.seqlen_q, p.heads_q, 8}}) {
    if (std::string why = layout_problem(name, x, p.batch, rows, heads, align); !why.empty()) return why;
  }
  return {};
}

void run_forward_fp8(const Fp8Problem& fp) {
  if (std::string why = fp8_forward_unsupported(fp); !why.empty()) throw Error(ErrorCode::unsupported, why);
  find_fp8(fp.attn.dtype, fp.attn.dim_qk)(fp);
}

}  // namespace ioattn::detail::sm90
