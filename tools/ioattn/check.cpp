#include "check.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "ioattn/core/mask.hpp"

namespace ioattn::cli {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Below this many score elements times head dims the whole problem is checked; the fp64 reference does about
// 1 GFLOP/s per core, so this keeps a full check under a second.
constexpr double kFullCheckCost = 5e7;
constexpr std::int64_t kRowsPerBlock = 64;

struct Block {
  std::int64_t b, g;      // batch entry and kv head (its group of query heads)
  std::int64_t r0, r1;    // query rows [r0, r1)
  Alignment alignment;    // of the sub-problem's mask, chosen so each row keeps its own diagonal
};

core::MaskRule rule_of(const ProblemSpec& s) {
  return core::MaskRule::make(s.mask.window_left, s.mask.window_right, s.mask.alignment == Alignment::top_left,
                              s.seqlen_q, s.seqlen_k);
}

// Row-block starts whose sub-problem (m rows, all keys) has the same diagonal as the full one. The sub-problem's
// diag offset is 0 (top-left) or seqlen_k - m (bottom-right); the rows need r0 (top-left) or r0 + Sk - Sq.
std::vector<std::pair<std::int64_t, Alignment>> block_starts(const ProblemSpec& s, std::int64_t m) {
  const std::int64_t sq = s.seqlen_q, sk = s.seqlen_k;
  std::vector<std::pair<std::int64_t, Alignment>> starts;
  const auto add = [&](std::int64_t r0, Alignment a) {
    if (r0 < 0 || r0 + m > sq) return;
    for (const auto& [seen, unused] : starts) {
      if (seen == r0) return;
    }
    starts.emplace_back(r0, a);
  };
  if (s.mask.is_none()) {
    add(sq - m, s.mask.alignment);
    add(0, s.mask.alignment);
  } else if (s.mask.alignment == Alignment::top_left) {
    add(0, Alignment::top_left);
    add(sk - m, Alignment::bottom_right);
  } else {
    add(sq - m, Alignment::bottom_right);
    add(sq - sk, Alignment::top_left);
  }
  return starts;
}

std::vector<Block> plan_blocks(const ProblemSpec& s, std::string& sample) {
  std::vector<Block> blocks;
  if (s.seqlen_q == 0 || s.batch == 0 || s.heads_kv == 0) {
    sample = "nothing (empty problem)";
    return blocks;
  }
  const double cost = static_cast<double>(s.batch) * static_cast<double>(s.heads_q) *
                      static_cast<double>(s.seqlen_q) * static_cast<double>(s.seqlen_k) *
                      static_cast<double>(s.dim_qk + s.dim_v);
  if (cost <= kFullCheckCost) {
    for (std::int64_t b = 0; b < s.batch; ++b) {
      for (std::int64_t g = 0; g < s.heads_kv; ++g) blocks.push_back({b, g, 0, s.seqlen_q, s.mask.alignment});
    }
    sample = "all rows";
    return blocks;
  }
  const std::int64_t m = std::min(s.seqlen_q, kRowsPerBlock);
  const auto starts = block_starts(s, m);
  std::vector<std::pair<std::int64_t, std::int64_t>> pairs = {{0, 0}};
  if (s.batch > 1 || s.heads_kv > 1) pairs.emplace_back(s.batch - 1, s.heads_kv - 1);
  // One whole (batch, kv head) slice, when affordable, checks dK and dV on every key: row blocks leave none
  // complete without a mask, and few under most masks.
  const bool first_slice_whole = cost / static_cast<double>(s.batch * s.heads_kv) <= kFullCheckCost;
  sample.clear();
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    const auto [b, g] = pairs[i];
    const std::string of = " of (batch " + std::to_string(b) + ", kv head " + std::to_string(g) + ")";
    if (i == 0 && first_slice_whole) {
      sample += "all rows" + of;
      blocks.push_back({b, g, 0, s.seqlen_q, s.mask.alignment});
      continue;
    }
    sample += sample.empty() ? "rows" : "; rows";
    for (std::size_t j = 0; j < starts.size(); ++j) {
      sample += (j == 0 ? " " : ", ") + std::to_string(starts[j].first) + "-" + std::to_string(starts[j].first + m - 1);
      blocks.push_back({b, g, starts[j].first, starts[j].first + m, starts[j].second});
    }
    sample += of;
  }
  return blocks;
}

