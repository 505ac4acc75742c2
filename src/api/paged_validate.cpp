// ioattn internal: every check of the paged entry points' arguments, and the normalized problems they build.
#include "api/paged_validate.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include "api/checks.hpp"
#include "ioattn/error.hpp"

namespace ioattn::detail {
namespace {

const char* kKCacheMeaning = "[num_pages, page_size, heads_kv, head_dim_qk]";
const char* kVCacheMeaning = "[num_pages, page_size, heads_kv, head_dim_v]";

// A cache view addresses pages like a dense batch: page = batch index, token-in-page = sequence index.
Operand cache_operand(const TensorView& t) { return {t.data, t.stride[0], t.stride[1], t.stride[2]}; }

struct CacheDims {
  std::int64_t num_pages = 0, page_size = 0, heads_kv = 0, dim_qk = 0, dim_v = 0;
};

// k_cache and v_cache, checked against `like` (q in the forward, k_new in a write) for dtype and device.
CacheDims check_caches(const TensorView& k_cache, const TensorView& v_cache, const TensorView& like,
                       const std::string& k_name, const std::string& v_name, bool written) {
  check_operand(k_cache, k_name, like, written);
  if (k_cache.rank != 4) fail(k_name, std::string("rank 4 ") + kKCacheMeaning, k_cache.describe());
  CacheDims d;
  d.num_pages = extent(k_cache, 0);
  d.page_size = extent(k_cache, 1);
  d.heads_kv = extent(k_cache, 2);
  d.dim_qk = extent(k_cache, 3);
  if (d.page_size < 1) fail(k_name, "page_size (dim 1) >= 1", k_cache.describe());
  if (d.heads_kv < 1) fail(k_name, "heads_kv (dim 2) >= 1", k_cache.describe());
  if (d.dim_qk < 1) fail(k_name, "head_dim_qk (dim 3) >= 1", k_cache.describe());
  check_operand(v_cache, v_name, like, written);
  if (v_cache.rank != 4) fail(v_name, std::string("rank 4 ") + kVCacheMeaning, v_cache.describe());
  d.dim_v = extent(v_cache, 3);
  if (d.dim_v < 1) fail(v_name, "head_dim_v (dim 3) >= 1", v_cache.describe());
  check_shape(v_cache, v_name, {d.num_pages, d.page_size, d.heads_kv, d.dim_v},
              std::string(kVCacheMeaning) + " (num_pages, page_size and heads_kv as in " + k_name + ")");
  return d;
}

// An int32 index tensor of the given rank on `like`'s device.
void check_index_tensor(const TensorView& t, const std::string& name, int rank, const std::string& meaning,
                        const TensorView& like) {
  if (t.empty()) fail(name, "int32 " + meaning, "no tensor");
  check_view(t, name, false);
  check_dtype(t, name, DType::i32, " " + meaning);
  if (t.rank != rank) fail(name, "rank " + std::to_string(rank) + " int32 " + meaning, t.describe());
  check_device(t, name, like);
}

// Host-resident tables and lengths are checked entry by entry (device-resident ones are trusted: see paged.hpp).
void check_table_contents(const PagedProblem& p, const TensorView& seqlens_k) {
  if (seqlens_k.device != Device::cpu) return;
  const std::int64_t len_stride = stride_of(seqlens_k, 0);
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t len = static_cast<const std::int32_t*>(seqlens_k.data)[b * len_stride];
    const std::string at = " at index " + std::to_string(b);
    if (len < 0 || len > p.capacity()) {
      fail("kv.seqlens_k", "lengths in [0, " + std::to_string(p.capacity()) +
                               "] (max_pages_per_seq * page_size, the block table's capacity)",
           std::to_string(len) + at);
    }
    const std::int64_t q_len = p.span(b).q_len;
    if (q_len > len) {
      fail("kv.seqlens_k", "at least the sequence's " + std::to_string(q_len) +
                               " new query tokens (they must already be in the cache)",
           std::to_string(len) + at);
    }
    const std::int64_t pages = (len + p.page_size - 1) / p.page_size;
    for (std::int64_t j = 0; j < pages; ++j) {
      const std::int32_t page = p.block_table[b * p.block_table_stride + j];
      if (page < 0 || page >= p.num_pages) {
        fail("kv.block_table", "page ids in [0, " + std::to_string(p.num_pages) + ") (num_pages of kv.k_cache)",
             std::to_string(page) + " at [" + std::to_string(b) + ", " + std::to_string(j) + "]");
      }
    }
  }
}

}  // namespace

