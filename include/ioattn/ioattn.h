/* ioattn: the C ABI. Plain C (C89 types plus <stdint.h>), usable from C, and from Python through ctypes.
 *
 * Every function that can fail returns an ioattn_status; on failure ioattn_last_error() returns a message naming the
 * argument, what was expected and what came, and no output has been written. The message is thread-local: it
 * belongs to the thread that made the failing call and stays until that thread's next status-returning call.
 *
 * Tensors are non-owning views: a pointer, a dtype, a device, a shape and strides counted in elements (not bytes).
 * The last dimension must be contiguous (stride 1); any other strides are allowed. A view with data NULL and rank 0
 * means "not given" (ioattn_tensor zero-initialized is exactly that).
 *
 * Layouts:
 *   dense   q   [batch, seqlen_q, heads_q,  head_dim_qk]     lse [batch, heads_q, seqlen_q]  fp32
 *           k   [batch, seqlen_k, heads_kv, head_dim_qk]
 *           v   [batch, seqlen_k, heads_kv, head_dim_v]
 *           out [batch, seqlen_q, heads_q,  head_dim_v]
 *   varlen  q   [total_q, heads_q, head_dim_qk], k [total_k, heads_kv, head_dim_qk], v [total_k, heads_kv, head_dim_v],
 *           out [total_q, heads_q, head_dim_v], lse [heads_q, total_q] fp32; sequence b holds query rows
 *           cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1 (and the same for keys); zero-length sequences are allowed.
 * q, k, v, out (and dout, dq, dk, dv) share one dtype: fp32, fp16 or bf16. heads_q must be a multiple of heads_kv
 * (GQA/MQA); dk and dv are summed over each group of heads_q / heads_kv query heads.
 *
 * The computation, for query row i of head h and key j of kv head h / (heads_q / heads_kv):
 *   s_ij = scale * <q_i, k_j>                        scale defaults to 1 / sqrt(head_dim_qk)
 *   s_ij = softcap * tanh(s_ij / softcap)            if softcap > 0
 *   s_ij = s_ij - alibi_slope[h] * |j - diag(i)|     if alibi slopes are given
 *   s_ij = -inf                                      where the mask hides key j from query i
 *   lse_i = log( sum_j exp(s_ij) + exp(sink[h]) )    NATURAL log; the sink term only if sinks are given
 *   out_i = sum_j exp(s_ij - lse_i) * v_j
 * Mask: key j is visible to query i when diag(i) - window_left <= j <= diag(i) + window_right (-1: that side
 * unbounded). diag(i) = i + seqlen_k - seqlen_q with IOATTN_ALIGN_BOTTOM_RIGHT (FlashAttention's causal), or i with
 * IOATTN_ALIGN_TOP_LEFT (PyTorch's is_causal). Causal is window_left = -1, window_right = 0. A query row that sees no
 * key (and has no sink) gets out = 0 and lse = -inf, never NaN, and zero gradients.
 */
#ifndef IOATTN_IOATTN_H
#define IOATTN_IOATTN_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define IOATTN_C_API __attribute__((visibility("default")))
#else
#define IOATTN_C_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ioattn_status {
  IOATTN_OK = 0,
  IOATTN_ERROR_INVALID_ARGUMENT = 1, /* a bad shape, dtype, stride, pointer or parameter; the message names it */
  IOATTN_ERROR_UNSUPPORTED = 2,      /* valid input that the chosen backend cannot run */
  IOATTN_ERROR_OUT_OF_MEMORY = 3,    /* a host or device allocation failed */
  IOATTN_ERROR_BACKEND_FAILURE = 4,  /* a CUDA or other runtime call failed */
  IOATTN_ERROR_INTERNAL = 5          /* anything else (a bug: please report the message) */
} ioattn_status;

/* Values of ioattn_tensor.dtype. F8E4M3 (OCP FP8 E4M3FN) is accepted by the FP8 entry points only
 * (ioattn_forward_fp8, ioattn_quantize_fp8; ioattn/fp8.hpp documents them); every other attention call refuses it. */