void accumulate(TensorError& e, double tested, double reference) {
  e.checked = true;
  if (std::isinf(reference) && tested == reference) return;  // lse of a row that sees no key: -inf on both sides
  const double diff = std::abs(tested - reference);
  e.max_abs = std::isfinite(diff) ? std::max(e.max_abs, diff) : kInf;  // NaN must not vanish in a max
  if (std::isfinite(reference)) e.max_ref = std::max(e.max_ref, std::abs(reference));
}

std::int64_t count_nonfinite(const HostTensor& t) {
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) bad += std::isfinite(t.at(i)) ? 0 : 1;
  return bad;
}

// lse may be -inf only where the row sees no key; NaN or +inf never.
std::int64_t count_bad_lse(const ProblemSpec& s, const HostTensor& lse) {
  const core::MaskRule rule = rule_of(s);
  std::int64_t bad = 0;
  for (std::int64_t bh = 0; bh < s.batch * s.heads_q; ++bh) {
    for (std::int64_t i = 0; i < s.seqlen_q; ++i) {
      const float x = lse.at(bh * s.seqlen_q + i);
      const bool ok = std::isfinite(x) || (x == -std::numeric_limits<float>::infinity() && rule.row_empty(i));
      bad += ok ? 0 : 1;
    }
  }
  return bad;
}

// Row-major index of element (b, row, head, d) of a [batch, seqlen, heads, dim] tensor.
std::int64_t index4(std::int64_t b, std::int64_t row, std::int64_t h, std::int64_t d, std::int64_t seqlen,
                    std::int64_t heads, std::int64_t dim) {
  return ((b * seqlen + row) * heads + h) * dim + d;
}

// Rows [r0, r1) of query heads g*G .. g*G+G-1 (or all keys of kv head g) copied into an fp32 [1, rows, heads, dim].
HostTensor gather(const HostTensor& src, std::int64_t b, std::int64_t row0, std::int64_t rows, std::int64_t head0,
                  std::int64_t heads) {
  const std::int64_t seqlen = src.shape[1], all_heads = src.shape[2], dim = src.shape[3];
  HostTensor dst(DType::f32, {1, rows, heads, dim});
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t h = 0; h < heads; ++h) {
      for (std::int64_t d = 0; d < dim; ++d) {
        dst.set(index4(0, i, h, d, rows, heads, dim), src.at(index4(b, row0 + i, head0 + h, d, seqlen, all_heads, dim)));
      }
    }
  }
  return dst;
}

TensorView view(HostTensor& t) {
  if (t.shape.size() == 4) {
    return TensorView::contiguous(t.data(), t.dtype, {t.shape[0], t.shape[1], t.shape[2], t.shape[3]});
  }
  return TensorView::contiguous(t.data(), t.dtype, {t.shape[0], t.shape[1], t.shape[2]});
}

// Compares rows [row0, row0 + rows) of heads head0.. of `tested` with the sub-problem result `ref` ([1, rows,
// heads, dim]).
void compare_rows(TensorError& e, const HostTensor& tested, const HostTensor& ref, std::int64_t b, std::int64_t row0,
                  std::int64_t rows, std::int64_t head0) {
  const std::int64_t seqlen = tested.shape[1], all_heads = tested.shape[2], dim = tested.shape[3];
  const std::int64_t heads = ref.shape[2];
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t h = 0; h < heads; ++h) {
      for (std::int64_t d = 0; d < dim; ++d) {
        accumulate(e, tested.at(index4(b, row0 + i, head0 + h, d, seqlen, all_heads, dim)),
                   ref.at(index4(0, i, h, d, rows, heads, dim)));
      }
    }
  }
}

}  // namespace

double check_tolerance(DType dtype) {
  const double unit_roundoff = dtype == DType::f32 ? 0x1p-24 : dtype == DType::f16 ? 0x1p-11 : 0x1p-8;
  return std::max(16.0 * unit_roundoff, 1e-4);
}