PagedProblem make_paged_problem(const PagedForwardArgs& args, const AttentionParams& params) {
  const bool packed = !args.cu_seqlens_q.empty();
  const TensorView& q = args.q;
  check_view(q, "q", false);
  check_float_dtype(q, "q");
  const int q_rank = packed ? 3 : 4;
  const char* q_meaning = packed ? "[total_q, heads_q, head_dim_qk] (packed: cu_seqlens_q is given)"
                                 : "[batch, seqlen_q, heads_q, head_dim_qk] (rank 3 with cu_seqlens_q)";
  if (q.rank != q_rank) fail("q", "rank " + std::to_string(q_rank) + " " + q_meaning, q.describe());
  const int o = packed ? 0 : 1;
  const std::int64_t rows_q = extent(q, o), heads_q = extent(q, o + 1), dim_qk = extent(q, o + 2);
  if (dim_qk < 1) fail("q", "head_dim_qk (last dim) >= 1", q.describe());

  const CacheDims cache = check_caches(args.kv.k_cache, args.kv.v_cache, q, "kv.k_cache", "kv.v_cache", false);
  if (cache.dim_qk != dim_qk) {
    fail("kv.k_cache", "head_dim_qk (dim 3) " + std::to_string(dim_qk) + " as in q", args.kv.k_cache.describe());
  }
  if (heads_q < 1 || heads_q % cache.heads_kv != 0) {
    fail("q", "heads_q (dim " + std::to_string(o + 1) + ") a positive multiple of heads_kv = " +
                  std::to_string(cache.heads_kv) + " (from kv.k_cache)",
         q.describe());
  }

  PagedProblem p;
  p.dtype = q.dtype;
  p.device = q.device;
  p.device_index = q.device == Device::cuda ? q.device_index : 0;
  p.heads_q = heads_q;
  p.heads_kv = cache.heads_kv;
  p.dim_qk = dim_qk;
  p.dim_v = cache.dim_v;
  if (packed) {
    p.seqlen_q = check_offsets(args.cu_seqlens_q, "cu_seqlens_q", q, rows_q, "q dim 0", args.max_seqlen_q,
                               "max_seqlen_q");
    p.batch = extent(args.cu_seqlens_q, 0) - 1;
    p.cu_seqlens_q = static_cast<const std::int32_t*>(args.cu_seqlens_q.data);
    p.total_q = rows_q;
  } else {
    if (args.max_seqlen_q != 0) {
      fail("max_seqlen_q", "0 without cu_seqlens_q (dense q has seqlen_q in dim 1)", std::to_string(args.max_seqlen_q));
    }
    p.batch = extent(q, 0);
    p.seqlen_q = rows_q;
    p.total_q = p.batch * rows_q;
  }

  const std::string batch_text = std::to_string(p.batch);
  check_index_tensor(args.kv.block_table, "kv.block_table", 2, "[batch, max_pages_per_seq]", q);
  if (extent(args.kv.block_table, 0) != p.batch) {
    fail("kv.block_table", "int32 [batch, max_pages_per_seq] with batch " + batch_text + " (from q)",
         args.kv.block_table.describe());
  }
  check_index_tensor(args.kv.seqlens_k, "kv.seqlens_k", 1, "[batch]", q);
  check_shape(args.kv.seqlens_k, "kv.seqlens_k", {p.batch}, "[batch], one length per sequence (batch from q)");

  p.page_size = cache.page_size;
  p.num_pages = cache.num_pages;
  p.max_pages_per_seq = extent(args.kv.block_table, 1);
  p.block_table = static_cast<const std::int32_t*>(args.kv.block_table.data);
  p.block_table_stride = stride_of(args.kv.block_table, 0);
  p.seqlens_k = static_cast<const std::int32_t*>(args.kv.seqlens_k.data);
  if (stride_of(args.kv.seqlens_k, 0) != 1 && p.batch > 1) {
    fail("kv.seqlens_k", "a contiguous int32 [batch]", args.kv.seqlens_k.describe());
  }
  p.seqlen_k = p.capacity();
  p.total_k = 0;

  using Shape = std::vector<std::int64_t>;
  const Shape out_shape = packed ? Shape{rows_q, heads_q, p.dim_v} : Shape{p.batch, rows_q, heads_q, p.dim_v};
  check_operand(args.out, "out", q, true);
  check_shape(args.out, "out", out_shape,
              packed ? "[total_q, heads_q, head_dim_v]" : "[batch, seqlen_q, heads_q, head_dim_v]");
  if (!args.lse.empty()) {
    check_view(args.lse, "lse", true);
    check_dtype(args.lse, "lse", DType::f32, " (log-sum-exp is always fp32)");
    check_device(args.lse, "lse", q);
    check_shape(args.lse, "lse",
                packed ? Shape{heads_q, rows_q} : Shape{p.batch, heads_q, rows_q},
                packed ? "[heads_q, total_q]" : "[batch, heads_q, seqlen_q]");
  }
  if (packed) {
    p.q = {q.data, 0, q.stride[0], q.stride[1]};
    p.out = {args.out.data, 0, args.out.stride[0], args.out.stride[1]};
    if (!args.lse.empty()) p.lse = {args.lse.data, 0, args.lse.stride[1], args.lse.stride[0]};
  } else {
    p.q = {q.data, q.stride[0], q.stride[1], q.stride[2]};
    p.out = {args.out.data, args.out.stride[0], args.out.stride[1], args.out.stride[2]};
    if (!args.lse.empty()) p.lse = {args.lse.data, args.lse.stride[0], args.lse.stride[2], args.lse.stride[1]};
  }
  p.k = cache_operand(args.kv.k_cache);
  p.v = cache_operand(args.kv.v_cache);
  apply_params(params, q, heads_q, dim_qk, p);
  check_table_contents(p, args.kv.seqlens_k);
  return p;
}

