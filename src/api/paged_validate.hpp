// ioattn internal: argument checks of the paged entry points (messages as in validate.hpp), and the problems built
// from arguments that passed them.
#pragma once

#include <string>

#include "api/paged_problem.hpp"
#include "ioattn/paged.hpp"

namespace ioattn::detail {

// Everything but the split (split_tokens = 0, max_splits = 1): the plan fills those.
PagedProblem make_paged_problem(const PagedForwardArgs& args, const AttentionParams& params);
// The plan was made for these shapes (and for `impl`, unless it is "auto").
void check_plan_matches(const PagedPlan& plan, const PagedProblem& problem, const std::string& impl);
PagedWriteProblem make_paged_write_problem(const PagedWriteArgs& args);
PagedCopyProblem make_paged_copy_problem(const TensorView& k_cache, const TensorView& v_cache,
                                         const TensorView& copies);

}  // namespace ioattn::detail
