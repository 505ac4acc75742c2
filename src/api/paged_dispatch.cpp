// ioattn: the paged entry points. Validate, pick a paged backend (as dispatch.cpp does for dense ones), then call it.
#include <string>
#include <vector>

#include "api/call_backend.hpp"
#include "api/checks.hpp"
#include "api/paged_validate.hpp"
#include "ioattn/error.hpp"
#include "ioattn/paged.hpp"

namespace ioattn {
namespace detail {
namespace {

const std::vector<const PagedBackend*>& paged_backends() {
  static const std::vector<const PagedBackend*> list = {
      &kReferencePagedBackend,
      &kTiledPagedBackend,
#if IOATTN_HAVE_CUDA
      &kCudaPagedBackend,
#endif
  };
  return list;
}

std::string paged_impls() {
  std::string names = "auto";
  for (const PagedBackend* b : paged_backends()) names += std::string(", ") + b->name;
  return names;
}

// "auto": the highest-priority paged backend on `device` whose `unsupported` (if given a problem) says nothing;
// a name: that backend, which must live on `device`.
const PagedBackend& select_paged(Device device, const std::string& impl, const PagedProblem* problem) {
  const PagedBackend* best = nullptr;
  std::string reasons;
  for (const PagedBackend* b : paged_backends()) {
    if (impl == "auto") {
      if (b->device != device) continue;
      const std::string why = problem != nullptr ? b->unsupported(*problem) : std::string();
      if (!why.empty()) {
        reasons += std::string(reasons.empty() ? "" : "; ") + b->name + ": " + why;
        continue;
      }
      if (best == nullptr || b->priority > best->priority) best = b;
      continue;
    }
    if (impl != b->name) continue;
    if (b->device != device) {
      fail("params.impl", std::string("a paged backend for tensors on ") + to_string(device),
           "'" + impl + "', which runs on " + to_string(b->device));
    }
    const std::string why = problem != nullptr ? b->unsupported(*problem) : std::string();
    if (!why.empty()) throw Error(ErrorCode::unsupported, "impl '" + impl + "' cannot run this paged problem: " + why);
    return *b;
  }
  if (impl != "auto") {
    fail("params.impl", "one of " + paged_impls() + " (the paged backends in this build)", "'" + impl + "'");
  }
  if (best == nullptr) {
    throw Error(ErrorCode::unsupported, std::string("impl 'auto': no paged backend on ") + to_string(device) +
                                            " can run this problem" + (reasons.empty() ? "" : " (" + reasons + ")"));
  }
  return *best;
}

}  // namespace
}  // namespace detail

PagedPlan paged_attention_plan(const PagedForwardArgs& args, const AttentionParams& params, SplitKV split,
                               std::int64_t expected_seqlen_k) {
  const detail::PagedProblem problem = detail::make_paged_problem(args, params);
  if (split.mode == SplitKV::Mode::fixed && (split.tokens < 64 || split.tokens % 64 != 0)) {
    detail::fail("split.tokens", "a positive multiple of 64 with SplitKV::fixed", std::to_string(split.tokens));
  }
  if (split.mode != SplitKV::Mode::automatic && split.mode != SplitKV::Mode::none &&
      split.mode != SplitKV::Mode::fixed) {
    detail::fail("split.mode", "automatic, none or fixed", std::to_string(static_cast<int>(split.mode)));
  }
  if (expected_seqlen_k < 0 || expected_seqlen_k > problem.capacity()) {
    detail::fail("expected_seqlen_k",
                 "0 (the table's capacity) or a length up to the capacity, " + std::to_string(problem.capacity()),
                 std::to_string(expected_seqlen_k));
  }
  if (expected_seqlen_k == 0) expected_seqlen_k = problem.capacity() > 0 ? problem.capacity() : 1;
  const detail::PagedBackend& backend = detail::select_paged(problem.device, params.impl, &problem);
  const detail::PagedSplit chosen = detail::call_backend(
      backend.name, "paged plan", [&] { return backend.plan(problem, split, expected_seqlen_k); });

  PagedPlan plan;
  plan.impl = backend.name;
  plan.split_tokens = chosen.split_tokens;
  plan.max_splits = chosen.max_splits;
  plan.workspace_bytes = chosen.workspace_bytes;
  plan.split_mode = split.mode;
  plan.dtype = problem.dtype;
  plan.device = problem.device;
  plan.batch = problem.batch;
  plan.rows_q = problem.is_varlen() ? problem.total_q : problem.seqlen_q;
  plan.heads_q = problem.heads_q;
  plan.heads_kv = problem.heads_kv;
  plan.dim_qk = problem.dim_qk;
  plan.dim_v = problem.dim_v;
  plan.page_size = problem.page_size;
  plan.max_pages_per_seq = problem.max_pages_per_seq;
  plan.packed_q = problem.is_varlen();
  return plan;
}

void paged_attention_forward(const PagedForwardArgs& args, const PagedPlan& plan, const AttentionParams& params) {
  detail::PagedProblem problem = detail::make_paged_problem(args, params);
  detail::check_plan_matches(plan, problem, params.impl);
  const detail::PagedBackend& backend = detail::select_paged(problem.device, plan.impl, &problem);
  problem.split_tokens = plan.split_tokens;
  problem.max_splits = plan.max_splits;
  problem.split_mode = plan.split_mode;
  if (problem.rows() == 0) return;
  detail::check_workspace(problem.workspace, plan.workspace_bytes);
  detail::call_backend(backend.name, "paged forward", [&] { backend.forward(problem); });
}

void paged_kv_write(const PagedWriteArgs& args, const AttentionParams& params) {
  detail::PagedWriteProblem problem = detail::make_paged_write_problem(args);
  problem.stream = params.stream;
  const detail::PagedBackend& backend = detail::select_paged(problem.device, params.impl, nullptr);
  if (problem.tokens == 0) return;
  detail::call_backend(backend.name, "paged kv write", [&] { backend.write(problem); });
}

void paged_kv_copy_pages(const TensorView& k_cache, const TensorView& v_cache, const TensorView& copies,
                         const AttentionParams& params) {
  detail::PagedCopyProblem problem = detail::make_paged_copy_problem(k_cache, v_cache, copies);
  problem.stream = params.stream;
  const detail::PagedBackend& backend = detail::select_paged(problem.device, params.impl, nullptr);
  if (problem.num_copies == 0) return;
  detail::call_backend(backend.name, "paged page copy", [&] { backend.copy_pages(problem); });
}

}  // namespace ioattn
