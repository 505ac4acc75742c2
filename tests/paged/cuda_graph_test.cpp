// Plan once per batch, run once per layer: a paged forward captured in a CUDA graph replays with the same bits as an
// eager run, and keeps being right when the lengths and queries in device memory change between replays (decoding
// grows the context without planning again). GPU only: skips, saying so, without one.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "ioattn/error.hpp"
#include "ioattn/paged.hpp"
#include "support/buffers.hpp"

namespace ioattn::test {
namespace {

// Throws, so that the test stops at the first failed CUDA call (gtest reports the exception as the failure).
void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// Decode batch: 4 sequences, heads 8 / 2, head dim 128, bf16, pages of 16 tokens, a table of 64 pages each.
struct DecodeBatch {
  static constexpr std::int64_t kBatch = 4, kHeadsQ = 8, kHeadsKv = 2, kDim = 128, kPage = 16, kMaxPages = 64;
  static constexpr std::int64_t kPages = kBatch * kMaxPages;
  HostBuffer q{DType::bf16, kBatch * kHeadsQ * kDim};
  HostBuffer k{DType::bf16, kPages * kPage * kHeadsKv * kDim}, v{DType::bf16, kPages * kPage * kHeadsKv * kDim};
  HostBuffer table{DType::i32, kBatch * kMaxPages}, lengths{DType::i32, kBatch};
  HostBuffer out{DType::bf16, kBatch * kHeadsQ * kDim}, lse{DType::f32, kBatch * kHeadsQ};
  DeviceBuffer d_q, d_k, d_v, d_table, d_lengths, d_out, d_lse;
  std::mt19937 gen{1234};

  DecodeBatch() {
    std::normal_distribution<double> normal;
    q.fill([&] { return normal(gen); });
    k.fill([&] { return normal(gen); });
    v.fill([&] { return normal(gen); });
    std::vector<std::int32_t> pages(kPages);
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), gen);
    for (std::int64_t i = 0; i < kPages; ++i) table.set(i, pages[static_cast<std::size_t>(i)]);
    const std::int32_t lens[kBatch] = {1000, 37, 513, 1};
    for (std::int64_t b = 0; b < kBatch; ++b) lengths.set(b, lens[b]);
    out.poison();
    lse.poison();
    d_q = DeviceBuffer(q);
    d_k = DeviceBuffer(k);
    d_v = DeviceBuffer(v);
    d_table = DeviceBuffer(table);
    d_lengths = DeviceBuffer(lengths);
    d_out = DeviceBuffer(out);
    d_lse = DeviceBuffer(lse);
  }

  PagedForwardArgs args() {
    PagedForwardArgs a;
    a.q = d_q.rebase(q.view({kBatch, 1, kHeadsQ, kDim}), q);
    a.kv.k_cache = d_k.rebase(k.view({kPages, kPage, kHeadsKv, kDim}), k);
    a.kv.v_cache = d_v.rebase(v.view({kPages, kPage, kHeadsKv, kDim}), v);
    a.kv.block_table = d_table.rebase(table.view({kBatch, kMaxPages}), table);
    a.kv.seqlens_k = d_lengths.rebase(lengths.view({kBatch}), lengths);
    a.out = d_out.rebase(out.view({kBatch, 1, kHeadsQ, kDim}), out);
    a.lse = d_lse.rebase(lse.view({kBatch, kHeadsQ, 1}), lse);
    return a;
  }
  std::vector<double> take_outputs();
};

// The bytes of an output and its lse as they are on the device now, then both poisoned again on the device.
std::vector<double> take(HostBuffer& out, DeviceBuffer& d_out, HostBuffer& lse, DeviceBuffer& d_lse) {
  d_out.download(out);
  d_lse.download(lse);
  std::vector<double> all;
  for (std::int64_t e = 0; e < out.elements(); ++e) all.push_back(out.get(e));
  for (std::int64_t e = 0; e < lse.elements(); ++e) all.push_back(lse.get(e));
  out.poison();
  lse.poison();
  d_out.upload(out);
  d_lse.upload(lse);
  return all;
}

std::vector<double> DecodeBatch::take_outputs() { return take(out, d_out, lse, d_lse); }

void expect_same_bits(const std::vector<double>& a, const std::vector<double>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  std::int64_t differ = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const bool both_nan = a[i] != a[i] && b[i] != b[i];
    if (!both_nan && a[i] != b[i]) ++differ;
    EXPECT_FALSE(a[i] != a[i]) << what << ": NaN (an output left unwritten) at " << i;
    if (a[i] != a[i]) break;
  }
  EXPECT_EQ(differ, 0) << what << ": elements that differ between the graph replay and the eager run";
}

