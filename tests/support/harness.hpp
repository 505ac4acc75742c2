// Test support: one case of the table made concrete, and a backend run on it.
//
// CaseData allocates the operands in the case's layout, draws fresh random inputs (seeded per case name, see
// support/random.hpp), and computes the two yardsticks on those inputs once: the fp64 reference (forward, then the
// exact gradient from the fp64 out and lse) and the same-precision naive program. run_backend() then runs any
// backend on the same inputs, on the CPU or on a GPU, with every output poisoned (NaN) beforehand, and returns its
// outputs in the canonical layout of src/cpu/reference.hpp for numerics/error_bound.hpp.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "api/problem.hpp"
#include "support/buffers.hpp"
#include "support/cases.hpp"
#include "numerics/error_bound.hpp"

namespace ioattn::test {

using numerics::compare;
using numerics::Comparison;
using numerics::dtype_eps;

struct Results {
  std::vector<double> out, lse, dq, dk, dv, dsinks;
  // Memory a backend must not touch: buffer elements outside every output view that no longer hold the poison
  // (e.g. a kernel writing a padded head dim into the gap after each head), and input buffers that changed.
  std::int64_t stray_writes = 0;
  std::string stray_where;  // the first buffer and element offset, when stray_writes > 0
};

class CaseData {
 public:
  explicit CaseData(const Case& c);
  CaseData(const CaseData&) = delete;  // the views point into this object's buffers
  CaseData& operator=(const CaseData&) = delete;

  const Case& kase() const { return case_; }
  // The yardsticks: forward parts always, gradients once a backward run has asked for them.
  const Results& ref() const { return ref_; }
  const Results& naive() const { return naive_; }
  // The validated problem over the host buffers (every pointer is host memory).
  const detail::BackwardProblem& problem() const { return problem_; }

  // Forward (and, when `backward`, the backward from the backend's own out and lse) with AttentionParams::impl =
  // `impl` on tensors on `device`. Throws what the library throws (ioattn::Error), e.g. unsupported.
  // `with_lse` false (forward only): the forward is called with an empty lse view, which the API allows; the lse
  // buffer must then come back untouched (all NaN).
  Results run(const std::string& impl, Device device, bool backward, bool with_lse = true);

  // Every comparison for results of run(): out and lse, and dq, dk, dv (and dsinks) when `backward`.
  std::vector<Comparison> compare_all(const Results& got, bool backward) const;

  ForwardArgs forward_args() const;
  BackwardArgs backward_args() const;
  AttentionParams params(const std::string& impl) const;
  // The outputs as they are now in the host buffers (after run(), or after a test tampered with them), with the
  // check that nothing outside the outputs' views and nothing in the inputs changed since the inputs were drawn.
  Results collect(bool backward) const;
  // Host buffers, for tests that tamper with them (to show that the checks catch it).
  HostBuffer& out_buffer() { return out_; }
  HostBuffer& q_buffer() { return case_.layout == Layout::packed_qkv ? qkv_ : q_; }

 private:
  void allocate();
  void draw_inputs();
  void ensure_backward_yardsticks();
  Results gather_outputs(bool backward) const;
  void check_untouched(Results& r) const;
  std::vector<HostBuffer> snapshot_inputs() const;

  Case case_;
  std::int64_t batch_ = 0, total_q_ = 0, total_k_ = 0;
  HostBuffer qkv_, q_, k_, v_, out_, lse_, dout_, dq_, dk_, dv_, alibi_, sinks_, dsinks_, cu_q_, cu_k_;
  TensorView vq_, vk_, vv_, vout_, vlse_, vdout_, vdq_, vdk_, vdv_, valibi_, vsinks_, vdsinks_, vcu_q_, vcu_k_;
  detail::BackwardProblem problem_;
  std::vector<double> q64_, k64_, v64_;  // the inputs, canonical
  std::vector<HostBuffer> inputs_drawn_;  // the input buffers as drawn, to show no backend wrote to them
  Results ref_, naive_, stored_;  // stored_: gradients only, see numerics/error_bound.hpp
  bool have_backward_ = false;
};

// Overwrites rows [row_begin, row_end) of a 16-bit (fp16 / bf16) operand, every head, with +Inf, -Inf and NaN in
// turn (keys: all three; otherwise +Inf and NaN), as raw bit patterns: a varlen neighbour whose non-finite values
// must not reach another sequence's results. `x` addresses host memory (CaseData::problem()).
void poison_rows_nonfinite(const detail::Operand& x, DType dtype, std::int64_t row_begin, std::int64_t row_end,
                           std::int64_t heads, std::int64_t dim, bool keys);

}  // namespace ioattn::test
