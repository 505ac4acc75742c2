// ioattn: the "tiled" CPU backend (record and forward). The IO-aware algorithm of FlashAttention (Rabe & Staats):
// a query tile stays in cache while key/value tiles stream past it; the online softmax (core::SoftmaxState) folds
// each tile in, so only the output and the log-sum-exp are ever written.
//
// Parallel over (kv head, query tile, query head of the group) with OpenMP (tiled_common.hpp, query_item). Each output
// row is produced by exactly one work item in a fixed order of key tiles, so results are bitwise identical for any
// thread count (on one CPU type and build).
#include <omp.h>

#include <cstdlib>
#include <string>

#include "cpu/tiled_common.hpp"

namespace ioattn::cpu::tiled {

int thread_count(const detail::Problem& p) { return p.num_threads > 0 ? p.num_threads : omp_get_max_threads(); }

bool cpu_has_avx2_fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  // IOATTN_TILED_ISA=baseline forces the 4-lane variant, so that the tests check it on AVX2 machines too.
  const char* forced = std::getenv("IOATTN_TILED_ISA");
  if (forced != nullptr && std::string(forced) == "baseline") return false;
  return has;
}

Scratch::Scratch(const ioattn::Workspace& given, std::size_t bytes) {
  char* base = static_cast<char*>(given.data);
  if (base == nullptr) {
    owned_ = static_cast<char*>(std::malloc(bytes));
    if (owned_ == nullptr) {
      throw Error(ErrorCode::out_of_memory,
                  "tiled: could not allocate " + std::to_string(bytes) + " bytes of workspace");
    }
    base = owned_;
  }
  const auto addr = reinterpret_cast<std::uintptr_t>(base);
  aligned_ = base + ((64 - addr % 64) % 64);
}

Scratch::~Scratch() { std::free(owned_); }

namespace {

// The per-thread tiles of the forward. Carved from an arena, which with a null base just measures them.
struct ForwardTiles {
  float* q;        // [br][dq_pad]
  float* kt;       // [dim_qk][bc]   K tile, transposed
  float* v;        // [bc][dv_pad]
  float* s;        // [br][bc]       logits, then P
  float* o;        // [br][dv_pad]   unnormalized output
  float* row;      // [max(dq_pad, dv_pad)]  one widened input row
  // [br] Row statistics in fp64: m is an fp32 score either way, but l sums a row's exp() over every key tile and
  // feeds lse = m + log(l), which the backward (and dsinks above all) takes as exact.
  core::SoftmaxState<double>* state;

