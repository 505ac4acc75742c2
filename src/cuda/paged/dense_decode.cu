// ioattn cuda: the dense backend "cuda_decode", decoding against a dense K and V through the paged decode kernels.
//
// A decode step (a few new query rows per sequence against a long context) is bound by reading K and V. The dense
// forward kernels give a (sequence, kv head) one CTA per query tile, so a small batch leaves most of the GPU idle
// (1 x 32k keys with 8 kv heads: 8 CTAs on 132 SMs). The paged kernels split each sequence's keys into chunks and
// merge the chunks by their LSE (Flash-Decoding). A dense cache is a paged one with one page per sequence: page b
// holds sequence b's seqlen_k keys, with K's batch stride as the page stride. The kernels read no block table and no
// lengths for it (DecodeParams: both null).
//
// It takes dense q, k and v, forward only, with at most paged::kWideRows query rows per (sequence, kv head) (new
// tokens x GQA group), which one tile of the decode kernels holds. "auto" takes it (auto_prefers):
// - up to paged::kNarrowRows rows (a decode step, or a few speculative tokens) always: the 16-row kernel streams K
//   and V as fast as the dense kernels from batch 16 on, and far faster below (docs/PERF.md, tenth session);
// - up to kWideRows only where the dense kernels' grid would leave more than half the SMs idle, and not with
//   AttentionParams::deterministic: the 64-row kernel has 4 warps of sm80 MMAs, 3.4-5.5x faster than the dense
//   Hopper kernels at batch 1 but 0.40-0.48x at batch 16 (H200, same page), so that choice follows the batch.
// The split follows the batch (the paged planner's automatic rule), so a sequence's bits may follow the batch it is
// in; with AttentionParams::deterministic the chunks are cut at fixed points that depend only on the sequence's
// length, the kv heads and the GPU, so they do not.
#include <algorithm>
#include <cstdint>
#include <string>

#include <cuda_runtime.h>

#include "api/backend.hpp"
#include "api/paged_problem.hpp"
#include "cuda/device_attribute.hpp"
#include "cuda/paged/decode.hpp"
#include "ioattn/error.hpp"

namespace ioattn::detail {
namespace {

// The deterministic split: enough chunks for two CTAs per SM at batch 1, each at least kMinFixedChunk keys, a
// multiple of the key tile.
constexpr std::int64_t kMinFixedChunk = 1024;

PagedProblem as_paged(const Problem& p) {
  PagedProblem pp;
  static_cast<Problem&>(pp) = p;
  pp.page_size = p.seqlen_k;
  pp.num_pages = p.batch;
  pp.max_pages_per_seq = 1;
  pp.split_mode = p.deterministic ? SplitKV::Mode::fixed : SplitKV::Mode::automatic;
  return pp;
}

// Read once per device (a failed read raises backend_failure, also while "auto" picks a backend).
int multiprocessors(int device) {
  return device_attribute<cudaDevAttrMultiProcessorCount>(device, 132, "cudaDeviceGetAttribute(multiprocessor count)");
}

// The paged planner's split for the dense problem: automatic, or (deterministic) fixed chunks from the sequence's
// length, the kv heads and the GPU only.
PagedProblem planned(const Problem& p) {
  PagedProblem pp = as_paged(p);
  SplitKV split;
  split.mode = pp.split_mode;
  if (p.deterministic) {
    const std::int64_t chunks = std::max<std::int64_t>(1, 2 * multiprocessors(p.device_index) / p.heads_kv);
    const std::int64_t tokens = (p.seqlen_k + chunks - 1) / chunks;
    split.tokens = std::max(kMinFixedChunk, (tokens + paged::kBlockKeys - 1) / paged::kBlockKeys * paged::kBlockKeys);
  }
  const PagedSplit chosen = kCudaPagedBackend.plan(pp, split, p.seqlen_k);
  pp.split_tokens = chosen.split_tokens;
  pp.max_splits = chosen.max_splits;
  return pp;
}

std::string decode_unsupported(const Problem& p, bool backward) {
  if (backward) return "the cuda_decode backend runs the forward only (its backward is the dense kernels')";
  if (p.device != Device::cuda) {
    return std::string("the cuda_decode backend needs tensors on cuda; got ") + to_string(p.device);
  }
  if (p.is_varlen()) return "the cuda_decode backend takes dense q, k and v (varlen goes to the dense kernels)";
  const std::int64_t rows = p.seqlen_q * p.group_size();
  if (rows > paged::kWideRows) {
    return "the cuda_decode backend takes at most " + std::to_string(paged::kWideRows) +
           " query rows per sequence and kv head (seqlen_q x query heads per kv head), a decode step; got " +
           std::to_string(rows);
  }
  if (p.seqlen_k == 0) return "the cuda_decode backend needs keys (seqlen_k > 0)";
  if (std::string why = kCudaPagedBackend.unsupported(as_paged(p)); !why.empty()) {
    return "the cuda_decode backend runs the paged kernels: " + why;
  }
  return {};
}

bool decode_preferred(const Problem& p) {
  const std::int64_t rows = p.seqlen_q * p.group_size();
  if (rows <= paged::kNarrowRows) return true;
  if (rows > paged::kWideRows || p.deterministic) return false;
  // The dense kernels' CTAs: one per (sequence, kv head, 128 packed rows).
  const std::int64_t dense_ctas = p.batch * p.heads_kv * ((rows + 127) / 128);
  return 2 * dense_ctas < multiprocessors(p.device_index);
}

std::size_t decode_workspace_bytes(const Problem& p) { return planned(p).partial_bytes(); }

void decode_forward(const Problem& p) { kCudaPagedBackend.forward(planned(p)); }

void no_backward(const BackwardProblem&) {
  throw Error(ErrorCode::unsupported, "the cuda_decode backend runs the forward only");
}
std::size_t no_backward_workspace(const BackwardProblem&) { return 0; }

}  // namespace

// Priority 300: above the dense kernels (cuda_sm90 200, cuda 100), so "auto" takes the decode shapes it prefers.
const Backend kCudaDecodeBackend{"cuda_decode",       Device::cuda,           300,
                                 &decode_unsupported, &decode_workspace_bytes, &no_backward_workspace,
                                 &decode_forward,     &no_backward,            &decode_preferred};

}  // namespace ioattn::detail
