// ioattn sm80 backward: the passes around the main kernel (D and lse2 before, dQ conversion and dsinks after).
// All three are bandwidth-bound elementwise or reduction kernels over the query rows.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include <cutlass/numeric_types.h>

#include "cuda/sm80/backward_launch.hpp"
#include "ioattn/error.hpp"

namespace ioattn::detail::sm80::bwd {
namespace {

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw Error(ErrorCode::backend_failure, std::string("cuda backward: ") + what + " launch failed: " +
                                                cudaGetErrorString(err));
  }
}

// Flat row r -> (batch index, row inside the operand's seq dimension) of the public layouts.
struct RowMap {
  std::int64_t seqlen_q;
  bool varlen;
  __device__ void operator()(std::int64_t r, std::int64_t& b, std::int64_t& row) const {
    if (varlen) {
      b = 0;  // varlen operands have batch stride 0 and r is already the packed row
      row = r;
    } else {
      b = r / seqlen_q;
      row = r % seqlen_q;
    }
  }
};

struct PrepassArgs {
  const void* out;
  const void* dout;
  const float* lse;
  std::int64_t o_sb, o_ss, o_sh, do_sb, do_ss, do_sh, l_sb, l_ss, l_sh;
  float* lse2;
  float* dpre;
  std::int64_t rows;
  int heads;
  int dim_v;
  RowMap map;
};

// One warp per (row, head): 16-byte loads of dO and O, fp32 products, a shuffle reduction.
template <class Elem>
__global__ void __launch_bounds__(256) prepass_kernel(const PrepassArgs a) {
  const std::int64_t item = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (item >= a.rows * a.heads) return;
  const std::int64_t r = item / a.heads;
  const int h = static_cast<int>(item % a.heads);
  std::int64_t b, row;
  a.map(r, b, row);
  const Elem* o = static_cast<const Elem*>(a.out) + b * a.o_sb + row * a.o_ss + h * a.o_sh;
  const Elem* d = static_cast<const Elem*>(a.dout) + b * a.do_sb + row * a.do_ss + h * a.do_sh;
  float sum = 0.0f;
  for (int c = lane * 8; c < a.dim_v; c += 32 * 8) {
    const uint4 ov = *reinterpret_cast<const uint4*>(o + c);
    const uint4 dv = *reinterpret_cast<const uint4*>(d + c);
    const Elem* oe = reinterpret_cast<const Elem*>(&ov);
    const Elem* de = reinterpret_cast<const Elem*>(&dv);
#pragma unroll
    for (int e = 0; e < 8; ++e) sum = fmaf(float(oe[e]), float(de[e]), sum);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (lane == 0) {
    const float lse = a.lse[b * a.l_sb + row * a.l_ss + h * a.l_sh];
    // A row that saw nothing has lse = -inf and only -inf scores; 0 keeps exp2(-inf - lse2) at 0 instead of NaN.
    a.lse2[std::int64_t(h) * a.rows + r] = lse == -INFINITY ? 0.0f : lse * 1.4426950408889634f;
    a.dpre[std::int64_t(h) * a.rows + r] = sum;
  }
}

struct PostpassArgs {
  const float* dq_accum;
  void* dq;
  std::int64_t sb, ss, sh;
  std::int64_t rows;
  int heads;
  int dim_qk;
  float scale;
  RowMap map;
};

// Four consecutive dims per thread: a 16-byte fp32 load, an 8-byte store.
template <class Elem>
__global__ void __launch_bounds__(256) postpass_kernel(const PostpassArgs a) {
  const int quads = a.dim_qk / 4;
  const std::int64_t n = a.rows * a.heads * quads;
  for (std::int64_t idx = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t rh = idx / quads;
    const int c = static_cast<int>(idx % quads) * 4;
    const std::int64_t r = rh / a.heads;
    const int h = static_cast<int>(rh % a.heads);
    std::int64_t b, row;
    a.map(r, b, row);
    const float4 v = *reinterpret_cast<const float4*>(a.dq_accum + rh * a.dim_qk + c);
    Elem out[4] = {Elem(v.x * a.scale), Elem(v.y * a.scale), Elem(v.z * a.scale), Elem(v.w * a.scale)};
    *reinterpret_cast<uint2*>(static_cast<Elem*>(a.dq) + b * a.sb + row * a.ss + h * a.sh + c) =
        *reinterpret_cast<const uint2*>(out);
  }
}

struct DsinksArgs {
  const float* sinks;
  const float* lse;
  std::int64_t l_sb, l_ss, l_sh;
  const float* dpre;
  float* dsinks;
  std::int64_t rows;
  RowMap map;
};

// One CTA per head; each thread sums a fixed stride of rows, then a fixed tree: the same order every run.
__global__ void __launch_bounds__(256) dsinks_kernel(const DsinksArgs a) {
  __shared__ float partial[256];
  const int h = blockIdx.x;
  const float sink = a.sinks[h];
  float sum = 0.0f;
  for (std::int64_t r = threadIdx.x; r < a.rows; r += 256) {
    std::int64_t b, row;
    a.map(r, b, row);
    const float lse = a.lse[b * a.l_sb + row * a.l_ss + h * a.l_sh];
    if (lse != -INFINITY) sum += expf(sink - lse) * a.dpre[std::int64_t(h) * a.rows + r];
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int s = 128; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) a.dsinks[h] = -partial[0];
}

RowMap row_map(const BackwardProblem& p) { return RowMap{p.seqlen_q, p.is_varlen()}; }

}  // namespace

