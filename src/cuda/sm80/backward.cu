// ioattn sm80 backward: argument checks this backend adds, the workspace, and the order of the passes.
#include "cuda/sm80/backward.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include <cutlass/numeric_types.h>

#include "cuda/scratch.hpp"
#include "cuda/sm80/backward_config.hpp"
#include "cuda/sm80/backward_launch.hpp"
#include "ioattn/error.hpp"

namespace ioattn::detail::sm80 {
namespace {

using bwd::ConfigFor;

// The (dtype, dim_qk, dim_v) kernels compiled into this build, from IOATTN_CUDA_DTYPES / IOATTN_CUDA_HEAD_DIMS
// (backward.cmake writes the list).
using elem_f16 = cutlass::half_t;
using elem_bf16 = cutlass::bfloat16_t;

struct Shape {
  int bc = 0, br = 0;
  std::size_t smem = 0;
};

// Tile shape of the kernel for these dims and variant, or bc = 0 when no such kernel is compiled for `dtype`.
Shape compiled_shape(DType dtype, std::int64_t dqk, std::int64_t dv, int variant) {
#define IOATTN_BWD_KERNEL(DT, DQK, DV, VAR)                                    \
  if (dtype == DType::DT && dqk == DQK && dv == DV && variant == VAR) {        \
    using Cfg = ConfigFor<DQK, DV, VAR>::type;                                 \
    return Shape{Cfg::kBc, Cfg::kBr, Cfg::kSmemBytes};                         \
  }
#include "ioattn_bwd_kernels.inc"
#undef IOATTN_BWD_KERNEL
  return Shape{};
}

// Largest dynamic shared memory a block may opt into on `device`; 0 when the runtime cannot say.
std::size_t smem_optin(int device) {
  int bytes = 0;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return static_cast<std::size_t>(bytes);
}

// The kernel variant for this problem: IOATTN_SM80_BWD_VARIANT when it names one compiled for these dims (tuning;
// read on every call so that one process can compare variants), else 0, else the small-shared-memory tiling when
// the device cannot hold variant 0's (A100: 164 KB, L40: 99 KB per block; variant 0 at head dim 128 wants 173 KB).
int selected_variant(const Problem& p) {
  const char* env = std::getenv("IOATTN_SM80_BWD_VARIANT");
  const int requested = env ? std::atoi(env) : 0;
  if (requested != 0 && compiled_shape(p.dtype, p.dim_qk, p.dim_v, requested).bc > 0) return requested;
  const Shape base = compiled_shape(p.dtype, p.dim_qk, p.dim_v, 0);
  const Shape small = compiled_shape(p.dtype, p.dim_qk, p.dim_v, bwd::kSmallSmemVariant);
  const std::size_t optin = smem_optin(p.device_index);
  if (base.bc > 0 && small.bc > 0 && optin > 0 && optin < base.smem) return bwd::kSmallSmemVariant;
  return 0;
}

Shape selected_shape(const Problem& p) {
  return compiled_shape(p.dtype, p.dim_qk, p.dim_v, selected_variant(p));
}

std::string compiled_list() {
  std::string s;
#define IOATTN_BWD_KERNEL(DT, DQK, DV, VAR) \
  if (VAR == 0) {                            \
    s += (s.empty() ? "" : ", ");            \
    s += #DT " " #DQK "/" #DV;               \
  }
#include "ioattn_bwd_kernels.inc"
#undef IOATTN_BWD_KERNEL
  return s.empty() ? "none" : s;
}

void launch_main(DType dtype, std::int64_t dqk, std::int64_t dv, int variant, const bwd::BwdMainParams& mp,
                 cudaStream_t s) {
#define IOATTN_BWD_KERNEL(DT, DQK, DV, VAR)                                 \
  if (dtype == DType::DT && dqk == DQK && dv == DV && variant == VAR) {     \
    bwd::launch_backward_main<elem_##DT, DQK, DV, VAR>(mp, s);              \
    return;                                                                 \
  }
#include "ioattn_bwd_kernels.inc"
#undef IOATTN_BWD_KERNEL
  throw Error(ErrorCode::unsupported, "cuda backward: no kernel compiled for these head dims");
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw Error(ErrorCode::backend_failure, std::string("cuda backward: ") + what + ": " + cudaGetErrorString(err));
  }
}

// cp.async and ldmatrix move 16 bytes at a time: every row of every operand must start on a 16-byte boundary.
void check_operand(const char* name, const Operand& op, bool varlen) {
  const auto misaligned = [](std::int64_t stride) { return stride % 8 != 0; };
  if (reinterpret_cast<std::uintptr_t>(op.ptr) % 16 != 0 || misaligned(op.seq_stride) ||
      misaligned(op.head_stride) || (!varlen && misaligned(op.batch_stride))) {
    std::ostringstream msg;
    msg << "cuda backward: " << name << " must start on a 16-byte boundary with strides that are multiples of 8 "
        << "elements; got pointer " << op.ptr << ", strides [" << op.batch_stride << ", " << op.seq_stride << ", "
        << op.head_stride << "]";
    throw Error(ErrorCode::unsupported, msg.str());
  }
}

// Query tiles of the selected shape per sequence: the deterministic dQ order keeps one semaphore for each.
int query_tiles(const BackwardProblem& p) {
  const Shape shape = selected_shape(p);
  const int br = shape.br > 0 ? shape.br : 64;
  return static_cast<int>((p.seqlen_q + br - 1) / br);
}

bwd::WorkspaceLayout workspace_layout(const BackwardProblem& p) {
  const std::size_t semaphores = p.deterministic ? std::size_t(p.batch) * p.heads_q * query_tiles(p) : 0;
  return bwd::WorkspaceLayout::make(p, semaphores);
}

// Restores the caller's current device on the way out.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace

std::string backward_unsupported(const Problem& p) {
  if (p.dtype != DType::f16 && p.dtype != DType::bf16) {
    return std::string("cuda backward: dtype must be fp16 or bf16, got ") + to_string(p.dtype);
  }
  const Shape shape = selected_shape(p);
  if (shape.bc == 0) {
    std::ostringstream msg;
    msg << "cuda backward: no kernel for " << to_string(p.dtype) << " head dims " << p.dim_qk << "/" << p.dim_v
        << " in this build (compiled: " << compiled_list() << ")";
    return msg.str();
  }
  if (p.heads_kv > 65535 || p.batch > 65535) {
    return "cuda backward: batch and kv heads must be at most 65535 (grid limits), got batch " +
           std::to_string(p.batch) + ", kv heads " + std::to_string(p.heads_kv);
  }
  if ((p.seqlen_k + shape.bc - 1) / shape.bc > 0x7fffffff) return "cuda backward: seqlen_k too long";
  const std::size_t optin = smem_optin(p.device_index);
  if (optin > 0 && optin < shape.smem) {
    std::ostringstream msg;
    msg << "cuda backward: head dims " << p.dim_qk << "/" << p.dim_v << " need " << shape.smem
        << " bytes of shared memory per block; device " << p.device_index << " allows " << optin;
    return msg.str();
  }
  return {};
}

std::size_t backward_workspace_bytes(const BackwardProblem& p) { return workspace_layout(p).total; }

void run_backward(const BackwardProblem& p) {
  const std::string why = backward_unsupported(p);
  if (!why.empty()) throw Error(ErrorCode::unsupported, why);
  const bool varlen = p.is_varlen();
  check_operand("q", p.q, varlen);
  check_operand("k", p.k, varlen);
  check_operand("v", p.v, varlen);
  check_operand("out", p.out, varlen);
  check_operand("dout", p.dout, varlen);
  check_operand("dq", p.dq, varlen);
  check_operand("dk", p.dk, varlen);
  check_operand("dv", p.dv, varlen);

  DeviceGuard guard(p.device_index);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  const bwd::WorkspaceLayout layout = workspace_layout(p);

  const StreamScratch scratch(p.workspace, layout.total, stream, "cuda backward");
  unsigned char* base = scratch.data();

  const bwd::Workspace ws = layout.carve(base);

  if (layout.rows > 0) {
    check_cuda(cudaMemsetAsync(ws.dq_accum, 0, layout.lse2 - layout.dq_accum, stream), "zeroing dq accumulator");
    if (ws.dq_sem) check_cuda(cudaMemsetAsync(ws.dq_sem, 0, layout.total - layout.sem, stream), "zeroing semaphores");
    bwd::launch_backward_prepass(p, ws, stream);
  }
  if (p.batch > 0 && p.seqlen_k > 0) {
    bwd::BwdMainParams mp{};
    const auto op = [](const Operand& o) { return bwd::BwdOperand{o.ptr, o.batch_stride, o.seq_stride, o.head_stride}; };
    mp.q = op(p.q);
    mp.k = op(p.k);
    mp.v = op(p.v);
    mp.dout = op(p.dout);
    mp.dk = op(p.dk);
    mp.dv = op(p.dv);
    mp.lse2 = ws.lse2;
    mp.dpre = ws.dpre;
    mp.dq_accum = ws.dq_accum;
    mp.dq_sem = ws.dq_sem;
    mp.cu_q = p.cu_seqlens_q;
    mp.cu_k = p.cu_seqlens_k;
    mp.seqlen_q = p.seqlen_q;
    mp.seqlen_k = p.seqlen_k;
    mp.rows = layout.rows;
    mp.batch = static_cast<int>(p.batch);
    mp.heads_q = static_cast<int>(p.heads_q);
    mp.heads_kv = static_cast<int>(p.heads_kv);
    mp.group = static_cast<int>(p.group_size());
    mp.n_qtiles = query_tiles(p);
    mp.scale = p.scale;
    mp.softcap = p.softcap;
    mp.alibi = p.alibi_slopes;
    mp.alibi_bstride = p.alibi_batch_stride;
    mp.window_left = p.mask.window_left;
    mp.window_right = p.mask.window_right;
    mp.top_left = p.mask.alignment == Alignment::top_left;
    launch_main(p.dtype, p.dim_qk, p.dim_v, selected_variant(p), mp, stream);
  }
  if (layout.rows > 0) bwd::launch_backward_postpass(p, ws, stream);
  if (p.sinks != nullptr && p.dsinks != nullptr) bwd::launch_backward_dsinks(p, ws, stream);
}

}  // namespace ioattn::detail::sm80
