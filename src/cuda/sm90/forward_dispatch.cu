// ioattn sm90 forward: which instantiations this build holds, and what the Hopper forward refuses (so that "auto"
// falls back to the sm80 kernels for it). Softcap and ALiBi run here (the score-mod kernels).
#include <atomic>
#include <climits>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>

#include <cuda_runtime.h>

#include "cuda/sm80/common/cuda_check.cuh"
#include "cuda/sm90/forward.hpp"
#include "ioattn_sm90_config.hpp"  // generated: IOATTN_SM90_HAS_90A, IOATTN_SM90_FWD_INSTANTIATIONS, ...

namespace ioattn::detail::sm90 {
namespace {

using Launch = void (*)(const Problem&);

Launch find_forward(DType dtype, std::int64_t dim_qk, std::int64_t dim_v) {
#define IOATTN_SM90_FWD_CASE(DT, D, DV) \
  if (dtype == DType::DT && dim_qk == D && dim_v == DV) return &launch_forward<DType::DT, D, DV>;
  IOATTN_SM90_FWD_INSTANTIATIONS(IOATTN_SM90_FWD_CASE)
#undef IOATTN_SM90_FWD_CASE
  return nullptr;
}

// Compute capability major of each device, read once (0: not read yet, -1: the query failed; static storage
// starts zeroed).
int device_major(int device) {
  static std::atomic<int> majors[64];
  if (device < 0 || device >= 64) return -1;
  int major = majors[device].load(std::memory_order_relaxed);
  if (major == 0) {
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess || major <= 0) {
      cudaGetLastError();
      major = -1;
    }
    majors[device].store(major, std::memory_order_relaxed);
  }
  return major;
}

// TMA (cp.async.bulk.tensor) reads through a tensor map: the base and every stride must be 16-byte multiples.
std::string tma_layout_problem(const char* name, const Operand& x, std::size_t elem_bytes) {
  const std::int64_t vec = 16 / static_cast<std::int64_t>(elem_bytes);
  const bool ok = reinterpret_cast<std::uintptr_t>(x.ptr) % 16 == 0 && x.batch_stride % vec == 0 &&
                  x.seq_stride % vec == 0 && x.head_stride % vec == 0;
  if (ok) return {};
  return std::string("the cuda_sm90 backend needs 16-byte aligned rows: ") + name +
         " must start on a 16-byte boundary with batch, seq and head strides that are multiples of " +
         std::to_string(vec) + " elements; got strides [" + std::to_string(x.batch_stride) + ", " +
         std::to_string(x.seq_stride) + ", " + std::to_string(x.head_stride) + "]";
}

// A tensor map cannot broadcast or walk backwards: a dimension of more than one entry needs a positive stride.
std::string tma_stride_problem(const char* name, const Operand& x, std::int64_t batches, std::int64_t rows,
                               std::int64_t heads) {
  const bool ok = (batches <= 1 || x.batch_stride > 0) && (rows <= 1 || x.seq_stride > 0) &&
                  (heads <= 1 || x.head_stride > 0);
  if (ok) return {};
  return std::string("the cuda_sm90 backend needs positive strides (TMA loads): ") + name + " has strides [" +
         std::to_string(x.batch_stride) + ", " + std::to_string(x.seq_stride) + ", " + std::to_string(x.head_stride) +
         "]";
}

}  // namespace

std::string hopper_unavailable(int device_index) {
  if (!IOATTN_SM90_HAS_90A) {
    return "this build holds no sm_90a code (IOATTN_CUDA_ARCHS=\"" IOATTN_SM90_BUILD_ARCHS
           "\"; add 90a for the cuda_sm90 backend)";
  }
  const int major = device_major(device_index);
  if (major != 9) {
    return "the cuda_sm90 backend needs a compute capability 9.x (Hopper) GPU; device " +
           std::to_string(device_index) + " is " + (major < 0 ? std::string("unknown") : std::to_string(major) + ".x");
  }
  return {};
}