double CheckReport::max_err_forward() const { return std::max(out.max_abs, lse.max_abs); }
double CheckReport::max_err_backward() const { return std::max({dq.max_abs, dk.max_abs, dv.max_abs}); }

CheckReport check_against_reference(const ProblemSpec& s, const HostInputs& in, const HostOutputs& tested,
                                    bool backward, int threads) {
  CheckReport report;
  report.tolerance = check_tolerance(s.dtype);
  report.nonfinite = count_nonfinite(tested.out) + count_bad_lse(s, tested.lse);
  if (backward) {
    report.nonfinite += count_nonfinite(tested.dq) + count_nonfinite(tested.dk) + count_nonfinite(tested.dv);
  }
  const std::vector<Block> blocks = plan_blocks(s, report.sample);
  const std::int64_t group = s.heads_kv > 0 ? s.heads_q / s.heads_kv : 0;
  const core::MaskRule full_rule = rule_of(s);

  for (const Block& blk : blocks) {
    const std::int64_t rows = blk.r1 - blk.r0;
    const std::int64_t head0 = blk.g * group;
    HostTensor q = gather(in.q, blk.b, blk.r0, rows, head0, group);
    HostTensor k = gather(in.k, blk.b, 0, s.seqlen_k, blk.g, 1);
    HostTensor v = gather(in.v, blk.b, 0, s.seqlen_k, blk.g, 1);
    HostTensor out(DType::f32, {1, rows, group, s.dim_v});
    HostTensor lse(DType::f32, {1, group, rows});

    AttentionParams params;
    params.impl = "reference";
    params.mask = Mask{s.mask.window_left, s.mask.window_right, blk.alignment};
    params.softcap = s.softcap;
    params.num_threads = threads;
    ForwardArgs fwd{view(q), view(k), view(v), view(out), view(lse), std::nullopt};
    attention_forward(fwd, params);

    compare_rows(report.out, tested.out, out, blk.b, blk.r0, rows, head0);
    for (std::int64_t h = 0; h < group; ++h) {
      for (std::int64_t i = 0; i < rows; ++i) {
        accumulate(report.lse, tested.lse.at((blk.b * s.heads_q + head0 + h) * s.seqlen_q + blk.r0 + i),
                   lse.at(h * rows + i));
      }
    }
    report.rows_checked += rows * group;
    if (!backward) continue;

    HostTensor dout = gather(in.dout, blk.b, blk.r0, rows, head0, group);
    HostTensor dq(DType::f32, q.shape), dk(DType::f32, k.shape), dv(DType::f32, v.shape);
    BackwardArgs bwd;
    bwd.q = view(q), bwd.k = view(k), bwd.v = view(v), bwd.out = view(out), bwd.lse = view(lse);
    bwd.dout = view(dout), bwd.dq = view(dq), bwd.dk = view(dk), bwd.dv = view(dv);
    attention_backward(bwd, params);
    compare_rows(report.dq, tested.dq, dq, blk.b, blk.r0, rows, head0);

    // Keys no row outside [r0, r1) sees: rows before r0 end their keys by key_end(r0 - 1), rows from r1 on start
    // theirs at key_begin(r1) or later (both bounds grow with the row).
    const std::int64_t key_begin = blk.r0 > 0 ? std::max<std::int64_t>(0, full_rule.key_end(blk.r0 - 1)) : 0;
    const std::int64_t key_end =
        blk.r1 < s.seqlen_q ? std::min(s.seqlen_k, full_rule.key_begin(blk.r1)) : s.seqlen_k;
    if (key_begin < key_end) {
      const std::int64_t keys = key_end - key_begin;
      compare_rows(report.dk, tested.dk, gather(dk, 0, key_begin, keys, 0, 1), blk.b, key_begin, keys, blk.g);
      compare_rows(report.dv, tested.dv, gather(dv, 0, key_begin, keys, 0, 1), blk.b, key_begin, keys, blk.g);
      report.keys_checked += keys;
    }
  }

  report.pass = report.nonfinite == 0;
  for (const TensorError* e : {&report.out, &report.lse, &report.dq, &report.dk, &report.dv}) {
    if (e->checked && !(e->normalized() <= report.tolerance)) report.pass = false;
  }
  return report;
}

}  // namespace ioattn::cli
