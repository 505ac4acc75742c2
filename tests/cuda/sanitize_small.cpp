// A small forward and backward on the GPU for compute-sanitizer (memcheck, racecheck): ragged lengths so that every
// predicated load and store path runs, a causal mask with empty rows, sinks, GQA and a varlen batch. Exits 0 when
// the calls return and every output is finite; 77 when no GPU is usable (scripts/device-check reports a skip).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "ioattn/attention.hpp"
#include "ioattn/core/convert.hpp"
#include "ioattn/error.hpp"

namespace {

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
};

std::vector<std::uint16_t> random_bf16(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<std::uint16_t> out(n);
  for (auto& x : out) x = ioattn::core::float_to_bf16(normal(rng));
  return out;
}

template <class T>
Buffer upload(const std::vector<T>& host) {
  Buffer b(host.size() * sizeof(T));
  check(cudaMemcpy(b.ptr, host.data(), b.bytes, cudaMemcpyHostToDevice), "upload");
  return b;
}

// Every bf16 element finite (fp32 arrays: finite or -inf, the lse of an empty row).
bool all_finite_bf16(const Buffer& b) {
  std::vector<std::uint16_t> host(b.bytes / 2);
  check(cudaMemcpy(host.data(), b.ptr, b.bytes, cudaMemcpyDeviceToHost), "download");
  for (auto x : host) {
    if (!std::isfinite(ioattn::core::bf16_to_float(x))) return false;
  }
  return true;
}

int run(bool varlen, bool backward) {
  using namespace ioattn;
  std::mt19937 rng(varlen ? 7 : 3);
  const std::int64_t hq = 4, hkv = 2, d = 128;
  std::vector<std::int32_t> cu_q = {0, 70, 70, 201}, cu_k = {0, 33, 160, 300};
  const std::int64_t batch = varlen ? 3 : 2, sq = varlen ? 201 : 150, sk = varlen ? 300 : 97;
  const std::int64_t rows_q = varlen ? sq : batch * sq, rows_k = varlen ? sk : batch * sk;
  Buffer q = upload(random_bf16(rows_q * hq * d, rng)), k = upload(random_bf16(rows_k * hkv * d, rng));
  Buffer v = upload(random_bf16(rows_k * hkv * d, rng)), dout = upload(random_bf16(rows_q * hq * d, rng));
  Buffer out(rows_q * hq * d * 2), lse(rows_q * hq * 4), dq(rows_q * hq * d * 2), dk(rows_k * hkv * d * 2),
      dv(rows_k * hkv * d * 2), dsinks(hq * 4);
  std::vector<float> sinks_host = {0.5f, -1.0f, 2.0f, 0.0f};
  Buffer sinks = upload(sinks_host), cuq = upload(cu_q), cuk = upload(cu_k);

  auto view = [&](Buffer& b, std::int64_t rows, std::int64_t heads, std::int64_t seq) {
    if (varlen) return TensorView::contiguous(b.ptr, DType::bf16, {rows, heads, d}, Device::cuda);
    return TensorView::contiguous(b.ptr, DType::bf16, {batch, seq, heads, d}, Device::cuda);
  };
  AttentionParams params;
  // The backend of both passes: "cuda" (sm80) unless IOATTN_SANITIZE_IMPL names another (e.g. cuda_sm90).
  const char* impl = std::getenv("IOATTN_SANITIZE_IMPL");
  params.impl = impl != nullptr ? impl : "cuda";
  params.mask = Mask::causal();
  params.sinks = TensorView::contiguous(sinks.ptr, DType::f32, {hq}, Device::cuda);
  std::optional<Varlen> vl;
  if (varlen) {
    vl = Varlen{TensorView::contiguous(cuq.ptr, DType::i32, {batch + 1}, Device::cuda),
                TensorView::contiguous(cuk.ptr, DType::i32, {batch + 1}, Device::cuda), 131, 140};
  }
  ForwardArgs fa;
  fa.q = view(q, rows_q, hq, sq), fa.k = view(k, rows_k, hkv, sk), fa.v = view(v, rows_k, hkv, sk);
  fa.out = view(out, rows_q, hq, sq);
  fa.lse = varlen ? TensorView::contiguous(lse.ptr, DType::f32, {hq, rows_q}, Device::cuda)
                  : TensorView::contiguous(lse.ptr, DType::f32, {batch, hq, sq}, Device::cuda);
  fa.varlen = vl;
  attention_forward(fa, params);
  check(cudaDeviceSynchronize(), "forward");
  if (!all_finite_bf16(out)) {
    std::fprintf(stderr, "forward (%s): non-finite output\n", varlen ? "varlen" : "dense");
    return 1;
  }
  if (backward) {
    BackwardArgs ba;
    ba.q = fa.q, ba.k = fa.k, ba.v = fa.v, ba.out = fa.out, ba.lse = fa.lse;
    ba.dout = view(dout, rows_q, hq, sq);
    ba.dq = view(dq, rows_q, hq, sq), ba.dk = view(dk, rows_k, hkv, sk), ba.dv = view(dv, rows_k, hkv, sk);
    ba.dsinks = TensorView::contiguous(dsinks.ptr, DType::f32, {hq}, Device::cuda);
    ba.varlen = vl;
    attention_backward(ba, params);
    check(cudaDeviceSynchronize(), "backward");
    if (!all_finite_bf16(dq) || !all_finite_bf16(dk) || !all_finite_bf16(dv)) {
      std::fprintf(stderr, "backward (%s): non-finite gradient\n", varlen ? "varlen" : "dense");
      return 1;
    }
  }
  std::printf("%s forward%s: ok\n", varlen ? "varlen" : "dense", backward ? " + backward" : "");
  return 0;
}

}  // namespace

// Usage: cuda_sanitize_small [--forward-only]
int main(int argc, char** argv) {
  if (ioattn::cuda_device_count() == 0) {
    std::printf("no usable GPU: skipped\n");
    return 77;
  }
  const bool backward = !(argc > 1 && std::strcmp(argv[1], "--forward-only") == 0);
  try {
    int rc = run(false, backward);
    if (rc == 0) rc = run(true, backward);
    return rc;
  } catch (const ioattn::Error& e) {
    std::fprintf(stderr, "ioattn error: %s\n", e.what());
    return 1;
  }
}