void launch_backward_prepass(const BackwardProblem& p, const Workspace& ws, cudaStream_t stream) {
  PrepassArgs a{p.out.ptr,           p.dout.ptr,        static_cast<const float*>(p.lse.ptr),
                p.out.batch_stride,  p.out.seq_stride,  p.out.head_stride,
                p.dout.batch_stride, p.dout.seq_stride, p.dout.head_stride,
                p.lse.batch_stride,  p.lse.seq_stride,  p.lse.head_stride,
                ws.lse2,             ws.dpre,           ws.rows,
                static_cast<int>(p.heads_q), static_cast<int>(p.dim_v), row_map(p)};
  const std::int64_t warps = ws.rows * p.heads_q;
  const unsigned blocks = static_cast<unsigned>((warps + 7) / 8);
  if (p.dtype == DType::f16) {
    prepass_kernel<cutlass::half_t><<<blocks, 256, 0, stream>>>(a);
  } else {
    prepass_kernel<cutlass::bfloat16_t><<<blocks, 256, 0, stream>>>(a);
  }
  check_launch("pre-pass");
}

void launch_backward_postpass(const BackwardProblem& p, const Workspace& ws, cudaStream_t stream) {
  PostpassArgs a{ws.dq_accum, p.dq.ptr, p.dq.batch_stride, p.dq.seq_stride, p.dq.head_stride, ws.rows,
                 static_cast<int>(p.heads_q), static_cast<int>(p.dim_qk), p.scale, row_map(p)};
  const std::int64_t n = ws.rows * p.heads_q * (p.dim_qk / 4);
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>((n + 255) / 256, 65536));
  if (p.dtype == DType::f16) {
    postpass_kernel<cutlass::half_t><<<blocks, 256, 0, stream>>>(a);
  } else {
    postpass_kernel<cutlass::bfloat16_t><<<blocks, 256, 0, stream>>>(a);
  }
  check_launch("post-pass");
}

void launch_backward_dsinks(const BackwardProblem& p, const Workspace& ws, cudaStream_t stream) {
  DsinksArgs a{p.sinks, static_cast<const float*>(p.lse.ptr), p.lse.batch_stride, p.lse.seq_stride,
               p.lse.head_stride, ws.dpre, p.dsinks, ws.rows, row_map(p)};
  dsinks_kernel<<<static_cast<unsigned>(p.heads_q), 256, 0, stream>>>(a);
  check_launch("dsinks");
}

WorkspaceLayout WorkspaceLayout::make(const BackwardProblem& p, std::size_t semaphores) {
  constexpr std::size_t kAlign = 256;
  const auto align_up = [](std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; };
  WorkspaceLayout l;
  l.rows = p.is_varlen() ? p.total_q : p.batch * p.seqlen_q;
  std::size_t off = 0;
  l.dq_accum = off;
  off += align_up(sizeof(float) * std::size_t(l.rows) * p.heads_q * p.dim_qk);
  l.lse2 = off;
  off += align_up(sizeof(float) * std::size_t(l.rows) * p.heads_q);
  l.dpre = off;
  off += align_up(sizeof(float) * std::size_t(l.rows) * p.heads_q);
  l.sem = off;
  off += align_up(sizeof(int) * semaphores);
  l.total = off;
  return l;
}

Workspace WorkspaceLayout::carve(unsigned char* base) const {
  Workspace ws;
  ws.dq_accum = reinterpret_cast<float*>(base + dq_accum);
  ws.lse2 = reinterpret_cast<float*>(base + lse2);
  ws.dpre = reinterpret_cast<float*>(base + dpre);
  ws.dq_sem = total > sem ? reinterpret_cast<int*>(base + sem) : nullptr;
  ws.rows = rows;
  return ws;
}

}  // namespace ioattn::detail::sm80::bwd
