// ioattn CPU benchmark: the tiled backend against the materialized fp32 baseline on a BLAS (materialized.hpp).
// One sequence, 4 heads, head dim 128, fp32, seqlen 1k..16k, causal and not, forward and backward.
// Counters: GFLOP/s (forward 4 N^2 D H, halved for causal; backward 2.5x that, the FlashAttention convention) and
// extra_MiB, the scratch memory each needs beyond inputs and outputs: for tiled its *_workspace_bytes() (passed in
// as caller-owned workspace, so the call allocates nothing else), for the baseline its score matrices.
//   ioattn_bench_cpu [--benchmark_filter=forward]                                  2 threads, wall-clock
//   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 IOATTN_BENCH_CPU_TIME=1 ioattn_bench_cpu    1 thread, CPU time
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <random>
#include <vector>

#include "ioattn/attention.hpp"
#include "materialized.hpp"

namespace {

constexpr std::int64_t kHeads = 4;
constexpr std::int64_t kHeadDim = 128;

struct Problem {
  std::int64_t n;
  bool causal;
  std::vector<float> q, k, v, out, lse, dout, dq, dk, dv;

  Problem(std::int64_t seqlen, bool is_causal) : n(seqlen), causal(is_causal) {
    const std::size_t elems = static_cast<std::size_t>(n * kHeads * kHeadDim);
    std::mt19937 gen(42);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto* x : {&q, &k, &v, &dout}) {
      x->resize(elems);
      for (float& e : *x) e = normal(gen);
    }
    for (auto* x : {&out, &dq, &dk, &dv}) x->assign(elems, 0.0f);
    lse.assign(static_cast<std::size_t>(kHeads * n), 0.0f);
  }
  ioattn::TensorView view(std::vector<float>& x) {
    return ioattn::TensorView::contiguous(x.data(), ioattn::DType::f32, {1, n, kHeads, kHeadDim});
  }
  ioattn::ForwardArgs forward_args() {
    ioattn::ForwardArgs a;
    a.q = view(q);
    a.k = view(k);
    a.v = view(v);
    a.out = view(out);
    a.lse = ioattn::TensorView::contiguous(lse.data(), ioattn::DType::f32, {1, kHeads, n});
    return a;
  }
  ioattn::BackwardArgs backward_args() {
    ioattn::BackwardArgs a;
    a.q = view(q);
    a.k = view(k);
    a.v = view(v);
    a.out = view(out);
    a.dout = view(dout);
    a.lse = ioattn::TensorView::contiguous(lse.data(), ioattn::DType::f32, {1, kHeads, n});
    a.dq = view(dq);
    a.dk = view(dk);
    a.dv = view(dv);
    return a;
  }
  ioattn::bench::MaterializedShape shape() const { return {n, kHeads, kHeadDim, causal}; }
  double forward_flops() const { return 4.0 * n * n * kHeadDim * kHeads * (causal ? 0.5 : 1.0); }
};

void set_counters(benchmark::State& st, double flops, std::int64_t extra_bytes) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["extra_MiB"] = static_cast<double>(extra_bytes) / (1024.0 * 1024.0);
}

ioattn::AttentionParams tiled_params(bool causal) {
  ioattn::AttentionParams params;
  params.impl = "tiled";
  if (causal) params.mask = ioattn::Mask::causal();
  return params;
}

void tiled_forward(benchmark::State& st) {
  Problem p(st.range(0), st.range(1) != 0);
  const ioattn::ForwardArgs args = p.forward_args();
  ioattn::AttentionParams params = tiled_params(p.causal);
  std::vector<char> ws(ioattn::forward_workspace_bytes(args, params));
  params.workspace = {ws.data(), ws.size()};
  for (auto _ : st) ioattn::attention_forward(args, params);
  set_counters(st, p.forward_flops(), static_cast<std::int64_t>(ws.size()));
}

void materialized_forward(benchmark::State& st) {
  Problem p(st.range(0), st.range(1) != 0);
  const auto shape = p.shape();
  std::vector<float> scratch(static_cast<std::size_t>(ioattn::bench::materialized_forward_bytes(shape) / 4));
  for (auto _ : st) {
    ioattn::bench::materialized_forward(shape, p.q.data(), p.k.data(), p.v.data(), p.out.data(), p.lse.data(),
                                        scratch.data());
  }
  set_counters(st, p.forward_flops(), ioattn::bench::materialized_forward_bytes(shape));
}

void tiled_backward(benchmark::State& st) {
  Problem p(st.range(0), st.range(1) != 0);
  ioattn::AttentionParams params = tiled_params(p.causal);
  ioattn::attention_forward(p.forward_args(), params);
  const ioattn::BackwardArgs args = p.backward_args();
  std::vector<char> ws(ioattn::backward_workspace_bytes(args, params));
  params.workspace = {ws.data(), ws.size()};
  for (auto _ : st) ioattn::attention_backward(args, params);
  set_counters(st, 2.5 * p.forward_flops(), static_cast<std::int64_t>(ws.size()));
}

void materialized_backward(benchmark::State& st) {
  Problem p(st.range(0), st.range(1) != 0);
  const auto shape = p.shape();
  std::vector<float> scratch(static_cast<std::size_t>(ioattn::bench::materialized_backward_bytes(shape) / 4));
  ioattn::bench::materialized_forward(shape, p.q.data(), p.k.data(), p.v.data(), p.out.data(), p.lse.data(),
                                      scratch.data());
  for (auto _ : st) {
    ioattn::bench::materialized_backward(shape, p.q.data(), p.k.data(), p.v.data(), p.out.data(), p.dout.data(),
                                         p.lse.data(), p.dq.data(), p.dk.data(), p.dv.data(), scratch.data());
  }
  set_counters(st, 2.5 * p.forward_flops(), ioattn::bench::materialized_backward_bytes(shape));
}

// Wall-clock time by default. IOATTN_BENCH_CPU_TIME=1 times by the process's CPU time instead: with one thread
// (OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1) that is the compute time alone, unaffected by other processes taking
// turns on the cores, which is how the single-thread table of docs/PERF.md was taken on a shared machine.
void grid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"seqlen", "causal"});
  for (std::int64_t causal : {0, 1})
    for (std::int64_t n : {1024, 2048, 4096, 8192, 16384}) b->Args({n, causal});
  b->Unit(benchmark::kMillisecond)->MinTime(0.3);
  const char* cpu_time = std::getenv("IOATTN_BENCH_CPU_TIME");
  if (cpu_time != nullptr && std::string(cpu_time) == "1") {
    b->MeasureProcessCPUTime();
  } else {
    b->UseRealTime();
  }
}

BENCHMARK(tiled_forward)->Apply(grid);
BENCHMARK(materialized_forward)->Apply(grid);
BENCHMARK(tiled_backward)->Apply(grid);
BENCHMARK(materialized_backward)->Apply(grid);

}  // namespace

BENCHMARK_MAIN();
