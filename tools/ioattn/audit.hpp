// ioattn CLI, `ioattn check`: the numerics audit (after "Is Flash Attention Stable?", Golden et al. 2024).
//
// One audit case is one problem and one input distribution. Its inputs are drawn once; the two yardsticks are
// computed once on them (the fp64 reference, and the naive program in the inputs' dtype, src/cpu/reference.hpp);
// then every implementation (and, for the tiled CPU kernel, every tile shape asked for) runs on the same inputs
// with its outputs poisoned (NaN) beforehand. Each output tensor of each run becomes one TensorAudit.
//
// Errors, over the elements whose reference is finite:
//   max_abs  = max |x - ref|              mean_abs = mean |x - ref|
//   max_rel  = max_abs / max |ref|        mean_rel = mean_abs / mean |ref|
// (relative to the tensor's scale rather than per element: per-element ratios explode where ref crosses zero and
// say nothing about the kernel). ratio = max_abs / naive max_abs. pass is the test suite's bound, unchanged:
// src/numerics/error_bound.hpp (err <= 2 * max(naive, stored) + allowance, finite outputs, -inf lse where due).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ioattn/attention.hpp"

namespace ioattn::cli {

// The input distributions. Every one draws standard normal q, k, v, dout first (problem.hpp's fill_normal).
enum class AuditInput {
  random,         // as drawn
  large_logits,   // q and k times 5: logits with a standard deviation near 25, softmax far from uniform
  softcap_limit,  // q and k times 8 under softcap 5: nearly every logit saturates tanh at +-cap
  dominant_key,   // no mask; every query shares one direction that a single key per (batch, kv head) matches,
                  // with a logit gap near 12: rows whose softmax is almost one-hot over thousands of keys
  masked_rows,    // causal, bottom-right, seqlen_k = seqlen_q / 2: the first half of the rows see no key
};

const char* audit_input_name(AuditInput input);
AuditInput parse_audit_input(const std::string& text);  // UsageError on an unknown name

struct AuditCase {
  AuditInput input = AuditInput::random;
  DType dtype = DType::bf16;
  std::int64_t seqlen = 512;  // seqlen_q; seqlen_k follows from the input kind
  std::int64_t dim = 64;
  std::int64_t batch = 1;
  std::int64_t heads_q = 2;
  std::int64_t heads_kv = 1;
  bool causal = true;  // random and large_logits only; the others fix their mask
  bool backward = true;
  std::uint64_t seed = 0;
};

struct TensorAudit {
  std::string tensor;  // "out", "lse", "dq", "dk", "dv"
  std::int64_t count = 0;
  double max_abs = 0, mean_abs = 0, max_rel = 0, mean_rel = 0;
  double naive_max_abs = 0, naive_mean_abs = 0;
  double ratio = 0;  // max_abs / naive_max_abs (inf when the naive error is 0 and ours is not)
  double bound = 0;
  std::int64_t nonfinite = 0;  // NaN/inf where a value is due, or not -inf where the row sees nothing
  bool pass = false;
};

struct AuditRun {
  std::string impl;   // "tiled", "cuda", or "naive" (the yardstick itself, for the table and the plot)
  std::string tiles;  // "default", or "br,bc" as IOATTN_CPU_TILES took it (tiled only)
  std::vector<TensorAudit> tensors;
  std::string error;  // non-empty when the implementation refused the problem (then tensors is empty)
  bool pass() const;
};

// The problem actually run for a case: seqlen_k, mask and softcap as the input kind fixes them.
struct AuditProblem {
  std::int64_t seqlen_q = 0, seqlen_k = 0;
  Mask mask;
  float softcap = 0.0f;
};
AuditProblem audit_problem(const AuditCase& c);

struct AuditTarget {
  std::string impl;
  Device device = Device::cpu;
  std::vector<std::string> tiles;  // tiled only: tile overrides to sweep ("default" keeps the kernel's choice)
};

struct AuditOptions {
  int threads = 0;
  double inject_error = 0.0;  // > 0: add this times max|ref| to element 0 of each tested output (to prove a fail)
};

// Runs one case: the yardsticks once, then every target. The first entry is the naive program's own row.
std::vector<AuditRun> run_audit_case(const AuditCase& c, const std::vector<AuditTarget>& targets,
                                     const AuditOptions& options);

}  // namespace ioattn::cli