void check_plan_matches(const PagedPlan& plan, const PagedProblem& p, const std::string& impl) {
  auto mismatch = [](const char* what, std::int64_t planned, std::int64_t got) {
    throw Error(ErrorCode::invalid_argument,
                std::string("plan: made for ") + what + " " + std::to_string(planned) + ", got " +
                    std::to_string(got) + " (plan again with paged_attention_plan when the batch's shapes change)");
  };
  if (plan.impl.empty() || plan.split_tokens < 1 || plan.max_splits < 1) {
    fail("plan", "a plan from paged_attention_plan", "an empty or altered plan");
  }
  if (plan.impl != impl && impl != "auto") {
    fail("plan", "a plan made with params.impl '" + impl + "'", "a plan for '" + plan.impl + "'");
  }
  if (plan.dtype != p.dtype) {
    fail("plan", std::string("a plan for dtype ") + to_string(p.dtype) + " (the dtype of q)",
         std::string("a plan for ") + to_string(plan.dtype));
  }
  if (plan.device != p.device) {
    fail("plan", std::string("a plan for ") + to_string(p.device) + " (where q is)",
         std::string("a plan for ") + to_string(plan.device));
  }
  if (plan.packed_q != p.is_varlen()) mismatch("packed q (1 = cu_seqlens_q given)", plan.packed_q, p.is_varlen());
  if (plan.batch != p.batch) mismatch("batch", plan.batch, p.batch);
  const std::int64_t rows_q = p.is_varlen() ? p.total_q : p.seqlen_q;
  if (plan.rows_q != rows_q) mismatch(p.is_varlen() ? "total_q" : "seqlen_q", plan.rows_q, rows_q);
  if (plan.heads_q != p.heads_q) mismatch("heads_q", plan.heads_q, p.heads_q);
  if (plan.heads_kv != p.heads_kv) mismatch("heads_kv", plan.heads_kv, p.heads_kv);
  if (plan.dim_qk != p.dim_qk) mismatch("head_dim_qk", plan.dim_qk, p.dim_qk);
  if (plan.dim_v != p.dim_v) mismatch("head_dim_v", plan.dim_v, p.dim_v);
  if (plan.page_size != p.page_size) mismatch("page_size", plan.page_size, p.page_size);
  if (plan.max_pages_per_seq != p.max_pages_per_seq) {
    mismatch("max_pages_per_seq", plan.max_pages_per_seq, p.max_pages_per_seq);
  }
}