enum {
  IOATTN_DTYPE_F32 = 0,
  IOATTN_DTYPE_F16 = 1,
  IOATTN_DTYPE_BF16 = 2,
  IOATTN_DTYPE_I32 = 3,
  IOATTN_DTYPE_F8E4M3 = 4
};
/* Values of ioattn_tensor.device and of ioattn_default_backend's argument. */
enum { IOATTN_DEVICE_CPU = 0, IOATTN_DEVICE_CUDA = 1 };
/* Values of ioattn_mask.alignment. */
enum { IOATTN_ALIGN_BOTTOM_RIGHT = 0, IOATTN_ALIGN_TOP_LEFT = 1 };

#define IOATTN_MAX_RANK 4

typedef struct ioattn_tensor {
  void* data;
  int32_t dtype;        /* IOATTN_DTYPE_* */
  int32_t device;       /* IOATTN_DEVICE_* */
  int32_t device_index; /* CUDA ordinal; ignored on the CPU */
  int32_t rank;         /* 0 (with data NULL: not given) to IOATTN_MAX_RANK */
  int64_t shape[IOATTN_MAX_RANK];
  int64_t stride[IOATTN_MAX_RANK]; /* in elements */
} ioattn_tensor;

typedef struct ioattn_mask {
  int64_t window_left;  /* -1: unbounded */
  int64_t window_right; /* -1: unbounded; 0 with window_left = -1: causal */
  int32_t alignment;    /* IOATTN_ALIGN_* */
} ioattn_mask;

/* Varlen (packed) batches: int32 [batch + 1] cumulative offsets on the tensors' device, starting at 0,
 * non-decreasing, the last at most the packed tensor's rows. max_seqlen_* may be 0: they are then read off the
 * offsets. Offsets in CPU memory are checked before anything runs; offsets in GPU memory cannot be read by the
 * argument checks, which then check only their dtype, shape and device (and take max_seqlen_* = 0 as "up to
 * total rows"), leaving their contents to the CUDA backend. */
typedef struct ioattn_varlen {
  ioattn_tensor cu_seqlens_q;
  ioattn_tensor cu_seqlens_k;
  int64_t max_seqlen_q;
  int64_t max_seqlen_k;
} ioattn_varlen;

/* Start from ioattn_params_init(): it sets every default. */
typedef struct ioattn_params {
  float softmax_scale;        /* 0: the default 1 / sqrt(head_dim_qk); otherwise a finite scale */
  float softcap;              /* 0: off; otherwise the logit cap (> 0) */
  ioattn_mask mask;           /* default: none (both windows -1), bottom-right */
  ioattn_tensor alibi_slopes; /* optional fp32 [heads_q] or [batch, heads_q] */
  ioattn_tensor sinks;        /* optional fp32 [heads_q]: one logit per head joining each row's denominator */
  int32_t deterministic;      /* backward: nonzero reduces dq (and dk, dv under GQA) in a fixed order; cuda_decode
                                 forward: keys split at points that do not follow the batch */
  int32_t num_threads;        /* CPU backends: OpenMP threads, 0 = the OpenMP default */
  const char* impl;           /* NULL or "auto", or a backend by name (see ioattn_backends()) */
  void* stream;               /* cudaStream_t for the CUDA backends; ignored on the CPU */
  void* workspace;            /* optional caller-owned scratch: NULL lets the backend allocate */
  size_t workspace_bytes;     /* at least what ioattn_*_workspace_bytes() returns when workspace is given */
} ioattn_params;

typedef struct ioattn_forward_args {
  ioattn_tensor q, k, v;
  ioattn_tensor out;            /* written */
  ioattn_tensor lse;            /* written, fp32; may be left "not given" when not needed */
  const ioattn_varlen* varlen;  /* NULL: dense layout */
} ioattn_forward_args;

typedef struct ioattn_backward_args {
  ioattn_tensor q, k, v, out, dout, lse; /* out and lse as written by the forward */
  ioattn_tensor dq, dk, dv;              /* written; dk and dv are summed over each GQA group */
  ioattn_tensor dsinks;                  /* written, fp32 [heads_q]: required when params->sinks is given */
  const ioattn_varlen* varlen;           /* NULL: dense layout */
} ioattn_backward_args;

/* Fills *params with the defaults (scale 1/sqrt(head_dim_qk), no mask, no softcap/ALiBi/sinks, impl "auto"). */
IOATTN_C_API void ioattn_params_init(ioattn_params* params);

