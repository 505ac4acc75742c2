// ioattn cuda paged: the "cuda" paged backend record: what it refuses, how it splits the keys (plan), and the
// forward (decode kernel, then the combine when any sequence has several chunks), cache write and page copy.
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "api/paged_problem.hpp"
#include "cuda/paged/cache_ops.hpp"
#include "cuda/paged/decode.hpp"
#include "cuda/paged/params.cuh"
#include "cuda/paged/trace.cuh"
#include "cuda/scratch.hpp"
#include "cuda/sm80/common/cuda_check.cuh"
#include "ioattn/error.hpp"

namespace ioattn::detail {
namespace {

using paged::kBlockKeys;

bool supported_dims(std::int64_t dim_qk, std::int64_t dim_v) {
  if (dim_qk == 192) return dim_v == 128;
  return dim_qk == dim_v && (dim_qk == 64 || dim_qk == 128 || dim_qk == 256);
}

std::string dims_text(std::int64_t dim_qk, std::int64_t dim_v) {
  return dim_qk == dim_v ? std::to_string(dim_qk) : std::to_string(dim_qk) + "/" + std::to_string(dim_v);
}

// cp.async and the output stores move 16-byte vectors (8 elements): every row must start on a 16-byte boundary.
std::string alignment_problem(const char* name, const Operand& x) {
  constexpr std::int64_t kVec = 8;
  const bool ok = reinterpret_cast<std::uintptr_t>(x.ptr) % 16 == 0 && x.batch_stride % kVec == 0 &&
                  x.seq_stride % kVec == 0 && x.head_stride % kVec == 0;
  if (ok) return {};
  return std::string("the cuda paged backend needs 16-byte aligned rows: ") + name +
         " must start on a 16-byte boundary with strides that are multiples of 8 elements; got strides [" +
         std::to_string(x.batch_stride) + ", " + std::to_string(x.seq_stride) + ", " + std::to_string(x.head_stride) +
         "]";
}

std::string cuda_paged_unsupported(const PagedProblem& p) {
  if (p.device != Device::cuda) {
    return std::string("the cuda paged backend needs tensors on cuda; got ") + to_string(p.device);
  }
  if (p.dtype != DType::f16 && p.dtype != DType::bf16) {
    return std::string("the cuda paged backend takes fp16 or bf16 (tensor cores); got ") + to_string(p.dtype);
  }
  if (!supported_dims(p.dim_qk, p.dim_v)) {
    return "the cuda paged backend supports head dims 64, 128, 192/128 (qk/v) and 256; got " +
           dims_text(p.dim_qk, p.dim_v);
  }
  for (const auto& [name, x] : {std::pair<const char*, const Operand&>{"q", p.q}, {"kv.k_cache", p.k},
                                {"kv.v_cache", p.v}, {"out", p.out}}) {
    if (std::string why = alignment_problem(name, x); !why.empty()) return why;
  }
  // The kernels index keys, query rows and offsets inside a page in 32 bits (page bases are 64-bit).
  const std::int64_t rows_per_seq = p.seqlen_q * p.group_size();
  if (p.capacity() > INT_MAX / 2 || rows_per_seq > INT_MAX / 2 || p.rows() > INT_MAX / 2) {
    return "the cuda paged backend indexes keys and query rows in 32 bits: it takes a block table capacity, query "
           "rows per sequence (new tokens x GQA group) and total query rows below 2^30; got capacity " +
           std::to_string(p.capacity()) + ", rows per sequence " + std::to_string(rows_per_seq) + ", rows " +
           std::to_string(p.rows());
  }
  for (const auto& [name, x, dim] : {std::tuple<const char*, const Operand&, std::int64_t>{"kv.k_cache", p.k, p.dim_qk},
                                     {"kv.v_cache", p.v, p.dim_v}}) {
    const std::int64_t in_page = (p.page_size - 1) * x.seq_stride + (p.heads_kv - 1) * x.head_stride + dim;
    const bool negative = x.batch_stride < 0 || x.seq_stride < 0 || x.head_stride < 0;
    if (negative || in_page > INT_MAX || x.seq_stride > INT_MAX || x.head_stride > INT_MAX ||
        x.batch_stride > UINT32_MAX) {
      return std::string("the cuda paged backend addresses a page's rows in 32 bits: the element span of one page ") +
             "of " + name + " must stay below 2^31 and its page stride below 2^32, with no negative strides; got " +
             "span " + std::to_string(in_page) + ", page stride " + std::to_string(x.batch_stride);
    }
  }
  if (p.batch * p.heads_kv > INT_MAX || p.batch > 65535) {
    return "the cuda paged backend takes at most 65535 sequences (and batch x heads_kv below 2^31); got batch " +
           std::to_string(p.batch) + ", heads_kv " + std::to_string(p.heads_kv);
  }
  return {};
}

// The device's multiprocessor count and shared memory per multiprocessor, read once per device.
struct DeviceInfo {
  int sms = 0;
  int smem_per_sm = 0;
  int smem_per_block = 0;  // the opt-in maximum of one CTA
  int major = 0;           // compute capability
};
DeviceInfo device_info(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, DeviceInfo> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  DeviceInfo info;
  sm80::cuda_check(cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, device),
                   "cudaDeviceGetAttribute(multiprocessor count)");
  sm80::cuda_check(cudaDeviceGetAttribute(&info.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device),
                   "cudaDeviceGetAttribute(shared memory per multiprocessor)");
  sm80::cuda_check(cudaDeviceGetAttribute(&info.smem_per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                   "cudaDeviceGetAttribute(shared memory per block, opt-in)");
  sm80::cuda_check(cudaDeviceGetAttribute(&info.major, cudaDevAttrComputeCapabilityMajor, device),
                   "cudaDeviceGetAttribute(compute capability)");
  cache.emplace(device, info);
  return info;
}

std::int64_t round_up(std::int64_t x, std::int64_t m) { return (x + m - 1) / m * m; }

// The 16-row decode kernel (decode.hpp) for a grid of `grid_ctas` CTAs (batch x kv heads x chunks):
// - a grid that fits in one wave of the SMs: the key parts as key groups (one CTA per SM, 8 warps streaming);
// - a larger grid: one group of 4 warps (two CTAs per SM, whose starts and ends overlap), with one part when the
//   caller asked for an automatic split, whose bits already follow the batch; with the parts as two states per warp
//   when the split is fixed or none, so a sequence's bits stay those of the one-wave kernel, whatever its batch.
// Where a CTA cannot hold two groups' shared memory (sm80) the parts run in one group. IOATTN_PAGED_KEY_GROUPS=1 or 2
// forces the parts' one- or two-group kernel (tuning runs: the benchmark times variants in one process). Plan and run
// both call this; any chunking suits each kernel.
paged::NarrowKernel narrow_kernel(const PagedProblem& p, std::int64_t grid_ctas) {
  const paged::DecodeShape shape = paged::decode_shape(static_cast<int>(p.dim_qk));
  const int parts = shape.narrow_parts;
  if (parts == 1) return {1, 1};
  const DeviceInfo info = device_info(p.device_index);
  const int smem = shape.smem_bytes(static_cast<int>(p.dim_qk), static_cast<int>(p.dim_v), paged::kNarrowRows, parts);
  const bool groups_fit = smem <= info.smem_per_block;
  if (const char* env = std::getenv("IOATTN_PAGED_KEY_GROUPS")) {
    if (std::strcmp(env, "1") == 0) return {parts, 1};
    if (std::strcmp(env, "2") == 0) return {parts, groups_fit ? parts : 1};
  }
  // At dim 64 two parts only with no split, where a CTA streams a whole sequence (H200, 2026-11-21, against one part:
  // 16 x 8k 78.4 against 113.2 us, 16 x 4k 44.6 against 61.4, 64 x 4k 156.9 against 163.7; 128 x 2k 148.5 against
  // 140.0 the one loss). Over split chunks three one-group CTAs per SM in one part do better: automatic splits
  // (16 x 8k 74.3 against 78.5 us unsplit in two groups, 1 x 32k 28.7 against 30.0) and fixed ones (two states per
  // warp cost 3-8%: 16 x 8k in 1024-key chunks 89.9 against 83.5 us). The choice follows the split mode only, so a
  // sequence's bits never follow its batch.
  if (p.dim_qk <= 64 && p.split_mode != SplitKV::Mode::none) return {1, 1};
  if (groups_fit && grid_ctas <= info.sms) return {parts, parts};
  return {p.batch_invariant() ? parts : 1, 1};
}

// Flash-Decoding's rule: when (batch x kv heads x row blocks) CTAs leave the SMs idle, cut each sequence's keys
// into chunks so the grid fills the machine. Each candidate chunk length (a multiple of the key tile, at least
// kMinChunkKeys) is scored by its wave efficiency: CTAs over whole waves of CTA slots, with the chunk count the
// rounded length really gives, and a fixed cost per CTA. The fewest chunks within 3% of the best score win: more
// chunks cost partial writes and a longer combine, and measured no faster (H200, bench/paged_decode.py).
std::int64_t automatic_split_tokens(const PagedProblem& p, std::int64_t expected) {
  constexpr std::int64_t kMinChunkKeys = 256;  // below this a chunk's fixed costs (Q load, epilogue) dominate
  constexpr std::int64_t kMaxChunks = 128;
  const std::int64_t rows_per_seq = std::max<std::int64_t>(p.seqlen_q * p.group_size(), 1);
  const int block_m = rows_per_seq <= paged::kNarrowRows ? paged::kNarrowRows : paged::kWideRows;
  const std::int64_t ctas = p.batch * p.heads_kv * ((rows_per_seq + block_m - 1) / block_m);
  if (ctas <= 0) return 0;
  const DeviceInfo info = device_info(p.device_index);
  const paged::DecodeShape shape = paged::decode_shape(static_cast<int>(p.dim_qk));
  const std::int64_t max_chunks = std::clamp<std::int64_t>(expected / kMinChunkKeys, 1, kMaxChunks);
  auto tokens_for = [&](std::int64_t n) {
    return std::max(kMinChunkKeys, round_up((expected + n - 1) / n, kBlockKeys));
  };
  // CTA slots of the kernel the run will pick for chunks of `tokens` (its grid counts the capacity's chunks; no
  // split is one chunk).
  auto slots_for = [&](std::int64_t tokens) {
    const std::int64_t grid = ctas * (tokens >= expected ? 1 : (p.capacity() + tokens - 1) / tokens);
    const int groups = block_m == paged::kNarrowRows ? narrow_kernel(p, grid).groups : 1;
    const int smem = shape.smem_bytes(static_cast<int>(p.dim_qk), static_cast<int>(p.dim_v), block_m, groups);
    const std::int64_t per_sm = std::clamp<std::int64_t>(info.smem_per_sm / (smem + 1024), 1, 16);
    return std::max<std::int64_t>(info.sms * per_sm, 1);
  };
  // Keys streamed over keys the slots could have streamed, each CTA charged kCtaOverheadKeys more for its fixed
  // costs (query load, the first tiles' latency, epilogue): without that charge, more waves of shorter chunks looked
  // as good as fewer long ones (D 64, 128 x 2k: three 704-key chunks 166 us against 141 us unsplit, H200).
  constexpr double kCtaOverheadKeys = 512;
  auto efficiency = [&](std::int64_t tokens) {
    const std::int64_t chunks = (expected + tokens - 1) / tokens;
    const double waves = static_cast<double>(ctas * chunks) / static_cast<double>(slots_for(tokens));
    const double chunk_keys = static_cast<double>(std::min(tokens, expected));
    return waves / std::ceil(waves) * chunk_keys / (chunk_keys + kCtaOverheadKeys);
  };
  double best = efficiency(expected);  // one chunk
  for (std::int64_t n = 2; n <= max_chunks; ++n) best = std::max(best, efficiency(tokens_for(n)));
  if (efficiency(expected) >= 0.97 * best) return 0;
  for (std::int64_t n = 2; n <= max_chunks; ++n) {
    if (efficiency(tokens_for(n)) >= 0.97 * best) return tokens_for(n);
  }
  return 0;
}

PagedSplit cuda_paged_plan(const PagedProblem& p, SplitKV split, std::int64_t expected_seqlen_k) {
  const std::int64_t whole = std::max<std::int64_t>(round_up(p.capacity(), kBlockKeys), kBlockKeys);
  std::int64_t tokens = whole;
  if (split.mode == SplitKV::Mode::fixed) tokens = split.tokens;
  if (split.mode == SplitKV::Mode::automatic) {
    const std::int64_t chosen = automatic_split_tokens(p, expected_seqlen_k);
    if (chosen > 0 && chosen < whole) tokens = chosen;
  }
  tokens = std::min(tokens, whole);  // a chunk longer than the capacity is one chunk
  PagedProblem planned = p;
  planned.split_tokens = tokens;
  planned.max_splits = std::max<std::int64_t>(1, (p.capacity() + tokens - 1) / tokens);
  if (planned.max_splits > 65535) {
    throw Error(ErrorCode::unsupported,
                "the cuda paged backend launches at most 65535 chunks per sequence; chunks of " +
                    std::to_string(tokens) + " keys over a capacity of " + std::to_string(p.capacity()) + " make " +
                    std::to_string(planned.max_splits) + " (use longer chunks)");
  }
  return {tokens, planned.max_splits, planned.partial_bytes()};
}

// Programmatic dependent launches (sm90 and later): the combine depends on the decode, and the decode on whatever
// kernel the stream ran before it, so each kernel's CTAs are resident and waiting when the one before ends instead
// of being launched then. The wait is for the whole previous grid and its writes, as with an ordinary launch.
// Measured back to back (H200, 2026-11-22, bench/paged_decode.py --graph): 0.1-1.0 us faster a call on most rows at
// D 64, 128 and 256 (D 128: 1 x 32k 38.6 -> 38.2 us, 16 x 2k 36.4 -> 35.8), within noise on the others.
// IOATTN_PAGED_PDL=0 launches the decode without.
bool decode_pdl_enabled() {
  const char* env = std::getenv("IOATTN_PAGED_PDL");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

template <class Element>
void run_decode(const paged::DecodeParams& dp, const PagedProblem& p) {
  using paged::launch_decode;
  const int device = p.device_index;
  const paged::NarrowKernel narrow = narrow_kernel(p, p.batch * p.heads_kv * p.max_splits);
  const bool sm90 = device_info(device).major >= 9;  // programmatic dependent launches: sm90 and later
  const bool programmatic = sm90 && decode_pdl_enabled();
  if (p.dim_qk == 64) launch_decode<Element, 64, 64>(dp, p.stream, device, narrow, programmatic);
  else if (p.dim_qk == 128) launch_decode<Element, 128, 128>(dp, p.stream, device, narrow, programmatic);
  else if (p.dim_qk == 192) launch_decode<Element, 192, 128>(dp, p.stream, device, narrow, programmatic);
  else if (p.dim_qk == 256) launch_decode<Element, 256, 256>(dp, p.stream, device, narrow, programmatic);
  else throw Error(ErrorCode::unsupported, cuda_paged_unsupported(p));
  if (dp.max_splits > 1) {
    paged::launch_combine<Element>(dp, static_cast<int>(p.dim_v), p.stream, sm90);
  }
}

// The split partials live in the caller's workspace or in memory from the stream's pool for this call
// (StreamScratch): no host synchronization either way. The kernels store 16-byte vectors there.
void check_partials_alignment(const PagedProblem& p) {
  if (p.partial_bytes() == 0 || p.workspace.data == nullptr) return;
  if (reinterpret_cast<std::uintptr_t>(p.workspace.data) % 16 != 0) {
    throw Error(ErrorCode::invalid_argument,
                "params.workspace: expected a 16-byte aligned pointer (the cuda paged backend stores 16-byte "
                "vectors there), got one at offset " +
                    std::to_string(reinterpret_cast<std::uintptr_t>(p.workspace.data) % 16));
  }
}

#if defined(IOATTN_PAGED_TRACE)
// trace.cuh: with IOATTN_PAGED_TRACE_FILE set, the kernels record their CTAs' event times in two device buffers
// (allocated once, never freed: a developer build's tool) and each call rewrites the file from them.
struct TraceBuffers {
  std::uint64_t* decode = nullptr;
  std::uint64_t* combine = nullptr;
};
constexpr std::size_t kTraceBytes = sizeof(std::uint64_t) * paged::trace::kMaxCtas * paged::trace::kEvents;

TraceBuffers begin_trace(cudaStream_t stream) {
  if (std::getenv("IOATTN_PAGED_TRACE_FILE") == nullptr) return {};
  static TraceBuffers buffers = [] {
    TraceBuffers b;
    sm80::cuda_check(cudaMalloc(&b.decode, 2 * kTraceBytes), "paged trace buffers");
    b.combine = b.decode + paged::trace::kMaxCtas * paged::trace::kEvents;
    return b;
  }();
  sm80::cuda_check(cudaMemsetAsync(buffers.decode, 0, 2 * kTraceBytes, stream), "paged trace reset");
  return buffers;
}

void end_trace(const TraceBuffers& buffers, cudaStream_t stream) {
  if (buffers.decode == nullptr) return;
  std::vector<std::uint64_t> host(2 * kTraceBytes / sizeof(std::uint64_t));
  sm80::cuda_check(cudaMemcpyAsync(host.data(), buffers.decode, 2 * kTraceBytes, cudaMemcpyDeviceToHost, stream),
                   "paged trace copy");
  sm80::cuda_check(cudaStreamSynchronize(stream), "paged trace copy");
  std::FILE* f = std::fopen(std::getenv("IOATTN_PAGED_TRACE_FILE"), "w");
  if (f == nullptr) return;
  std::fprintf(f, "kernel cta sm start first loop_end end\n");
  constexpr int kE = paged::trace::kEvents;
  for (int kernel = 0; kernel < 2; ++kernel) {
    for (int cta = 0; cta < paged::trace::kMaxCtas; ++cta) {
      const std::uint64_t* e = host.data() + (static_cast<std::size_t>(kernel) * paged::trace::kMaxCtas + cta) * kE;
      if (e[paged::trace::kStart] == 0) continue;
      std::fprintf(f, "%s %d %llu %llu %llu %llu %llu\n", kernel == 0 ? "decode" : "combine", cta,
                   static_cast<unsigned long long>(e[0]), static_cast<unsigned long long>(e[1]),
                   static_cast<unsigned long long>(e[2]), static_cast<unsigned long long>(e[3]),
                   static_cast<unsigned long long>(e[4]));
    }
  }
  std::fclose(f);
}
#endif

void cuda_paged_forward(const PagedProblem& p) {
  sm80::DeviceScope device(p.device_index);
  check_partials_alignment(p);
  const StreamScratch partials(p.workspace, p.partial_bytes(), static_cast<cudaStream_t>(p.stream),
                               "cuda paged attention");
  paged::DecodeParams dp = paged::make_decode_params(p, reinterpret_cast<float*>(partials.data()));
#if defined(IOATTN_PAGED_TRACE)
  const TraceBuffers trace = begin_trace(static_cast<cudaStream_t>(p.stream));
  dp.trace_decode = trace.decode, dp.trace_combine = trace.combine;
#endif
  if (p.dtype == DType::bf16) run_decode<__nv_bfloat16>(dp, p);
  else if (p.dtype == DType::f16) run_decode<__half>(dp, p);
  else throw Error(ErrorCode::unsupported, cuda_paged_unsupported(p));
#if defined(IOATTN_PAGED_TRACE)
  end_trace(trace, static_cast<cudaStream_t>(p.stream));
#endif
}

}  // namespace

namespace paged {

DecodeParams make_decode_params(const PagedProblem& p, float* workspace) {
  DecodeParams d{};
  d.q = p.q.ptr;
  d.k_cache = p.k.ptr;
  d.v_cache = p.v.ptr;
  d.out = p.out.ptr;
  d.lse = static_cast<float*>(p.lse.ptr);
  d.block_table = p.block_table;
  d.seqlens_k = p.seqlens_k;
  d.cu_seqlens_q = p.cu_seqlens_q;
  if (p.max_splits > 1) {
    d.partial_out = workspace;
    d.partial_lse = workspace + p.max_splits * p.rows() * p.heads_q * p.dim_v;
  }
  d.q_batch_stride = p.q.batch_stride, d.q_row_stride = p.q.seq_stride, d.q_head_stride = p.q.head_stride;
  d.o_batch_stride = p.out.batch_stride, d.o_row_stride = p.out.seq_stride, d.o_head_stride = p.out.head_stride;
  d.lse_batch_stride = p.lse.batch_stride, d.lse_row_stride = p.lse.seq_stride;
  d.lse_head_stride = p.lse.head_stride;
  d.k_page_stride = static_cast<std::uint32_t>(p.k.batch_stride);
  d.v_page_stride = static_cast<std::uint32_t>(p.v.batch_stride);
  d.k_row_stride = static_cast<int>(p.k.seq_stride), d.k_head_stride = static_cast<int>(p.k.head_stride);
  d.v_row_stride = static_cast<int>(p.v.seq_stride), d.v_head_stride = static_cast<int>(p.v.head_stride);
  d.block_table_stride = p.block_table_stride;
  d.batch = static_cast<int>(p.batch);
  d.heads_q = static_cast<int>(p.heads_q);
  d.heads_kv = static_cast<int>(p.heads_kv);
  d.group = static_cast<int>(p.group_size());
  d.seqlen_q = static_cast<int>(p.seqlen_q);
  d.rows = static_cast<int>(p.rows());
  d.capacity = static_cast<int>(p.capacity());
  d.page_size = static_cast<int>(p.page_size);
  d.max_pages_per_seq = static_cast<int>(p.max_pages_per_seq);
  d.page_div = FastDivisor::make(static_cast<std::uint32_t>(p.page_size));
  d.split_tokens = static_cast<int>(p.split_tokens);
  d.max_splits = static_cast<int>(p.max_splits);
  d.scale = p.scale;
  d.softcap = p.softcap;
  d.alibi_slopes = p.alibi_slopes;
  d.alibi_batch_stride = p.alibi_batch_stride;
  d.sinks = p.sinks;
  d.window_left = p.mask.window_left;
  d.window_right = p.mask.window_right;
  d.top_left = p.mask.alignment == Alignment::top_left;
  return d;
}

}  // namespace paged

// Priority 100: above the CPU paged backends, so "auto" picks it for tensors on a GPU.
const PagedBackend kCudaPagedBackend{"cuda",          Device::cuda,       100,
                                     cuda_paged_unsupported, cuda_paged_plan, cuda_paged_forward,
                                     paged::kv_write, paged::copy_pages};

}  // namespace ioattn::detail
