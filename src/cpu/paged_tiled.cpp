// ioattn: paged attention in the tiled CPU backend (placeholder until the split-KV kernel lands).
#include <string>

#include "api/paged_problem.hpp"
#include "cpu/paged_cache.hpp"

namespace ioattn::detail {
namespace {

std::string paged_tiled_unsupported(const PagedProblem&) { return "not implemented yet"; }
PagedSplit paged_tiled_plan(const PagedProblem&, SplitKV, std::int64_t) { return {1, 1, 0}; }
void paged_tiled_forward(const PagedProblem&) {}

}  // namespace

const PagedBackend kTiledPagedBackend{"tiled", Device::cpu, 10, paged_tiled_unsupported, paged_tiled_plan,
                                      paged_tiled_forward, cpu::paged_write, cpu::paged_copy_pages};

}  // namespace ioattn::detail