/* Exact attention forward: out [.., heads_q, head_dim_v] and, when given, lse (fp32, NATURAL log, [batch, heads_q,
 * seqlen_q] or [heads_q, total_q] for varlen) from q, k, v in the layouts above. The mask's diagonal is bottom-right
 * aligned unless params->mask.alignment says IOATTN_ALIGN_TOP_LEFT. params may be NULL (the defaults). */
IOATTN_C_API ioattn_status ioattn_forward(const ioattn_forward_args* args, const ioattn_params* params);

/* Exact attention backward: dq (shape of q), dk (of k), dv (of v) and, with sinks, dsinks (fp32 [heads_q]) from
 * q, k, v, the forward's out and natural-log lse, and dout (shape of out). dk and dv are summed over each GQA group.
 * params must describe the same attention as the forward's (scale, mask and its alignment, softcap, ALiBi, sinks).
 * Rows that saw no key get zero gradients. */
IOATTN_C_API ioattn_status ioattn_backward(const ioattn_backward_args* args, const ioattn_params* params);

/* Scratch bytes the chosen backend needs for these arguments (0 when none) in *bytes; the arguments are checked as
 * by ioattn_forward / ioattn_backward, and no tensor is read or written. */
IOATTN_C_API ioattn_status ioattn_forward_workspace_bytes(const ioattn_forward_args* args,
                                                          const ioattn_params* params, size_t* bytes);
IOATTN_C_API ioattn_status ioattn_backward_workspace_bytes(const ioattn_backward_args* args,
                                                           const ioattn_params* params, size_t* bytes);

/* The message of this thread's last failed call ("" when its last status-returning call succeeded). The pointer
 * stays valid until this thread's next status-returning call. */
IOATTN_C_API const char* ioattn_last_error(void);
/* A constant name for a status, e.g. "IOATTN_ERROR_INVALID_ARGUMENT". */
IOATTN_C_API const char* ioattn_status_string(ioattn_status status);

/* The backends compiled into this library, space-separated, e.g. "reference tiled cuda". Static storage. */
IOATTN_C_API const char* ioattn_backends(void);
/* The backend impl "auto" prefers for tensors on `device` (IOATTN_DEVICE_*), "" when none. Static storage. */
IOATTN_C_API const char* ioattn_default_backend(int32_t device);
/* CUDA devices usable by this library: 0 without CUDA support, GPU or driver. */
IOATTN_C_API int32_t ioattn_cuda_device_count(void);
/* "MAJOR.MINOR.PATCH". Static storage. */
IOATTN_C_API const char* ioattn_version(void);

/* ---- Paged KV cache (include/ioattn/paged.hpp documents the layouts and semantics in full) -------------------
 *   k_cache [num_pages, page_size, heads_kv, head_dim_qk], v_cache [num_pages, page_size, heads_kv, head_dim_v]
 *   block_table int32 [batch, max_pages_per_seq], seqlens_k int32 [batch] (the new tokens included)
 *   q [batch, seqlen_q, heads_q, head_dim_qk], or packed [total_q, heads_q, head_dim_qk] with cu_seqlens_q
 * The query rows are each sequence's newest tokens (already written with ioattn_paged_kv_write); masks align
 * bottom-right, so a causal mask is causal among the new tokens. Plan once per batch, run once per layer. */
typedef struct ioattn_paged_kv {
  ioattn_tensor k_cache, v_cache, block_table, seqlens_k;
} ioattn_paged_kv;

typedef struct ioattn_paged_forward_args {
  ioattn_tensor q;
  ioattn_paged_kv kv;
  ioattn_tensor out;          /* written */
  ioattn_tensor lse;          /* written when given: fp32 [batch, heads_q, seqlen_q] or [heads_q, total_q] */
  ioattn_tensor cu_seqlens_q; /* optional int32 [batch + 1]: packed q */
  int64_t max_seqlen_q;       /* with cu_seqlens_q: most new tokens of any sequence, 0 = read off the offsets */
} ioattn_paged_forward_args;

/* Values of ioattn_paged_plan's split_mode argument. */
enum { IOATTN_SPLIT_AUTO = 0, IOATTN_SPLIT_NONE = 1, IOATTN_SPLIT_FIXED = 2 };

