// A small paged decode with splits on the GPU for compute-sanitizer (memcheck, racecheck; scripts/device-check's
// paged step): shuffled pages of 16 with ragged lengths (tiles spanning pages, a partial last tile, an empty
// sequence), GQA 8/2, sinks, dense q_len 1 and packed q with 1, 5 and 33 new tokens (both row-block variants), fixed
// chunks of 64 keys (many chunks, the combine) and no split, with and without a caller workspace; then a cache write
// and a page copy, at head dim 128 or the one given. Exits 0 when every call returns and every output is finite; 77
// when no GPU is usable.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include <cuda_runtime.h>

#include "ioattn/core/convert.hpp"
#include "ioattn/error.hpp"
#include "ioattn/paged.hpp"

namespace {

using namespace ioattn;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

struct Buffer {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  explicit Buffer(std::size_t n) : bytes(n) { check(cudaMalloc(&ptr, n), "cudaMalloc"); }
  ~Buffer() { cudaFree(ptr); }
  Buffer(const Buffer&) = delete;
};

template <class T>
void upload(Buffer& b, const std::vector<T>& host) {
  check(cudaMemcpy(b.ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
}

std::vector<std::uint16_t> random_bf16(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<std::uint16_t> out(n);
  for (auto& x : out) x = core::float_to_bf16(normal(rng));
  return out;
}

bool all_finite_bf16(const Buffer& b, std::size_t n) {
  std::vector<std::uint16_t> host(n);
  check(cudaMemcpy(host.data(), b.ptr, n * 2, cudaMemcpyDeviceToHost), "download");
  return std::all_of(host.begin(), host.end(), [](std::uint16_t x) { return std::isfinite(core::bf16_to_float(x)); });
}

int run(std::int64_t d) {
  std::mt19937 rng(11);
  const std::int64_t hq = 8, hkv = 2, ps = 16;
  const std::vector<std::int32_t> lens = {300, 0, 1000, 33};
  const auto batch = static_cast<std::int64_t>(lens.size());
  const std::int64_t max_pages = 64, num_pages = batch * max_pages;
  std::vector<std::int32_t> pool(num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<std::int32_t> table(pool.begin(), pool.end());
  Buffer k(num_pages * ps * hkv * d * 2), v(num_pages * ps * hkv * d * 2), bt(table.size() * 4), sl(lens.size() * 4);
  upload(k, random_bf16(num_pages * ps * hkv * d, rng));
  upload(v, random_bf16(num_pages * ps * hkv * d, rng));
  upload(bt, table);
  upload(sl, lens);
  std::vector<float> sinks_host = {0.5f, -1.0f, 2.0f, 0.0f, 1.0f, -3.0f, 0.25f, 4.0f};
  Buffer sinks(hq * 4);
  upload(sinks, sinks_host);

  PagedKV kv{TensorView::contiguous(k.ptr, DType::bf16, {num_pages, ps, hkv, d}, Device::cuda),
             TensorView::contiguous(v.ptr, DType::bf16, {num_pages, ps, hkv, d}, Device::cuda),
             TensorView::contiguous(bt.ptr, DType::i32, {batch, max_pages}, Device::cuda),
             TensorView::contiguous(sl.ptr, DType::i32, {batch}, Device::cuda)};
  AttentionParams params;
  params.impl = "cuda";
  params.mask = Mask::causal();
  params.sinks = TensorView::contiguous(sinks.ptr, DType::f32, {hq}, Device::cuda);

  // Dense decode, then packed appends (new tokens 1, 0, 33, 5: at most each sequence's length).
  const std::vector<std::int32_t> cu_q = {0, 1, 1, 34, 39};
  Buffer cuq(cu_q.size() * 4);
  upload(cuq, cu_q);
  for (bool packed : {false, true}) {
    const std::int64_t rows = packed ? cu_q.back() : batch;
    Buffer q(rows * hq * d * 2), out(rows * hq * d * 2), lse(rows * hq * 4);
    upload(q, random_bf16(rows * hq * d, rng));
    PagedForwardArgs args;
    args.kv = kv;
    if (packed) {
      args.q = TensorView::contiguous(q.ptr, DType::bf16, {rows, hq, d}, Device::cuda);
      args.out = TensorView::contiguous(out.ptr, DType::bf16, {rows, hq, d}, Device::cuda);
      args.lse = TensorView::contiguous(lse.ptr, DType::f32, {hq, rows}, Device::cuda);
      args.cu_seqlens_q = TensorView::contiguous(cuq.ptr, DType::i32, {batch + 1}, Device::cuda);
    } else {
      args.q = TensorView::contiguous(q.ptr, DType::bf16, {batch, 1, hq, d}, Device::cuda);
      args.out = TensorView::contiguous(out.ptr, DType::bf16, {batch, 1, hq, d}, Device::cuda);
      args.lse = TensorView::contiguous(lse.ptr, DType::f32, {batch, hq, 1}, Device::cuda);
    }
    for (SplitKV split : {SplitKV::fixed(64), SplitKV::none()}) {
      for (bool own_workspace : {true, false}) {
        const PagedPlan plan = paged_attention_plan(args, params, split);
        Buffer ws(plan.workspace_bytes + 16);
        AttentionParams run_params = params;
        if (own_workspace) run_params.workspace = {ws.ptr, plan.workspace_bytes};
        check(cudaMemset(out.ptr, 0xff, out.bytes), "poison");  // 0xffff is a bf16 NaN
        paged_attention_forward(args, plan, run_params);
        check(cudaDeviceSynchronize(), "paged forward");
        if (!all_finite_bf16(out, rows * hq * d)) {
          std::fprintf(stderr, "paged forward (%s, %lld-key chunks): non-finite output\n", packed ? "packed" : "dense",
                       static_cast<long long>(plan.split_tokens));
          return 1;
        }
      }
    }
  }

  // A cache write (one padding slot) and a page copy.
  const std::int64_t tokens = 5;
  std::vector<std::int32_t> slots = {table[0] * 16 + 3, -1, table[70] * 16 + 15, 7, table[130] * 16};
  Buffer kn(tokens * hkv * d * 2), vn(tokens * hkv * d * 2), sb(tokens * 4), cb(4 * 4);
  upload(kn, random_bf16(tokens * hkv * d, rng));
  upload(vn, random_bf16(tokens * hkv * d, rng));
  upload(sb, slots);
  upload(cb, std::vector<std::int32_t>{table[1], table[200], table[64], table[65]});
  paged_kv_write({TensorView::contiguous(kn.ptr, DType::bf16, {tokens, hkv, d}, Device::cuda),
                  TensorView::contiguous(vn.ptr, DType::bf16, {tokens, hkv, d}, Device::cuda),
                  TensorView::contiguous(sb.ptr, DType::i32, {tokens}, Device::cuda), kv.k_cache, kv.v_cache},
                 params);
  paged_kv_copy_pages(kv.k_cache, kv.v_cache, TensorView::contiguous(cb.ptr, DType::i32, {2, 2}, Device::cuda),
                      params);
  check(cudaDeviceSynchronize(), "write + copy");
  std::printf("paged decode (dense, packed; fixed and no split; own and pooled workspace), write, copy: ok\n");
  return 0;
}

}  // namespace

// Optional argument: the head dim (default 128; 64 and 256 run the other load and ring shapes).
int main(int argc, char** argv) {
  const std::int64_t dim = argc > 1 ? std::atoll(argv[1]) : 128;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no usable GPU: skipped\n");
    return 77;
  }
  try {
    return run(dim);
  } catch (const ioattn::Error& e) {
    std::fprintf(stderr, "ioattn error: %s\n", e.what());
    return 1;
  }
}
