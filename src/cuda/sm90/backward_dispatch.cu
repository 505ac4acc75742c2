// ioattn sm90 backward: what the Hopper backward refuses (so that "auto" falls back to the sm80 kernels), its
// workspace, and the order of the passes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <tuple>
#include <utility>

#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include "cuda/scratch.hpp"
#include "cuda/sm80/backward_launch.hpp"
#include "cuda/sm80/common/cuda_check.cuh"
#include "cuda/sm90/backward.hpp"
#include "cuda/sm90/backward_passes.cuh"
#include "cuda/sm90/forward.hpp"
#include "ioattn/error.hpp"
#include "ioattn_sm90_bwd_config.hpp"  // generated: IOATTN_SM90_BWD_INSTANTIATIONS

namespace ioattn::detail::sm90 {
namespace {

using Launch = void (*)(const BackwardProblem&, const BackwardBuffers&);

Launch find_backward(DType dtype, std::int64_t dim_qk, std::int64_t dim_v) {
  if (dim_qk != dim_v) return nullptr;
#define IOATTN_SM90_BWD_CASE(DT, D) \
  if (dtype == DType::DT && dim_qk == D) return &launch_backward<DType::DT, D>;
  IOATTN_SM90_BWD_INSTANTIATIONS(IOATTN_SM90_BWD_CASE)
#undef IOATTN_SM90_BWD_CASE
  return nullptr;
}

// The 16-byte rows TMA reads (dout; q, k, v are checked by forward_unsupported), and the 4-byte element pairs the
// kernel and the sm80 post-pass write (dk, dv, dq: 8-byte stores of 4 elements there).
std::string operand_alignment_problem(const char* name, const Operand& x, std::int64_t multiple) {
  const bool ok = reinterpret_cast<std::uintptr_t>(x.ptr) % 16 == 0 && x.batch_stride % multiple == 0 &&
                  x.seq_stride % multiple == 0 && x.head_stride % multiple == 0;
  if (ok) return {};
  return std::string("the cuda_sm90 backward needs ") + name + " to start on a 16-byte boundary with strides that are " +
         "multiples of " + std::to_string(multiple) + " elements; got strides [" + std::to_string(x.batch_stride) +
         ", " + std::to_string(x.seq_stride) + ", " + std::to_string(x.head_stride) + "]";
}

// Query tiles per sequence (of the longest, varlen): the deterministic order's semaphores per query head.
std::int64_t query_tiles(const BackwardProblem& p) {
  const std::int64_t block_m = backward_block_m(int(p.dim_qk));
  return (p.seqlen_q + block_m - 1) / block_m;
}

sm80::bwd::WorkspaceLayout workspace_layout(const BackwardProblem& p) {
  const std::size_t dq_warps = std::size_t(backward_dq_warps(int(p.dim_qk)));
  return sm80::bwd::WorkspaceLayout::make(
      p, p.deterministic ? std::size_t(p.batch * p.heads_q * query_tiles(p)) * dq_warps : 0);
}

}  // namespace

std::string backward_unsupported(const Problem& problem) {
  // The common checks (device, 90a code, dtype, head dims, TMA layout of q, k, v, out) are the forward's.
  if (std::string why = forward_unsupported(problem); !why.empty()) return why;
  // dispatch.cpp hands every backend the BackwardProblem it built for a backward (as its Problem base).
  const auto& p = static_cast<const BackwardProblem&>(problem);
  if (find_backward(p.dtype, p.dim_qk, p.dim_v) == nullptr) {
    return "the cuda_sm90 backward has kernels for head dims 64, 128 and 256 (this build: IOATTN_CUDA_HEAD_DIMS=\"" +
           std::string(IOATTN_SM90_BWD_BUILD_HEAD_DIMS) + "\"); got " + std::to_string(p.dim_qk) + "/" +
           std::to_string(p.dim_v) + " in " + to_string(p.dtype);
  }
  if (p.heads_kv > 65535 || p.batch > 65535) {
    return "the cuda_sm90 backward takes at most 65535 sequences and 65535 kv heads; got batch " +
           std::to_string(p.batch) + ", kv heads " + std::to_string(p.heads_kv);
  }
  const std::int64_t key_tiles = (p.seqlen_k + 63) / 64;  // the kernel's items (key tile, kv head, sequence), at most
  if (key_tiles * p.heads_kv * p.batch >= (std::int64_t(1) << 31)) {
    return "the cuda_sm90 backward takes fewer than 2^31 (64-key tile, kv head, sequence) items; got " +
           std::to_string(key_tiles * p.heads_kv * p.batch);
  }
  // The kernel's mask works on key - row distances in 32 bits (backward_kernel.cuh, TileMask).
  const std::int64_t rows_sum = p.is_varlen() ? p.total_q + p.total_k : p.seqlen_q + p.seqlen_k;
  if (rows_sum >= (std::int64_t(1) << 30)) {
    return "the cuda_sm90 backward takes fewer than 2^30 query and key rows together; got " +
           std::to_string(rows_sum);
  }
  const std::int64_t tma_vec = 16 / std::int64_t(dtype_size(p.dtype));
  for (const auto& [name, x, multiple] :
       {std::tuple<const char*, const Operand&, std::int64_t>{"dout", p.dout, tma_vec}, {"dq", p.dq, 4},
        {"dk", p.dk, 2}, {"dv", p.dv, 2}}) {
    if (std::string why = operand_alignment_problem(name, x, multiple); !why.empty()) return why;
  }
  const std::int64_t rows_q = p.is_varlen() ? p.total_q : p.seqlen_q;
  if (p.batch > 1 && !p.is_varlen() && p.dout.batch_stride <= 0) {
    return "the cuda_sm90 backward needs a positive batch stride of dout (TMA loads)";
  }
  if ((rows_q > 1 && p.dout.seq_stride <= 0) || (p.heads_q > 1 && p.dout.head_stride <= 0)) {
    return "the cuda_sm90 backward needs positive strides of dout (TMA loads)";
  }
  return {};
}

std::size_t backward_workspace_bytes(const BackwardProblem& p) { return workspace_layout(p).total; }

namespace {

// IOATTN_SM90_BWD_PASSES=0 (read once) runs the sm80 passes instead of this file's, for side-by-side timing.
bool own_passes_from_env() {
  static const bool own = [] {
    const char* env = std::getenv("IOATTN_SM90_BWD_PASSES");
    return !(env && *env && std::atoi(env) == 0);
  }();
  return own;
}

// backward_passes.cuh's kernels take the problem when its head dim has one and its thread count fits 31 bits.
template <class Elem>
bool launch_own_passes(const BackwardProblem& p, const sm80::bwd::Workspace& ws, cudaStream_t stream, bool pre) {
  const std::int64_t dim = p.dim_qk;
  if (!own_passes_from_env() || p.dim_v != dim || (dim != 64 && dim != 128 && dim != 256)) return false;
  const std::int64_t threads = ws.rows * p.heads_q * (dim / 8);
  if (threads >= (std::int64_t(1) << 31) || (!p.is_varlen() && p.seqlen_q <= 0)) return false;
  const PassRows map{std::uint32_t(ws.rows), std::uint32_t(p.heads_q), std::uint32_t(p.is_varlen() ? 0 : p.seqlen_q),
                     p.is_varlen()};
  const unsigned blocks = unsigned((threads + 255) / 256);
  if (pre) {
    const BackwardPrepassArgs a{p.out.ptr,
                                p.dout.ptr,
                                static_cast<const float*>(p.lse.ptr),
                                PassStrides::of(p.out),
                                PassStrides::of(p.dout),
                                PassStrides::of(p.lse),
                                ws.lse2,
                                ws.dpre,
                                ws.dq_accum,
                                map};
    if (dim == 64) backward_prepass_kernel<Elem, 64><<<blocks, 256, 0, stream>>>(a);
    else if (dim == 128) backward_prepass_kernel<Elem, 128><<<blocks, 256, 0, stream>>>(a);
    else backward_prepass_kernel<Elem, 256><<<blocks, 256, 0, stream>>>(a);
  } else {
    const BackwardPostpassArgs a{ws.dq_accum, p.dq.ptr, PassStrides::of(p.dq), p.scale, map};
    if (dim == 64) backward_postpass_kernel<Elem, 64><<<blocks, 256, 0, stream>>>(a);
    else if (dim == 128) backward_postpass_kernel<Elem, 128><<<blocks, 256, 0, stream>>>(a);
    else backward_postpass_kernel<Elem, 256><<<blocks, 256, 0, stream>>>(a);
  }
  sm80::cuda_check(cudaGetLastError(),
                   pre ? "cuda_sm90 backward pre-pass launch" : "cuda_sm90 backward post-pass launch");
  return true;
}

bool own_passes(const BackwardProblem& p, const sm80::bwd::Workspace& ws, cudaStream_t stream, bool pre) {
  return p.dtype == DType::f16 ? launch_own_passes<cutlass::half_t>(p, ws, stream, pre)
                               : launch_own_passes<cutlass::bfloat16_t>(p, ws, stream, pre);
}

}  // namespace

void run_backward(const BackwardProblem& p) {
  if (std::string why = backward_unsupported(p); !why.empty()) throw Error(ErrorCode::unsupported, why);
  sm80::DeviceScope device(p.device_index);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  // The sm80 passes' layout; deterministic: with the dQ order's semaphores.
  const sm80::bwd::WorkspaceLayout layout = workspace_layout(p);

  const StreamScratch scratch(p.workspace, layout.total, stream, "cuda_sm90 backward");
  unsigned char* base = scratch.data();

  const sm80::bwd::Workspace ws = layout.carve(base);
  // The pre-pass (this file's zeroes the dQ accumulator too), the main kernel, the post-pass.
  if (layout.rows > 0 && !own_passes(p, ws, stream, true)) {
    sm80::cuda_check(cudaMemsetAsync(ws.dq_accum, 0, layout.lse2 - layout.dq_accum, stream),
                     "zeroing the cuda_sm90 dQ accumulator");
    sm80::bwd::launch_backward_prepass(p, ws, stream);
  }
  if (ws.dq_sem != nullptr) {
    sm80::cuda_check(cudaMemsetAsync(ws.dq_sem, 0, layout.total - layout.sem, stream),
                     "zeroing the cuda_sm90 backward's dQ semaphores");
  }
  find_backward(p.dtype, p.dim_qk, p.dim_v)(
      p, BackwardBuffers{ws.lse2, ws.dpre, ws.dq_accum, ws.rows, ws.dq_sem});
  if (layout.rows > 0 && !own_passes(p, ws, stream, false)) sm80::bwd::launch_backward_postpass(p, ws, stream);
  if (p.sinks != nullptr && p.dsinks != nullptr) sm80::bwd::launch_backward_dsinks(p, ws, stream);
}

}  // namespace ioattn::detail::sm90