// A plan for a DecodeBatch with the split under test, and a stream of its own with the plan's workspace (both freed
// with it). `unsupported` holds the backend's refusal, if it refused the plan: the test then skips.
struct PlannedRun {
  AttentionParams params;
  PagedPlan plan;
  std::string unsupported;
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;

  PlannedRun(DecodeBatch& batch, SplitKV split) {
    params.impl = "cuda";
    try {
      plan = paged_attention_plan(batch.args(), params, split, 512);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::unsupported) throw;
      unsupported = std::string("the cuda paged backend does not run this: ") + e.what();
      return;
    }
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    if (plan.workspace_bytes > 0) check(cudaMalloc(&workspace, plan.workspace_bytes), "cudaMalloc workspace");
    params.stream = stream;
    params.workspace = {workspace, plan.workspace_bytes};
  }
  ~PlannedRun() {
    if (workspace != nullptr) cudaFree(workspace);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
  PlannedRun(const PlannedRun&) = delete;
  PlannedRun& operator=(const PlannedRun&) = delete;

  void forward(const PagedForwardArgs& args) { paged_attention_forward(args, plan, params); }
};

// What `record` puts on `stream`, captured into a graph once; replay() launches it and waits (destroyed with it).
struct CapturedGraph {
  cudaStream_t stream;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;

  template <class Record>
  CapturedGraph(cudaStream_t s, Record&& record) : stream(s) {
    check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
    record();
    check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
    check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  }
  ~CapturedGraph() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;

  void replay(const char* what) {
    check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    check(cudaStreamSynchronize(stream), what);
  }
};

class PagedCudaGraph : public ::testing::TestWithParam<SplitKV> {};

TEST_P(PagedCudaGraph, ReplayEqualsEagerAsLengthsGrow) {
  if (!gpu_available()) GTEST_SKIP() << "needs a GPU; none is usable on this machine";
  DecodeBatch batch;
  PlannedRun run(batch, GetParam());
  if (!run.unsupported.empty()) GTEST_SKIP() << run.unsupported;
  cudaStream_t stream = run.stream;

  run.forward(batch.args());
  check(cudaStreamSynchronize(stream), "eager run");
  const std::vector<double> eager = batch.take_outputs();

  // No allocation, no host synchronization: capturable.
  CapturedGraph graph(stream, [&] { run.forward(batch.args()); });
  graph.replay("graph replay");
  expect_same_bits(batch.take_outputs(), eager, "first replay");

  // The next decoding step: sequence 1 grows from 37 to 300 tokens, sequence 3 from 1 to 64, new queries. The graph
  // is replayed as captured; an eager run on the same inputs is the yardstick.
  batch.lengths.set(1, 300);
  batch.lengths.set(3, 64);
  batch.d_lengths.upload(batch.lengths);
  std::normal_distribution<double> normal;
  batch.q.fill([&] { return normal(batch.gen); });
  batch.d_q.upload(batch.q);
  graph.replay("graph replay after growth");
  const std::vector<double> replay = batch.take_outputs();
  run.forward(batch.args());
  check(cudaStreamSynchronize(stream), "eager run after growth");
  expect_same_bits(replay, batch.take_outputs(), "replay after the lengths grew");
  EXPECT_NE(replay, eager) << "the replay did not see the new lengths and queries";
}

