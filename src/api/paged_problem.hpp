// ioattn internal: a validated paged-attention problem, and what a backend provides to run one.
//
// A PagedProblem is a Problem (q, out, lse, heads, dims, scale, mask, softcap, ALiBi, sinks, stream, workspace,
// dense or packed q addressed as in problem.hpp) whose k and v operands address pages instead of sequences:
//   key j of sequence b, kv head h:  page = block_table[b * block_table_stride + j / page_size]
//                                    k.ptr + page * k.batch_stride + (j % page_size) * k.seq_stride + h * k.head_stride
// seqlen_k is the table's capacity (max_pages_per_seq * page_size); sequence b's own length is seqlens_k[b], read
// where the kernel runs (clamped to the capacity). Its query span is span(b): q_len = seqlen_q (dense) or the
// cu_seqlens_q difference, and its k_len must come from seqlens_k, not from span(b).k_len.
//
// Split-KV: sequence b's keys are cut into chunks of split_tokens keys; it has n_b = max(1, ceil(len_b /
// split_tokens)) of them, at most max_splits. A sequence with n_b == 1 is written straight to out and lse (sink
// included). Otherwise chunk s writes its partial result (out normalized by the chunk's own sum, fp32) and its lse
// (no sink) to the workspace:
//   partial_out [max_splits, rows, heads_q, dim_v] fp32   partial_lse [max_splits, rows, heads_q] fp32
// (rows = batch * seqlen_q dense or total_q packed, row index = b * seqlen_q + i or the packed row), and a combine
// step merges the n_b chunks in chunk order with core::SoftmaxState's merge, adding the sink once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "api/problem.hpp"
#include "ioattn/paged.hpp"

namespace ioattn::detail {

struct PagedProblem : Problem {
  std::int64_t page_size = 0;
  std::int64_t num_pages = 0;
  std::int64_t max_pages_per_seq = 0;
  const std::int32_t* block_table = nullptr;  // [batch, block_table_stride] row-major
  std::int64_t block_table_stride = 0;
  const std::int32_t* seqlens_k = nullptr;    // [batch]

  std::int64_t split_tokens = 0;  // from the plan
  std::int64_t max_splits = 1;
  SplitKV::Mode split_mode = SplitKV::Mode::automatic;  // the plan's, as asked

  // Fixed or no split: a sequence's result must not depend on the batch it is in (a backend may then not pick its
  // kernels by the batch's size unless they give the same bits).
  bool batch_invariant() const { return split_mode != SplitKV::Mode::automatic; }

  std::int64_t capacity() const { return max_pages_per_seq * page_size; }
  std::int64_t rows() const { return is_varlen() ? total_q : batch * seqlen_q; }  // query rows in the batch
  // Workspace bytes of the split-KV partial results (0 without splits).
  std::size_t partial_bytes() const {
    if (max_splits <= 1) return 0;
    const auto n = static_cast<std::size_t>(max_splits * rows() * heads_q);
    return n * static_cast<std::size_t>(dim_v + 1) * sizeof(float);
  }
};

struct PagedWriteProblem {
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int device_index = 0;
  std::int64_t tokens = 0, heads_kv = 0, dim_qk = 0, dim_v = 0, page_size = 0, num_pages = 0;
  Operand k_new, v_new;        // batch_stride 0; seq_stride = token stride
  Operand k_cache, v_cache;    // batch_stride = page stride, seq_stride = token-in-page stride
  const std::int32_t* slot_mapping = nullptr;
  void* stream = nullptr;
};

struct PagedCopyProblem {
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int device_index = 0;
  std::int64_t num_pages = 0, page_size = 0, heads_kv = 0, dim_qk = 0, dim_v = 0;
  Operand k_cache, v_cache;
  const std::int32_t* copies = nullptr;  // [num_copies, 2] with row stride copies_stride
  std::int64_t copies_stride = 0;
  std::int64_t num_copies = 0;
  void* stream = nullptr;
};

// What a backend decides at planning time.
struct PagedSplit {
  std::int64_t split_tokens = 0;
  std::int64_t max_splits = 1;
  std::size_t workspace_bytes = 0;  // partial results and anything else the backend needs
};

struct PagedBackend {
  const char* name;  // as in Backend: what AttentionParams::impl selects
  Device device;
  int priority;

  std::string (*unsupported)(const PagedProblem& problem);
  // `problem` has split_tokens = 0; `split` is the caller's request (fixed tokens already checked to be a positive
  // multiple of 64); `expected_seqlen_k` is in [1, capacity].
  PagedSplit (*plan)(const PagedProblem& problem, SplitKV split, std::int64_t expected_seqlen_k);
  void (*forward)(const PagedProblem& problem);  // problem.split_tokens / max_splits are the plan's
  void (*write)(const PagedWriteProblem& problem);
  void (*copy_pages)(const PagedCopyProblem& problem);
};

// Each backend with a paged path defines one of these; src/api/paged_dispatch.cpp lists them.
extern const PagedBackend kReferencePagedBackend;  // src/cpu/paged_reference.cpp
extern const PagedBackend kTiledPagedBackend;      // src/cpu/paged_tiled.cpp
#if IOATTN_HAVE_CUDA
extern const PagedBackend kCudaPagedBackend;       // src/cuda/paged/
#endif

// Split arithmetic every backend shares (see the top of this file).
inline std::int64_t split_count(std::int64_t seqlen_k, std::int64_t split_tokens) {
  return seqlen_k <= split_tokens ? 1 : (seqlen_k + split_tokens - 1) / split_tokens;
}

}  // namespace ioattn::detail