/* Filled by ioattn_paged_plan(); pass it unchanged to ioattn_paged_forward(). */
typedef struct ioattn_paged_plan_info {
  char impl[32];            /* the backend that runs it */
  int64_t split_tokens;     /* keys per split-KV chunk */
  int64_t max_splits;       /* chunks of the longest possible sequence */
  size_t workspace_bytes;   /* pass at least this much as params->workspace to keep allocation out of the run */
  int64_t planned[12];      /* the shapes planned for (checked by the run) and the split mode; not to be edited */
} ioattn_paged_plan_info;

/* Plans a batch (reads shapes only). split_mode IOATTN_SPLIT_*; split_tokens: keys per chunk with
 * IOATTN_SPLIT_FIXED (a positive multiple of 64), else 0; expected_seqlen_k: the typical context (0: the table's
 * capacity), sizes automatic splits. */
IOATTN_C_API ioattn_status ioattn_paged_plan(const ioattn_paged_forward_args* args, const ioattn_params* params,
                                             int32_t split_mode, int64_t split_tokens, int64_t expected_seqlen_k,
                                             ioattn_paged_plan_info* plan);
/* Attention of the new tokens over the paged cache, as planned. Nothing is written on failure. */
IOATTN_C_API ioattn_status ioattn_paged_forward(const ioattn_paged_forward_args* args,
                                                const ioattn_paged_plan_info* plan, const ioattn_params* params);

typedef struct ioattn_paged_write_args {
  ioattn_tensor k_new;        /* [tokens, heads_kv, head_dim_qk] */
  ioattn_tensor v_new;        /* [tokens, heads_kv, head_dim_v] */
  ioattn_tensor slot_mapping; /* int32 [tokens]: slot = page * page_size + offset; negative = skip the row */
  ioattn_tensor k_cache, v_cache;
} ioattn_paged_write_args;

/* Writes new tokens' keys and values into their slots. Only params->impl and params->stream are read. */
IOATTN_C_API ioattn_status ioattn_paged_kv_write(const ioattn_paged_write_args* args, const ioattn_params* params);
/* Copies whole pages of both caches: row i of copies (int32 [n, 2]) copies page copies[i][0] to copies[i][1]. */
IOATTN_C_API ioattn_status ioattn_paged_kv_copy_pages(const ioattn_tensor* k_cache, const ioattn_tensor* v_cache,
                                                      const ioattn_tensor* copies, const ioattn_params* params);

/* ---- FP8 (e4m3) forward (include/ioattn/fp8.hpp documents it in full) ---------------------------------------------
 * q, k, v hold IOATTN_DTYPE_F8E4M3 codes in the dense layouts above; the value of a code is code x descale, with fp32
 * descales per (batch, head) when block_rows is 0 (q [batch, heads_q], k and v [batch, heads_kv]) or per block of
 * block_rows sequence rows (a multiple of 16: q [batch, heads_q, ceil(seqlen_q / block_rows)], k and v likewise over
 * seqlen_k). out is fp32, fp16 or bf16; lse optional. The fp64 reference runs it on the CPU, the cuda_sm90 kernel on
 * Hopper GPUs (head dims 128 and 256, fp16 or bf16 out, descales per (batch, head)). */
typedef struct ioattn_fp8_scales {
  ioattn_tensor q_descale, k_descale, v_descale; /* fp32 */
  int64_t block_rows;                            /* 0: per (batch, head); else rows per block, a multiple of 16 */
} ioattn_fp8_scales;

typedef struct ioattn_fp8_forward_args {
  ioattn_tensor q, k, v;
  ioattn_fp8_scales scales;
  ioattn_tensor out; /* written */
  ioattn_tensor lse; /* written when given */
} ioattn_fp8_forward_args;

IOATTN_C_API ioattn_status ioattn_forward_fp8(const ioattn_fp8_forward_args* args, const ioattn_params* params);
/* Quantizes input (fp32, fp16 or bf16 [batch, seqlen, heads, head_dim]) into output (e4m3, the same shape) and its
 * fp32 descales (shapes as above for block_rows); rotate nonzero first multiplies each row by the normalized
 * Walsh-Hadamard matrix (head_dim a power of two): apply it to both q and k, never to v. */
IOATTN_C_API ioattn_status ioattn_quantize_fp8(const ioattn_tensor* input, const ioattn_tensor* output,
                                               const ioattn_tensor* descale, int64_t block_rows, int32_t rotate);

#ifdef __cplusplus
}
#endif

#endif /* IOATTN_IOATTN_H */
