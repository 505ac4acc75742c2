// ioattn CLI: the error of a run against the fp64 reference backend, on a sample of rows.
//
// Small problems are checked whole. Larger ones are checked on the first and last (batch, kv head) pairs: the
// first whole when that slice is small, otherwise on blocks of query rows, each run through impl = "reference" as
// a sub-problem: the rows' queries, all keys, and the mask re-aligned so that every row keeps exactly the keys it
// saw (a block of the last rows under bottom-right alignment, or of the first rows under top-left). dK and dV are
// compared only for keys that no row outside the block can see, since only those gradients are complete within
// the sub-problem. Every output element is still scanned for NaN (the poison) and inf.
#pragma once

#include <cstdint>
#include <string>

#include "problem.hpp"
#include "run.hpp"

namespace ioattn::cli {

struct TensorError {
  bool checked = false;
  double max_abs = 0.0;      // max |tested - reference|
  double max_ref = 0.0;      // max |reference|, the scale the error is judged against
  double normalized() const { return max_abs / (max_ref > 0.0 ? max_ref : 1.0); }
};

struct CheckReport {
  TensorError out, lse, dq, dk, dv;
  std::int64_t nonfinite = 0;   // NaN or inf anywhere in the outputs (lse = -inf allowed for rows that see no key)
  std::int64_t rows_checked = 0;
  std::int64_t keys_checked = 0;  // keys whose dK, dV were compared (per checked (batch, kv head) block)
  std::string sample;            // which rows, in words
  double tolerance = 0.0;        // on normalized errors
  bool pass = false;

  double max_err_forward() const;   // max |err| over out and lse
  double max_err_backward() const;  // max |err| over dq, dk, dv
};

// Compares `outputs` against the reference. `threads` is passed to the reference backend.
CheckReport check_against_reference(const ProblemSpec& spec, const HostInputs& inputs, const HostOutputs& outputs,
                                    bool backward, int threads);

// The loose bound `--check` applies: 16 units of roundoff of the dtype (at least 1e-4), relative to the largest
// reference value of each tensor. It catches wrong masks, rows or layouts; the careful numerics audit (error
// against twice that of a naive implementation) is `ioattn check`'s job.
double check_tolerance(DType dtype);

}  // namespace ioattn::cli