std::string forward_unsupported(const Problem& p) {
  if (p.device != Device::cuda) {
    return std::string("the cuda_sm90 backend needs tensors on cuda; got ") + to_string(p.device);
  }
  if (std::string why = hopper_unavailable(p.device_index); !why.empty()) return why;
  if (p.dtype != DType::f16 && p.dtype != DType::bf16) {
    return std::string("the cuda_sm90 backend takes fp16 or bf16; got ") + to_string(p.dtype);
  }
  const bool mla = p.dim_qk == 192 && p.dim_v == 128;
  if (!mla && (p.dim_qk != p.dim_v || (p.dim_qk != 64 && p.dim_qk != 128 && p.dim_qk != 256))) {
    return "the cuda_sm90 backend supports head dims 64, 128, 256 and 192/128 (qk/v); got " +
           std::to_string(p.dim_qk) + "/" + std::to_string(p.dim_v);
  }
  if (find_forward(p.dtype, p.dim_qk, p.dim_v) == nullptr) {
    return "head dim " + std::to_string(p.dim_qk) + (mla ? "/128" : "") + " in " + to_string(p.dtype) +
           " is not compiled into this build (built with IOATTN_CUDA_HEAD_DIMS=\"" IOATTN_SM90_BUILD_HEAD_DIMS
           "\" IOATTN_CUDA_DTYPES=\"" IOATTN_SM90_BUILD_DTYPES "\"; reconfigure with it included)";
  }
  // The scale folds into the exponent (the raw products' row max is the logits' row max): it must be positive.
  if (!(p.scale > 0.0f)) return "the cuda_sm90 backend needs a positive scale; got " + std::to_string(p.scale);
  if (p.batch > 65535 || p.heads_q > 65535) {
    return "the cuda_sm90 backend takes at most 65535 sequences and 65535 query heads; got batch " +
           std::to_string(p.batch) + ", heads " + std::to_string(p.heads_q);
  }
  // TMA coordinates are int32, and the mask code works in int on distances below 2^31.
  if (p.seqlen_q > INT_MAX / 2 || p.seqlen_k > INT_MAX / 2 || p.total_q > INT_MAX / 2 || p.total_k > INT_MAX / 2) {
    return "the cuda_sm90 backend takes at most 2^30 rows per tensor; got seqlen_q " + std::to_string(p.seqlen_q) +
           ", seqlen_k " + std::to_string(p.seqlen_k);
  }
  // The grid is one-dimensional over query tiles x heads x sequences.
  const std::int64_t tiles = (p.seqlen_q + 127) / 128 * p.heads_q * p.batch;
  if (tiles > INT_MAX) {
    return "the cuda_sm90 backend takes at most 2^31 - 1 query tiles of 128 rows (x heads x sequences); got " +
           std::to_string(tiles);
  }
  const std::size_t elem = dtype_size(p.dtype);
  for (const auto& [name, x] : {std::pair<const char*, const Operand&>{"q", p.q}, {"k", p.k}, {"v", p.v},
                                {"out", p.out}}) {
    if (std::string why = tma_layout_problem(name, x, elem); !why.empty()) return why;
  }
  const std::int64_t batches = p.is_varlen() ? 1 : p.batch;
  const std::int64_t rows_q = p.is_varlen() ? p.total_q : p.seqlen_q;
  const std::int64_t rows_k = p.is_varlen() ? p.total_k : p.seqlen_k;
  for (const auto& [name, x, rows, heads] :
       {std::tuple<const char*, const Operand&, std::int64_t, std::int64_t>{"q", p.q, rows_q, p.heads_q},
        {"k", p.k, rows_k, p.heads_kv},
        {"v", p.v, rows_k, p.heads_kv}}) {
    if (std::string why = tma_stride_problem(name, x, batches, rows, heads); !why.empty()) return why;
  }
  return {};
}

void run_forward(const Problem& p) {
  if (std::string why = forward_unsupported(p); !why.empty()) throw Error(ErrorCode::unsupported, why);
  find_forward(p.dtype, p.dim_qk, p.dim_v)(p);
}

}  // namespace ioattn::detail::sm90
