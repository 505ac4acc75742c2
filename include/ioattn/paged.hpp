// ioattn: attention over a paged KV cache (PagedAttention): decoding, append and chunked prefill, with the keys of
// long contexts split across thread blocks and merged by their log-sum-exp (Flash-Decoding).
//
// Layouts (strides in elements, the last dimension contiguous, any other strides allowed):
//   k_cache     [num_pages, page_size, heads_kv, head_dim_qk]   v_cache [num_pages, page_size, heads_kv, head_dim_v]
//   block_table int32 [batch, max_pages_per_seq]  the page holding tokens p*page_size .. (p+1)*page_size-1 of
//               sequence b; entries past a sequence's last page are never read
//   seqlens_k   int32 [batch]  tokens of sequence b in the cache, the new ones included,
//               0 <= seqlens_k[b] <= max_pages_per_seq * page_size (the table's capacity)
//   q           [batch, seqlen_q, heads_q, head_dim_qk]  (seqlen_q new tokens per sequence: 1 when decoding), or
//               packed [total_q, heads_q, head_dim_qk] with cu_seqlens_q int32 [batch + 1] when their counts differ
//   out         like q with head_dim_v;  lse (optional) fp32 [batch, heads_q, seqlen_q] or [heads_q, total_q]
// The query rows of a sequence are its newest tokens, already written to the cache (paged_kv_write): query i of the
// n new ones sits at position seqlens_k[b] - n + i. Masks align bottom-right as in the dense API, so Mask::causal()
// is causal among the new tokens and sees the whole earlier context; windows, softcap, ALiBi and sinks mean what they
// mean in attention.hpp, with the paged keys in place of k and v. GQA: heads_q a multiple of heads_kv; the query
// heads of a group are processed together, so each K and V page is read once per group.
//
// Plan once per batch, run once per layer:
//   PagedPlan plan = paged_attention_plan(args, params);       // host only: reads shapes, never tensor contents
//   ... allocate plan.workspace_bytes once; then per layer, with the same shapes:
//   paged_attention_forward(args_for_layer, plan, params);     // no host round trip, no allocation when
//                                                              // params.workspace is given: CUDA-graph safe
// Device-resident block tables and lengths are trusted by the CUDA backend (it cannot check them without a host
// round trip): a seqlens_k above the table's capacity is clamped to it, and page ids must be in [0, num_pages).
// The CPU backends check both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ioattn/attention.hpp"
#include "ioattn/tensor.hpp"

namespace ioattn {

struct PagedKV {
  TensorView k_cache;      // [num_pages, page_size, heads_kv, head_dim_qk]
  TensorView v_cache;      // [num_pages, page_size, heads_kv, head_dim_v]
  TensorView block_table;  // int32 [batch, max_pages_per_seq]
  TensorView seqlens_k;    // int32 [batch]
};

struct PagedForwardArgs {
  TensorView q;
  PagedKV kv;
  TensorView out;           // written
  TensorView lse;           // written when given
  TensorView cu_seqlens_q;  // optional int32 [batch + 1]: packed q (see the top of this file)
  std::int64_t max_seqlen_q = 0;  // with cu_seqlens_q: the most new tokens of any sequence (0: read off the offsets)
};

// How each sequence's keys are cut into chunks that separate thread blocks process (split-KV).
struct SplitKV {
  enum class Mode : std::uint8_t {
    automatic,  // chunks sized so the batch fills the device; the rounding of a sequence's result then depends on
                // the batch it is in (a few ulps)
    none,       // one chunk per sequence: as with fixed, a sequence's result is bitwise independent of its batch
    fixed,      // chunks of exactly `tokens` keys: a sequence's result is bitwise independent of the batch it is in
  };
  Mode mode = Mode::automatic;
  std::int64_t tokens = 0;  // fixed: keys per chunk, a positive multiple of 64

  static constexpr SplitKV automatic() { return {}; }
  static constexpr SplitKV none() { return {Mode::none, 0}; }
  static constexpr SplitKV fixed(std::int64_t tokens) { return {Mode::fixed, tokens}; }
};

// What paged_attention_plan decided, and the shapes it decided it for (the run checks they still hold).
struct PagedPlan {
  std::string impl;               // the backend that runs it
  std::int64_t split_tokens = 0;  // keys per chunk
  std::int64_t max_splits = 1;    // chunks of the longest possible sequence: ceil(capacity / split_tokens)
  std::size_t workspace_bytes = 0;  // pass at least this much as params.workspace to keep allocation out of the run
  SplitKV::Mode split_mode = SplitKV::Mode::automatic;  // as asked: fixed and none give batch-invariant results

  // The shapes planned for.
  DType dtype = DType::f32;
  Device device = Device::cpu;
  std::int64_t batch = 0, rows_q = 0, heads_q = 0, heads_kv = 0, dim_qk = 0, dim_v = 0;
  std::int64_t page_size = 0, max_pages_per_seq = 0;
  bool packed_q = false;
};

// Plans a batch: picks the backend (params.impl), the split and the workspace. `expected_seqlen_k`, when > 0, is
// the typical context length of the batch and sizes automatic splits (default: the table's capacity).
PagedPlan paged_attention_plan(const PagedForwardArgs& args, const AttentionParams& params = {},
                               SplitKV split = {}, std::int64_t expected_seqlen_k = 0);

// Attention of the new tokens over each sequence's paged keys and values, as planned. Throws ioattn::Error naming
// the argument on bad input (or a plan made for other shapes), leaving out and lse untouched.
void paged_attention_forward(const PagedForwardArgs& args, const PagedPlan& plan, const AttentionParams& params = {});

// Writes new tokens into the cache: row t of k_new/v_new goes to page slot_mapping[t] / page_size, offset
// slot_mapping[t] % page_size (the slots BlockManager::append returns); a negative slot skips the row (padding).
struct PagedWriteArgs {
  TensorView k_new;         // [tokens, heads_kv, head_dim_qk]
  TensorView v_new;         // [tokens, heads_kv, head_dim_v]
  TensorView slot_mapping;  // int32 [tokens]
  TensorView k_cache, v_cache;  // written, layouts as above
};
// Only params.impl and params.stream are read.
void paged_kv_write(const PagedWriteArgs& args, const AttentionParams& params = {});

// Copies whole pages (copy-on-write after BlockManager::append): for each row i of `copies` (int32 [n, 2]), page
// copies[i][0] of both caches is copied to page copies[i][1]. The copies of one call run in parallel, so no page may
// be the destination of two rows or both a source and a destination (copies of successive appends that chain go in
// successive calls); the CPU backends check this, the CUDA backend trusts device-resident lists. A
// std::vector<BlockCopy> is such a list as it is. Only params.impl and params.stream are read.
void paged_kv_copy_pages(const TensorView& k_cache, const TensorView& v_cache, const TensorView& copies,
                         const AttentionParams& params = {});

}  // namespace ioattn