PagedWriteProblem make_paged_write_problem(const PagedWriteArgs& args) {
  const TensorView& k_new = args.k_new;
  check_view(k_new, "k_new", false);
  check_float_dtype(k_new, "k_new");
  if (k_new.rank != 3) fail("k_new", "rank 3 [tokens, heads_kv, head_dim_qk]", k_new.describe());
  const CacheDims cache = check_caches(args.k_cache, args.v_cache, k_new, "k_cache", "v_cache", true);
  const std::int64_t tokens = extent(k_new, 0);
  check_shape(k_new, "k_new", {tokens, cache.heads_kv, cache.dim_qk},
              "[tokens, heads_kv, head_dim_qk] (heads_kv and head_dim_qk as in k_cache)");
  check_operand(args.v_new, "v_new", k_new, false);
  check_shape(args.v_new, "v_new", {tokens, cache.heads_kv, cache.dim_v},
              "[tokens, heads_kv, head_dim_v] (tokens as in k_new, heads_kv and head_dim_v as in v_cache)");
  check_index_tensor(args.slot_mapping, "slot_mapping", 1, "[tokens]", k_new);
  check_shape(args.slot_mapping, "slot_mapping", {tokens}, "[tokens], one slot per row of k_new");

  PagedWriteProblem p;
  p.dtype = k_new.dtype;
  p.device = k_new.device;
  p.device_index = k_new.device == Device::cuda ? k_new.device_index : 0;
  p.tokens = tokens;
  p.heads_kv = cache.heads_kv;
  p.dim_qk = cache.dim_qk;
  p.dim_v = cache.dim_v;
  p.page_size = cache.page_size;
  p.num_pages = cache.num_pages;
  p.k_new = {k_new.data, 0, k_new.stride[0], k_new.stride[1]};
  p.v_new = {args.v_new.data, 0, args.v_new.stride[0], args.v_new.stride[1]};
  p.k_cache = cache_operand(args.k_cache);
  p.v_cache = cache_operand(args.v_cache);
  p.slot_mapping = static_cast<const std::int32_t*>(args.slot_mapping.data);
  if (tokens > 1 && stride_of(args.slot_mapping, 0) != 1) {
    fail("slot_mapping", "a contiguous int32 [tokens]", args.slot_mapping.describe());
  }
  if (args.slot_mapping.device == Device::cpu) {
    const std::int64_t slots = p.num_pages * p.page_size;
    for (std::int64_t t = 0; t < tokens; ++t) {
      if (p.slot_mapping[t] >= slots) {
        fail("slot_mapping", "slots below " + std::to_string(slots) + " (num_pages * page_size), or < 0 to skip",
             std::to_string(p.slot_mapping[t]) + " at index " + std::to_string(t));
      }
    }
  }
  return p;
}

PagedCopyProblem make_paged_copy_problem(const TensorView& k_cache, const TensorView& v_cache,
                                         const TensorView& copies) {
  check_view(k_cache, "k_cache", true);
  check_float_dtype(k_cache, "k_cache");
  const CacheDims cache = check_caches(k_cache, v_cache, k_cache, "k_cache", "v_cache", true);
  check_index_tensor(copies, "copies", 2, "[num_copies, 2] (source page, destination page)", k_cache);
  if (extent(copies, 1) != 2) {
    fail("copies", "int32 [num_copies, 2] (source page, destination page)", copies.describe());
  }

  PagedCopyProblem p;
  p.dtype = k_cache.dtype;
  p.device = k_cache.device;
  p.device_index = k_cache.device == Device::cuda ? k_cache.device_index : 0;
  p.num_pages = cache.num_pages;
  p.page_size = cache.page_size;
  p.heads_kv = cache.heads_kv;
  p.dim_qk = cache.dim_qk;
  p.dim_v = cache.dim_v;
  p.k_cache = cache_operand(k_cache);
  p.v_cache = cache_operand(v_cache);
  p.copies = static_cast<const std::int32_t*>(copies.data);
  p.copies_stride = stride_of(copies, 0);
  p.num_copies = extent(copies, 0);
  if (copies.device == Device::cpu) {
    // role[page]: 0 unused, 1 a source, 2 a destination. Copies run in parallel, so a destination must be unique
    // and never a source.
    std::vector<std::uint8_t> role(static_cast<std::size_t>(p.num_pages), 0);
    for (std::int64_t i = 0; i < p.num_copies; ++i) {
      for (int c = 0; c < 2; ++c) {
        const std::int32_t page = p.copies[i * p.copies_stride + c];
        const std::string at = " at [" + std::to_string(i) + ", " + std::to_string(c) + "]";
        if (page < 0 || page >= p.num_pages) {
          fail("copies", "page ids in [0, " + std::to_string(p.num_pages) + ") (num_pages of k_cache)",
               std::to_string(page) + at);
        }
        std::uint8_t& r = role[static_cast<std::size_t>(page)];
        if (r == 2 || (c == 1 && r == 1)) {
          fail("copies", "a destination page that no other row reads or writes (copies run in parallel)",
               "page " + std::to_string(page) + " again" + at);
        }
        r = static_cast<std::uint8_t>(c == 0 ? 1 : 2);
      }
    }
  }
  return p;
}

}  // namespace ioattn::detail
