// ioattn: exact dense attention, forward and backward.
//
// Layouts (strides in elements, the last dimension always contiguous, any other strides allowed):
//   dense   q   [batch, seqlen_q, heads_q,  head_dim_qk]     lse [batch, heads_q, seqlen_q]  fp32
//           k   [batch, seqlen_k, heads_kv, head_dim_qk]
//           v   [batch, seqlen_k, heads_kv, head_dim_v]
//           out [batch, seqlen_q, heads_q,  head_dim_v]
//   varlen  q   [total_q, heads_q, head_dim_qk]  (sequences packed back to back)   lse [heads_q, total_q]  fp32
//           k   [total_k, heads_kv, head_dim_qk], v [total_k, heads_kv, head_dim_v], out [total_q, heads_q, head_dim_v]
//           sequence b holds query rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1 and the same for keys; zero-length
//           sequences are allowed.
// q, k, v, out (and dout, dq, dk, dv) share one dtype: fp32, fp16 or bf16. Arithmetic is fp32 (fp64 in `reference`).
//
// The computation, for query row i of head h and key j of kv head h / (heads_q / heads_kv) (GQA/MQA):
//   s_ij = scale * <q_i, k_j>
//   s_ij = softcap * tanh(s_ij / softcap)              if softcap > 0
//   s_ij = s_ij - alibi_slope[h] * |j - diag(i)|       if alibi slopes are given
//   s_ij = -inf                                        where the mask hides key j from query i
//   lse_i = log( sum_j exp(s_ij) + exp(sink[h]) )      natural log; the sink term only if sinks are given
//   out_i = sum_j exp(s_ij - lse_i) * v_j
// diag(i) is the key aligned with query i: i + seqlen_k - seqlen_q for bottom-right alignment (FlashAttention's
// causal), i for top-left alignment (PyTorch's is_causal). A query row that sees no key (and has no sink) gets
// out = 0 and lse = -inf, never NaN, and zero gradients.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "ioattn/tensor.hpp"

namespace ioattn {

// Which key is "on the diagonal" for a query row; see the top of this file.
enum class Alignment : std::uint8_t { bottom_right, top_left };

// Key j is visible to query i when  diag(i) - window_left <= j <= diag(i) + window_right,
// where -1 leaves that side unbounded. none(): both -1. causal(): window_right = 0.
struct Mask {
  std::int64_t window_left = -1;
  std::int64_t window_right = -1;
  Alignment alignment = Alignment::bottom_right;

  static constexpr Mask none() { return {}; }
  static constexpr Mask causal(Alignment a = Alignment::bottom_right) { return {-1, 0, a}; }
  static constexpr Mask window(std::int64_t left, std::int64_t right, Alignment a = Alignment::bottom_right) {
    return {left, right, a};
  }
  constexpr bool is_none() const { return window_left < 0 && window_right < 0; }
  constexpr bool is_causal() const { return window_left < 0 && window_right == 0; }
};

// The cumulative sequence offsets of a varlen (packed) batch. Both views are int32 [batch + 1], on the same device as
// q, starting at 0 and non-decreasing. max_seqlen_* may be left 0; the backends then read them off the offsets.
struct Varlen {
  TensorView cu_seqlens_q;
  TensorView cu_seqlens_k;
  std::int64_t max_seqlen_q = 0;
  std::int64_t max_seqlen_k = 0;
};

// Optional caller-owned scratch memory. When `data` is null the backend allocates what it needs itself; pass a
// buffer of at least *_workspace_bytes() to keep allocation out of the hot path (and CUDA-graph capture safe).
struct Workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

struct AttentionParams {
  std::optional<float> softmax_scale;  // default 1 / sqrt(head_dim_qk)
  Mask mask;
  float softcap = 0.0f;       // 0: off; otherwise the logit cap (> 0)
  TensorView alibi_slopes;    // optional fp32 [heads_q] or [batch, heads_q]
  TensorView sinks;           // optional fp32 [heads_q]: one logit per head that joins each row's softmax denominator
  bool deterministic = false; // backward: reduce dQ (and dK, dV under GQA) in a fixed order, bitwise reproducible;
                              // cuda_decode forward: split keys at points that do not follow the batch (a sequence's
                              // bits then do not depend on the batch it is in)
  std::string impl = "auto";  // "auto", or a backend by name: "reference", "tiled", "cuda" (see backends())
  void* stream = nullptr;     // cudaStream_t for the CUDA backends; ignored on the CPU
  Workspace workspace;
  int num_threads = 0;        // CPU backends: OpenMP threads, 0 = the OpenMP default
};

struct ForwardArgs {
  TensorView q, k, v;
  TensorView out;  // written
  TensorView lse;  // written; may be left empty when the caller does not need it (the backward does)
  std::optional<Varlen> varlen;
};

struct BackwardArgs {
  TensorView q, k, v, out, dout, lse;  // out and lse as written by the forward
  TensorView dq, dk, dv;               // written; dk and dv are summed over each GQA group
  TensorView dsinks;                   // written when params.sinks is given: fp32 [heads_q]
  std::optional<Varlen> varlen;
};

// Exact attention forward. Throws ioattn::Error (naming the argument) on bad input, leaving out and lse untouched.
void attention_forward(const ForwardArgs& args, const AttentionParams& params = {});

// Exact attention backward: dq, dk, dv (and dsinks) from the forward's out and lse. Throws ioattn::Error on bad
// input, leaving every output untouched.
void attention_backward(const BackwardArgs& args, const AttentionParams& params = {});

// Scratch bytes the chosen backend needs for these arguments (0 when it needs none).
std::size_t forward_workspace_bytes(const ForwardArgs& args, const AttentionParams& params = {});
std::size_t backward_workspace_bytes(const BackwardArgs& args, const AttentionParams& params = {});

// The backends compiled into this build, e.g. "reference tiled cuda".
std::string backends();
// The backend `impl = "auto"` would pick for tensors on `device` (e.g. "tiled" on the CPU), for problems in general:
// on a GPU, "auto" runs decode steps (up to 16 query rows per kv head, or 64 where the dense grid is small; dense q,
// k, v; forward) on "cuda_decode", the paged split-KV kernels.
std::string default_backend(Device device);
// CUDA devices usable by this build: 0 when built without CUDA or when no GPU (or driver) is present.
int cuda_device_count();
// Library version, "MAJOR.MINOR.PATCH".
const char* version();

}  // namespace ioattn