  ForwardTiles(Arena& a, const detail::Problem& p, const TileShape& t)
      : q(a.floats(t.br * t.dq_pad)),
        kt(a.floats(p.dim_qk * t.bc)),
        v(a.floats(t.bc * t.dv_pad)),
        s(a.floats(t.br * t.bc)),
        o(a.floats(t.br * t.dv_pad)),
        row(a.floats(std::max(t.dq_pad, t.dv_pad))),
        state(static_cast<core::SoftmaxState<double>*>(a.take(t.br * sizeof(core::SoftmaxState<double>)))) {}
};

std::size_t forward_thread_bytes(const detail::Problem& p, const TileShape& t) {
  Arena measure(nullptr);
  ForwardTiles tiles(measure, p, t);
  return measure.used();
}

std::size_t forward_bytes(const detail::Problem& p) {
  const TileShape t = TileShape::for_problem(p, /*backward=*/false);
  return 64 + TileGrid::prefix_bytes(p) + static_cast<std::size_t>(thread_count(p)) * forward_thread_bytes(p, t);
}

struct ForwardContext {
  const detail::Problem* p;
  TileShape t;
  TileGrid grid;
  std::size_t thread_bytes;
};

// One query tile of one head against every key tile it can see.
template <int VW, DType D>
IOATTN_TILED_INLINE void forward_item(const ForwardContext& ctx, std::int64_t item, char* thread_ws) {
  using V = Simd<VW>;
  const detail::Problem& p = *ctx.p;
  const TileShape& t = ctx.t;
  const auto [b, h, h_kv, span, q0, rows] = query_tile(ctx.grid, p, item, t.br);
  const ScoreMods mods = score_mods(p, b, h, span);

  Arena arena(thread_ws);
  const ForwardTiles tiles(arena, p, t);
  float* q_tile = tiles.q;
  float* kt_tile = tiles.kt;
  float* v_tile = tiles.v;
  float* s_tile = tiles.s;
  float* o_tile = tiles.o;
  float* row_scratch = tiles.row;
  core::SoftmaxState<double>* state = tiles.state;

  for (std::int64_t r = 0; r < rows; ++r) state[r] = core::SoftmaxState<double>{};
  for (std::int64_t e = 0; e < rows * t.dv_pad; ++e) o_tile[e] = 0.0f;
  load_rows<D>(p.q, b, span.q_offset + q0, h, rows, p.dim_qk, q_tile, t.dq_pad);
  scale_rows<VW>(q_tile, rows, t.dq_pad, p.scale);

  const std::int64_t k_begin = mods.rule.tile_key_begin(q0);
  const std::int64_t k_end = mods.rule.tile_key_end(q0 + rows);
  for (std::int64_t k0 = k_begin; k0 < k_end; k0 += t.bc) {
    const std::int64_t kn = std::min(t.bc, k_end - k0);
    const core::TileKind kind = mods.rule.classify(q0, q0 + rows, k0, k0 + kn);
    if (kind == core::TileKind::skip) continue;
    const std::int64_t n_pad = pad_columns(kn);
    load_rows_transposed<D>(p.k, b, span.k_offset + k0, h_kv, kn, p.dim_qk, kt_tile, t.bc, row_scratch);
    load_rows<D>(p.v, b, span.k_offset + k0, h_kv, kn, p.dim_v, v_tile, t.dv_pad);

    // s_tile[rows][n_pad] = q_tile . kt_tile, then logits.
    gemm_nn<VW>(rows, n_pad, p.dim_qk, q_tile, t.dq_pad, kt_tile, t.bc, s_tile, t.bc, false);
    scores_to_logits<VW>(s_tile, t.bc, rows, q0, k0, kn, n_pad, kind, mods, nullptr);

    // Online softmax: P = exp(s - m) in place; o and l rescaled when the running max moves.
    const NextRows next{&p.k, &p.v, p.dim_qk, p.dim_v, b, span.k_offset + k0 + t.bc,
                        std::min(t.bc, k_end - k0 - t.bc), h_kv, sizeof(typename Elem<D>::storage)};
    for (std::int64_t r = 0; r < rows; ++r) {
      next.fetch(r);
      float* s = s_tile + r * t.bc;
      typename V::vf vmax = V::splat(core::neg_inf<float>());
      for (std::int64_t c = 0; c < n_pad; c += VW) vmax = V::vmax(vmax, V::load(s + c));
      const float alpha = static_cast<float>(state[r].begin_tile(V::hmax(vmax)));
      const typename V::vf offset = V::splat(static_cast<float>(state[r].offset()));  // an fp32 score: exact
      typename V::vf vsum{};
      for (std::int64_t c = 0; c < n_pad; c += VW) {
        const typename V::vf e = V::exp(V::load(s + c) - offset);
        V::store(s + c, e);
        vsum += e;
      }
      state[r].l += V::hsum(vsum);
      if (alpha != 1.0f) {
        float* o = o_tile + r * t.dv_pad;
        const typename V::vf a = V::splat(alpha);
        for (std::int64_t c = 0; c < t.dv_pad; c += VW) V::store(o + c, V::load(o + c) * a);
      }
    }
    // o_tile[rows][dv_pad] += P . v_tile
    gemm_nn<VW>(rows, t.dv_pad, kn, s_tile, t.bc, v_tile, t.dv_pad, o_tile, t.dv_pad, true);
  }

  float* lse = static_cast<float*>(p.lse.ptr);
  for (std::int64_t r = 0; r < rows; ++r) {
    double factor = 1.0;
    if (p.sinks != nullptr) factor = state[r].add_sink(p.sinks[h]);
    factor *= state[r].inv_sum();
    float* o = o_tile + r * t.dv_pad;
    const typename V::vf f = V::splat(static_cast<float>(factor));
    for (std::int64_t c = 0; c < t.dv_pad; c += VW) V::store(o + c, V::load(o + c) * f);
    const std::int64_t row = span.q_offset + q0 + r;
    store_row<D>(p.out.ptr, p.out.offset(b, row, h), p.dim_v, o);
    if (lse != nullptr) lse[p.lse.offset(b, row, h)] = static_cast<float>(state[r].lse());
  }
}

// The two compilations of the kernel; flatten pulls every helper into the function and so into its ISA.
template <DType D>
__attribute__((target("avx2,fma"), flatten)) void forward_item_avx2(const ForwardContext& ctx, std::int64_t item,
                                                                     char* ws) {
  forward_item<8, D>(ctx, item, ws);
}
template <DType D>
__attribute__((flatten)) void forward_item_baseline(const ForwardContext& ctx, std::int64_t item, char* ws) {
  forward_item<4, D>(ctx, item, ws);
}

using ForwardItemFn = void (*)(const ForwardContext&, std::int64_t, char*);

void forward(const detail::Problem& p) {
  const TileShape t = TileShape::for_problem(p, /*backward=*/false);
  const int threads = thread_count(p);
  Scratch scratch(p.workspace, forward_bytes(p));
  char* base = scratch.data();
  const std::size_t prefix_bytes = TileGrid::prefix_bytes(p);

  ForwardContext ctx{&p, t, TileGrid::make(p, t.br, true, reinterpret_cast<std::int64_t*>(base)),
                     forward_thread_bytes(p, t)};
  char* thread_base = base + prefix_bytes;
  const bool avx2 = cpu_has_avx2_fma();
  const ForwardItemFn fn = visit_dtype(p.dtype, [&](auto d) -> ForwardItemFn {
    return avx2 ? &forward_item_avx2<decltype(d)::value> : &forward_item_baseline<decltype(d)::value>;
  });

  // Items in reverse: under a causal mask the last query tiles are the longest, and starting them first balances
  // the dynamic schedule. The order does not change any result.
  const std::int64_t items = ctx.grid.count * p.heads_q;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (std::int64_t n = 0; n < items; ++n) {
    fn(ctx, items - 1 - n, thread_base + static_cast<std::size_t>(omp_get_thread_num()) * ctx.thread_bytes);
  }
}

std::string unsupported(const detail::Problem& p, bool /*backward*/) {
  if (p.device != Device::cpu) return std::string("tiled runs on the CPU; the tensors are on ") + to_string(p.device);
  if (p.dim_qk > kMaxHeadDim || p.dim_v > kMaxHeadDim) {
    return "head dims up to " + std::to_string(kMaxHeadDim) + " (got head_dim_qk " + std::to_string(p.dim_qk) +
           ", head_dim_v " + std::to_string(p.dim_v) + ")";
  }
  return {};
}

}  // namespace
}  // namespace ioattn::cpu::tiled

namespace ioattn::detail {

// Above "reference" (priority 0): "auto" picks the tiled kernels on the CPU.
const Backend kTiledBackend{"tiled",
                            Device::cpu,
                            10,
                            cpu::tiled::unsupported,
                            cpu::tiled::forward_bytes,
                            cpu::tiled::backward_workspace_bytes,
                            cpu::tiled::forward,
                            cpu::tiled::backward};

}  // namespace ioattn::detail