// A server's step graph copies the step's inputs in and then attends: copies captured in front of the forward (whose
// decode is launched as a programmatic dependent on sm90) must be waited for like any other node. The lengths and
// queries are copied from staging buffers inside the graph; new staging contents must show in the next replay.
TEST_P(PagedCudaGraph, CapturedAfterItsInputCopies) {
  if (!gpu_available()) GTEST_SKIP() << "needs a GPU; none is usable on this machine";
  DecodeBatch batch;
  PlannedRun run(batch, GetParam());
  if (!run.unsupported.empty()) GTEST_SKIP() << run.unsupported;
  cudaStream_t stream = run.stream;

  DeviceBuffer staged_q(batch.q), staged_lengths(batch.lengths);  // what the host fills between steps
  void* q_to = batch.d_q.rebase(batch.q.view({batch.q.elements()}), batch.q).data;
  void* lengths_to = batch.d_lengths.rebase(batch.lengths.view({batch.lengths.elements()}), batch.lengths).data;
  const void* q_from = staged_q.rebase(batch.q.view({batch.q.elements()}), batch.q).data;
  const void* lengths_from = staged_lengths.rebase(batch.lengths.view({batch.lengths.elements()}), batch.lengths).data;

  CapturedGraph graph(stream, [&] {
    check(cudaMemcpyAsync(lengths_to, lengths_from, batch.lengths.bytes(), cudaMemcpyDeviceToDevice, stream),
          "captured copy of the lengths");
    check(cudaMemcpyAsync(q_to, q_from, batch.q.bytes(), cudaMemcpyDeviceToDevice, stream), "captured copy of q");
    run.forward(batch.args());
  });

  std::normal_distribution<double> normal;
  for (int step = 0; step < 3; ++step) {
    // The next step's inputs go to the staging buffers only; the replay copies them in.
    batch.lengths.set(1, 37 + 200 * (step + 1));
    batch.lengths.set(3, 1 + 30 * (step + 1));
    batch.q.fill([&] { return normal(batch.gen); });
    staged_lengths.upload(batch.lengths);
    staged_q.upload(batch.q);
    graph.replay("graph replay");
    const std::vector<double> replay = batch.take_outputs();
    batch.d_lengths.upload(batch.lengths);  // the same inputs in place, for the eager yardstick
    batch.d_q.upload(batch.q);
    run.forward(batch.args());
    check(cudaStreamSynchronize(stream), "eager run");
    expect_same_bits(replay, batch.take_outputs(), "step " + std::to_string(step));
  }
}

// On sm90 the decode is a programmatic dependent of the stream's previous kernel and lets its own dependents (the
// combine, or the next call's decode) start before it ends: a call must still see every write of the call before
// it. Two forwards chained on one stream, the second's queries being the first's output (NaN before the first writes
// it), must give the bits of the same two calls with a synchronization between them; a decode that read its queries
// before the previous call's last kernel had written them would see NaN or stale values. What it catches is a
// dependent started long before those writes (a trigger at a kernel's start with no wait behind it): with the
// decode's wait removed but the triggers where they are, the gap from a trigger to the last write (the decode's
// epilogue) is shorter than the dependent's launch here, and it passed on an H200 (2026-11-22).
TEST_P(PagedCudaGraph, ChainedCallsSeeTheCallBefore) {
  if (!gpu_available()) GTEST_SKIP() << "needs a GPU; none is usable on this machine";
  DecodeBatch batch;
  PlannedRun run(batch, GetParam());
  if (!run.unsupported.empty()) GTEST_SKIP() << run.unsupported;
  cudaStream_t stream = run.stream;

  // The second call: queries = the first call's output, its own output and lse.
  using B = DecodeBatch;
  HostBuffer out2{DType::bf16, B::kBatch * B::kHeadsQ * B::kDim}, lse2{DType::f32, B::kBatch * B::kHeadsQ};
  out2.poison();
  lse2.poison();
  DeviceBuffer d_out2(out2), d_lse2(lse2);
  PagedForwardArgs second = batch.args();
  second.q = batch.d_out.rebase(batch.out.view({B::kBatch, 1, B::kHeadsQ, B::kDim}), batch.out);
  second.out = d_out2.rebase(out2.view({B::kBatch, 1, B::kHeadsQ, B::kDim}), out2);
  second.lse = d_lse2.rebase(lse2.view({B::kBatch, B::kHeadsQ, 1}), lse2);
  auto take_second = [&] { return take(out2, d_out2, lse2, d_lse2); };

  run.forward(batch.args());
  check(cudaStreamSynchronize(stream), "first call");
  run.forward(second);
  check(cudaStreamSynchronize(stream), "second call");
  const std::vector<double> separate = take_second();
  batch.take_outputs();  // poisons the first call's output (the second's queries) again

  for (int round = 0; round < 10; ++round) {
    run.forward(batch.args());
    run.forward(second);  // no synchronization in between
    check(cudaStreamSynchronize(stream), "chained calls");
    expect_same_bits(take_second(), separate, "chained round " + std::to_string(round));
    batch.take_outputs();
  }
}

INSTANTIATE_TEST_SUITE_P(Splits, PagedCudaGraph,
                         ::testing::Values(SplitKV::automatic(), SplitKV::none(), SplitKV::fixed(128)),
                         [](const ::testing::TestParamInfo<SplitKV>& info) {
                           switch (info.param.mode) {
                             case SplitKV::Mode::automatic: return std::string("automatic");
                             case SplitKV::Mode::none: return std::string("none");
                             case SplitKV::Mode::fixed: return std::string("fixed128");
                           }
                           return std::string("unknown");
                         });

}  // namespace
}  // namespace ioattn::test
