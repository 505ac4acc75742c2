// Test support for paged attention: one case made concrete (a random contiguous K/V, the same K/V scattered over
// shuffled pages of a cache whose unused pages and slots hold NaN), the fp64 dense reference and the naive yardstick
// on the contiguous K/V, and runs of any paged backend on any sub-batch of the case's sequences, on the CPU or a GPU.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ioattn/paged.hpp"
#include "numerics/error_bound.hpp"
#include "support/buffers.hpp"

namespace ioattn::test::paged {

enum class Alibi { none, per_head, per_batch_head };

struct PagedCase {
  std::string name;
  DType dtype = DType::bf16;
  std::int64_t dim_qk = 128, dim_v = 128;
  std::int64_t heads_q = 8, heads_kv = 2;
  std::int64_t page_size = 16;
  std::vector<std::int64_t> q_lens;  // new tokens of each sequence
  std::vector<std::int64_t> k_lens;  // its tokens in the cache, the new ones included
  bool packed = false;               // q packed with cu_seqlens_q; else every q_lens entry must be equal
  Mask mask;
  float softcap = 0.0f;
  Alibi alibi = Alibi::none;
  bool sinks = false;
  SplitKV split = SplitKV::none();
  bool padded_cache = false;  // gaps after each head, token and page of the caches
  std::int64_t spare_pages = 3;  // pages no sequence uses (NaN)
};

// One batch of a case's sequences (any subset, any order) over the case's caches: its own q, block table, lengths,
// slopes and outputs. Views point into this object: do not copy it.
struct Batch {
  std::vector<int> seqs;
  std::int64_t seqlen_q = 0, total_q = 0;
  bool packed = false;
  HostBuffer q, out, lse, block_table, seqlens_k, cu_q, alibi;
  PagedForwardArgs args;
  AttentionParams params;  // impl, mask, softcap, alibi, sinks
  Batch() = default;
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
};

struct RunResult {
  std::vector<std::vector<double>> out;  // per sequence of the batch: [q_len, heads_q, dim_v]
  std::vector<std::vector<double>> lse;  // [q_len, heads_q]; NaN where not written
  bool with_lse = true;
  bool lse_untouched = true;             // with_lse false: every lse element still NaN
  bool inputs_untouched = true;          // q, the caches and the tables hold what they held before the run
  PagedPlan plan;
};

struct RunOptions {
  SplitKV split = SplitKV::none();
  bool with_lse = true;
  std::int64_t expected_seqlen_k = 0;
  bool caller_workspace = true;  // params.workspace of plan.workspace_bytes (NaN-filled), else left null
  const PagedPlan* plan = nullptr;  // run with this plan instead of planning (a plan reused across layers)
};

class PagedData {
 public:
  explicit PagedData(const PagedCase& c);
  PagedData(const PagedData&) = delete;
  PagedData& operator=(const PagedData&) = delete;

  const PagedCase& kase() const { return case_; }
  std::int64_t batch() const { return static_cast<std::int64_t>(case_.q_lens.size()); }
  std::int64_t num_pages() const { return num_pages_; }
  std::int64_t max_pages_per_seq() const { return max_pages_; }
  const std::vector<std::int32_t>& pages_of(int b) const { return pages_[static_cast<std::size_t>(b)]; }
  HostBuffer& k_cache() { return k_cache_; }
  HostBuffer& v_cache() { return v_cache_; }
  TensorView k_cache_view() const { return k_view_; }
  TensorView v_cache_view() const { return v_view_; }

  // A batch of sequences `seqs` (every sequence, in order, when empty) with outputs poisoned.
  std::unique_ptr<Batch> make_batch(std::vector<int> seqs = {}) const;
  // Plans and runs `impl` on `batch` (copied to the GPU first when device is cuda). Throws what the library throws.
  RunResult run(Batch& batch, const std::string& impl, Device device, const RunOptions& options);

  // out and lse of the run against the fp64 reference, with the naive yardstick, over the batch's sequences.
  std::vector<numerics::Comparison> judge(const Batch& batch, const RunResult& got) const;
  // The fp64 reference of sequence b: out [q_len, heads_q, dim_v].
  const std::vector<double>& ref_out(int b) const { return ref_out_[static_cast<std::size_t>(b)]; }

 private:
  PagedCase case_;
  std::int64_t num_pages_ = 0, max_pages_ = 0;
  std::vector<std::vector<std::int32_t>> pages_;  // per sequence: its pages in order
  HostBuffer q_all_, k_cache_, v_cache_, sinks_, alibi_all_;  // q_all_ [total_q, heads_q, dim_qk] canonical order
  HostBuffer k_cache_drawn_, v_cache_drawn_;                  // the caches as built, to see that no run writes them
  TensorView k_view_, v_view_, sinks_view_;
  std::vector<std::int64_t> q_offset_;  // row of sequence b's first token in q_all_
  std::vector<std::vector<double>> ref_out_, ref_lse_, naive_out_, naive_lse_;  // per sequence
};

// True when both hold the same values bit for bit (NaN matching NaN).
bool same_bits(const std::vector<double>& a, const std::vector<double>& b);

// The paged backends this build has: reference and tiled (CPU), and cuda in CUDA builds.
struct PagedBackendName {
  std::string name;
  Device device;
};
std::vector<PagedBackendName> paged_backends_present();

}  // namespace ioattn::test::paged
