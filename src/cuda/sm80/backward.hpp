// ioattn internal: the sm80-path (Ampere and later, mma.sync) attention backward.
//
// FlashAttention-2 partitioning: a pre-pass computes D_i = rowsum(dO_i * O_i) and zeroes the fp32 dQ accumulator;
// the main kernel runs one CTA per (batch, kv head, key tile), recomputes P = exp(S - lse) tile by tile for every
// query head of the kv head's GQA group, accumulates dK and dV in registers (so they need no atomics and are
// deterministic) and adds dS K into the dQ accumulator; a post-pass converts dQ to the output dtype and reduces the
// sink gradient. All work is queued on p.stream.
#pragma once

#include <cstddef>
#include <string>

#include "api/problem.hpp"

namespace ioattn::detail::sm80 {

// Runs the backward on p.stream. Uses p.workspace when it is at least backward_workspace_bytes(p), else allocates
// (stream-ordered) and frees its own. Throws ioattn::Error(unsupported) for problems backward_unsupported rejects.
void run_backward(const BackwardProblem& p);

// Scratch bytes run_backward needs: the fp32 dQ accumulator, D, and (deterministic) per-key-tile dQ ordering state.
std::size_t backward_workspace_bytes(const BackwardProblem& p);

// Empty when this build can run the backward of `p`; otherwise the reason (dtype, head dims not compiled in, ...).
std::string backward_unsupported(const Problem& p);

}  // namespace ioattn::detail::sm80
