// ioattn internal: argument checking, and the normalized Problem built from arguments that passed it.
//
// Every check of a public argument lives here, so that every backend receives a problem it can trust and every
// error message has the same form:  "<argument>: expected <what>, got <what came>"  (ErrorCode::invalid_argument).
// Nothing here writes to any tensor, so a rejected call leaves the outputs untouched.
//
// Varlen offsets: cu_seqlens live on the tensors' device. On the CPU their contents are checked here (start at 0,
// non-decreasing, last offset within the packed rows, max_seqlen_* at least every actual length). For CUDA tensors
// the API layer cannot read device memory (it does not link the CUDA runtime), so only their dtype, shape and device
// are checked here; content checks of device-resident offsets are the CUDA backend's job. In that case, when
// max_seqlen_* is 0, Problem::seqlen_q/k hold total_q/total_k, an upper bound of every sequence's length.
//
// Limits that depend on the backend (largest head dim, 32-bit indexing) are not checked here: a backend states them
// through Backend::unsupported(), with the helpers below.
#pragma once

#include <cstdint>

#include "api/problem.hpp"
#include "ioattn/attention.hpp"

namespace ioattn::detail {

// Checks everything and builds the problem; throws ioattn::Error(ErrorCode::invalid_argument) naming the argument.
Problem make_forward_problem(const ForwardArgs& args, const AttentionParams& params);
BackwardProblem make_backward_problem(const BackwardArgs& args, const AttentionParams& params);

// The largest element offset (from its ptr) any operand of the problem reaches, dq/dk/dv/dout included for a
// backward problem. A backend that indexes with 32-bit integers refuses problems where this exceeds INT32_MAX.
std::int64_t max_element_offset(const Problem& problem);
std::int64_t max_element_offset(const BackwardProblem& problem);

// True when every element offset of every operand fits in int32 (what a 32-bit-indexing backend needs).
inline bool fits_int32_indexing(const Problem& problem) { return max_element_offset(problem) <= INT32_MAX; }
inline bool fits_int32_indexing(const BackwardProblem& problem) { return max_element_offset(problem) <= INT32_MAX; }

// True when the call has nothing to write: every output has zero elements.
bool nothing_to_do(const Problem& problem);
bool nothing_to_do(const BackwardProblem& problem);

}  // namespace ioattn::detail
