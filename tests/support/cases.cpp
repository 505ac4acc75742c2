#include "support/cases.hpp"

#include <sstream>
#include <string>

namespace ioattn::test {
namespace {

constexpr DType f32 = DType::f32, f16 = DType::f16, bf16 = DType::bf16;

const Mask none = Mask::none();
const Mask causal_br = Mask::causal(Alignment::bottom_right);
const Mask causal_tl = Mask::causal(Alignment::top_left);
Mask win_br(std::int64_t left, std::int64_t right) { return Mask::window(left, right, Alignment::bottom_right); }
Mask win_tl(std::int64_t left, std::int64_t right) { return Mask::window(left, right, Alignment::top_left); }

std::vector<Case> build_table() {
  using L = Layout;
  std::vector<Case> t;
  // Single row, single key: the smallest tile, every dtype.
  t.push_back({.dtype = f32, .seqlen_q = 1, .seqlen_k = 1, .dim_qk = 32, .dim_v = 32, .mask = none});
  t.push_back({.dtype = f16, .seqlen_q = 1, .seqlen_k = 1, .mask = causal_br, .sinks = true});
  t.push_back({.dtype = bf16, .seqlen_q = 1, .seqlen_k = 1, .dim_qk = 256, .dim_v = 256, .mask = causal_tl,
               .alibi = Alibi::per_head});

  // 17 x 17: shorter than any tile, every head dim appears.
  t.push_back({.dtype = bf16, .batch = 2, .mask = causal_br});
  t.push_back({.dtype = f16, .heads_q = 4, .dim_qk = 80, .dim_v = 80, .mask = causal_tl});
  t.push_back({.dtype = f32, .dim_qk = 96, .dim_v = 96, .mask = win_br(3, 2), .softcap = 2.5f});
  t.push_back({.dtype = f16, .dim_qk = 512, .dim_v = 512, .mask = none});
  t.push_back({.dtype = bf16, .heads_q = 6, .dim_qk = 192, .dim_v = 128, .mask = win_tl(4, 0)});
  t.push_back({.dtype = f16, .batch = 2, .heads_q = 8, .heads_kv = 1, .mask = none, .alibi = Alibi::per_batch_head});
  t.push_back({.dtype = bf16, .batch = 2, .heads_q = 3, .heads_kv = 3, .dim_qk = 256, .dim_v = 256, .mask = none,
               .softcap = 5.0f, .layout = L::padded});

  // 113 x 203: ragged tails on both sides, more keys than queries.
  t.push_back({.dtype = bf16, .heads_q = 4, .seqlen_q = 113, .seqlen_k = 203, .dim_qk = 128, .dim_v = 128,
               .mask = causal_br});
  t.push_back({.dtype = f16, .seqlen_q = 113, .seqlen_k = 203, .dim_qk = 128, .dim_v = 128, .mask = causal_tl,
               .alibi = Alibi::per_head});
  t.push_back({.dtype = f32, .seqlen_q = 113, .seqlen_k = 203, .mask = none, .scale = 0.3f, .sinks = true});
  t.push_back({.dtype = bf16, .seqlen_q = 113, .seqlen_k = 203, .dim_qk = 96, .dim_v = 96, .mask = win_br(32, 16)});
  t.push_back({.dtype = f16, .heads_q = 3, .heads_kv = 1, .seqlen_q = 113, .seqlen_k = 203, .dim_qk = 256,
               .dim_v = 256, .mask = win_tl(16, 0)});
  t.push_back({.dtype = bf16, .heads_q = 4, .seqlen_q = 113, .seqlen_k = 203, .dim_qk = 192, .dim_v = 128,
               .mask = causal_br, .softcap = 2.0f});
  t.push_back({.dtype = bf16, .heads_q = 1, .heads_kv = 1, .seqlen_q = 113, .seqlen_k = 203, .dim_qk = 512,
               .dim_v = 512, .mask = causal_br});
  t.push_back({.dtype = f16, .seqlen_q = 113, .seqlen_k = 203, .dim_qk = 80, .dim_v = 80, .mask = win_br(-1, 8)});
  t.push_back({.dtype = f32, .seqlen_q = 113, .seqlen_k = 203, .dim_qk = 32, .dim_v = 32, .mask = win_tl(20, -1)});
  t.push_back({.dtype = f32, .batch = 2, .seqlen_q = 113, .seqlen_k = 203, .dim_qk = 96, .dim_v = 96,
               .mask = win_tl(10, 10), .alibi = Alibi::per_batch_head, .layout = L::padded});

  // More queries than keys: rows that see nothing (out 0, lse -inf, zero gradients) unless a sink catches them.
  t.push_back({.dtype = f16, .seqlen_q = 203, .seqlen_k = 113, .mask = win_tl(8, 0), .sinks = true});
  t.push_back({.dtype = bf16, .seqlen_q = 203, .seqlen_k = 113, .mask = causal_br});
  t.push_back({.dtype = f32, .seqlen_q = 239, .seqlen_k = 1, .dim_qk = 128, .dim_v = 128, .mask = causal_br,
               .sinks = true});
  t.push_back({.dtype = bf16, .seqlen_q = 239, .seqlen_k = 1, .mask = causal_br});
  t.push_back({.dtype = f16, .heads_q = 4, .seqlen_q = 239, .seqlen_k = 1, .dim_qk = 32, .dim_v = 32, .mask = none});
  t.push_back({.dtype = f16, .seqlen_q = 239, .seqlen_k = 1, .dim_qk = 96, .dim_v = 96, .mask = causal_tl,
               .alibi = Alibi::per_head});
  t.push_back({.dtype = bf16, .seqlen_q = 239, .seqlen_k = 17, .dim_qk = 128, .dim_v = 128, .mask = win_br(2, 3),
               .softcap = 3.0f});

  // Long sequences (fp32/bf16, few heads): many tiles, the online softmax's rescaling across them.
  t.push_back({.dtype = bf16, .heads_q = 2, .heads_kv = 1, .seqlen_q = 1023, .seqlen_k = 1024, .dim_qk = 128,
               .dim_v = 128, .mask = causal_br});
  t.push_back({.dtype = f32, .seqlen_q = 1024, .seqlen_k = 1023, .mask = causal_tl});
  t.push_back({.dtype = bf16, .seqlen_q = 1024, .seqlen_k = 1023, .mask = win_br(128, 64), .alibi = Alibi::per_head,
               .sinks = true});
  t.push_back({.dtype = bf16, .seqlen_q = 2048, .seqlen_k = 2048, .dim_qk = 128, .dim_v = 128, .mask = causal_br});
  t.push_back({.dtype = f32, .heads_q = 2, .heads_kv = 1, .seqlen_q = 2048, .seqlen_k = 2048, .mask = none});

  // Varlen batches with empty sequences (no queries, no keys, or neither) next to full ones.
  t.push_back({.dtype = f16, .heads_q = 4, .mask = causal_br, .varlen_q = {17, 0, 113, 1, 0},
               .varlen_k = {23, 5, 203, 1, 0}});
  t.push_back({.dtype = bf16, .heads_q = 4, .dim_qk = 128, .dim_v = 128, .mask = causal_tl,
               .alibi = Alibi::per_batch_head, .sinks = true, .varlen_q = {1, 0, 239, 64},
               .varlen_k = {0, 7, 1, 100}});
  t.push_back({.dtype = f32, .heads_q = 3, .heads_kv = 1, .dim_qk = 80, .dim_v = 80, .mask = win_br(5, 5),
               .softcap = 4.0f, .varlen_q = {33, 17}, .varlen_k = {17, 50}});
  t.push_back({.dtype = bf16, .dim_qk = 192, .dim_v = 128, .mask = none, .varlen_q = {0, 113, 40},
               .varlen_k = {203, 0, 40}});
  t.push_back({.dtype = f16, .heads_q = 8, .heads_kv = 1, .dim_qk = 128, .dim_v = 128, .mask = win_tl(16, 4),
               .softcap = 2.0f, .alibi = Alibi::per_head, .sinks = true, .varlen_q = {5, 100, 0, 30},
               .varlen_k = {9, 90, 3, 0}});
  t.push_back({.dtype = bf16, .heads_q = 4, .mask = causal_br, .varlen_q = {64, 0, 17}, .varlen_k = {64, 9, 30},
               .layout = L::padded});

  // The deterministic reduction paths, with GQA (dK, dV summed over the group) and many key tiles.
  t.push_back({.dtype = bf16, .heads_q = 6, .seqlen_q = 239, .seqlen_k = 1024, .dim_qk = 128, .dim_v = 128,
               .mask = causal_tl, .deterministic = true});
  t.push_back({.dtype = f16, .heads_q = 8, .heads_kv = 1, .mask = win_br(64, 0), .sinks = true,
               .varlen_q = {300, 0, 77}, .varlen_k = {300, 12, 200}, .deterministic = true});
  t.push_back({.dtype = f32, .heads_q = 4, .seqlen_q = 113, .seqlen_k = 203, .dim_qk = 96, .dim_v = 96,
               .mask = none, .alibi = Alibi::per_head, .deterministic = true});

  // Non-contiguous: q, k, v as slices of one packed qkv tensor.
  t.push_back({.dtype = bf16, .heads_q = 4, .seqlen_q = 113, .seqlen_k = 113, .dim_qk = 128, .dim_v = 128,
               .mask = causal_br, .layout = L::packed_qkv});
  t.push_back({.dtype = f16, .batch = 2, .heads_q = 3, .heads_kv = 1, .seqlen_q = 17, .seqlen_k = 17,
               .mask = none, .sinks = true, .layout = L::packed_qkv});
  t.push_back({.dtype = f32, .seqlen_q = 17, .seqlen_k = 17, .dim_qk = 80, .dim_v = 80, .mask = causal_tl,
               .softcap = 2.0f, .layout = L::packed_qkv});
  return t;
}

std::string mask_name(const Mask& m) {
  // Appends, not operator+ chains: GCC 12 warns falsely (-Wrestrict) about `"literal" + std::string` temporaries.
  const char* align = m.alignment == Alignment::top_left ? "tl" : "br";
  std::string n;
  if (m.is_none()) return "none";
  if (m.is_causal()) {
    n = "causal_";
    n += align;
    return n;
  }
  auto side = [](std::int64_t w) { return w < 0 ? std::string("inf") : std::to_string(w); };
  n = "win";
  n += side(m.window_left);
  n += '_';
  n += side(m.window_right);
  n += '_';
  n += align;
  return n;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "fp32";
    case DType::f16: return "fp16";
    case DType::bf16: return "bf16";
    default: return "i32";
  }
}

std::string lengths(const std::vector<std::int32_t>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += '_';
    s += std::to_string(v[i]);
  }
  return s;
}

}  // namespace

std::string Case::name() const {
  std::string n = dtype_name(dtype);
  auto add = [&n](const char* text, std::int64_t value) {
    n += text;
    n += std::to_string(value);
  };
  add("_d", dim_qk);
  if (dim_v != dim_qk) add("v", dim_v);
  if (is_varlen()) {
    n += "_varlen_q";
    n += lengths(varlen_q);
    n += "_k";
    n += lengths(varlen_k);
  } else {
    add("_", seqlen_q);
    add("x", seqlen_k);
  }
  n += '_';
  n += mask_name(mask);
  add("_h", heads_q);
  if (group() > 1) add("_gqa", group());
  if (!is_varlen() && batch > 1) add("_b", batch);
  if (scale) n += "_scaled";
  if (softcap > 0) n += "_softcap";
  if (alibi == Alibi::per_head) n += "_alibi";
  if (alibi == Alibi::per_batch_head) n += "_alibi_bh";
  if (sinks) n += "_sinks";
  if (layout == Layout::packed_qkv) n += "_packed_qkv";
  if (layout == Layout::padded) n += "_padded";
  if (deterministic) n += "_det";
  if (!backward) n += "_fwd";
  return n;
}

const std::vector<Case>& attention_cases() {
  static const std::vector<Case> table = build_table();
  return table;
}

std::vector<Case> kernel_shape_cases(const Case& base) {
  std::vector<Case> cases;
  for (const Mask& m : {Mask::none(), Mask::causal(), Mask::causal(Alignment::top_left), Mask::window(100, 50),
                        Mask::window(0, 0, Alignment::top_left)}) {
    Case c = base;
    c.batch = 2, c.heads_q = 4, c.heads_kv = 2, c.seqlen_q = 333, c.seqlen_k = 1029;
    c.mask = m;
    cases.push_back(c);
  }
  // Whole tiles only: the diagonal tiles are the only masked ones.
  Case whole = base;
  whole.batch = 1, whole.heads_q = 2, whole.heads_kv = 2, whole.seqlen_q = 512, whole.seqlen_k = 512;
  whole.mask = Mask::causal();
  cases.push_back(whole);
  // Padded strides (head stride dim + 8, slack in seq and batch strides).
  Case padded = base;
  padded.batch = 2, padded.heads_q = 4, padded.heads_kv = 1, padded.seqlen_q = 200, padded.seqlen_k = 391;
  padded.layout = Layout::padded;
  padded.mask = Mask::causal(Alignment::top_left);
  cases.push_back(padded);
  Case var = base;
  var.heads_q = 2, var.heads_kv = 1;
  var.varlen_q = {0, 257, 1, 700, 64};
  var.varlen_k = {300, 0, 129, 700, 64};
  var.mask = Mask::window(64, 0);
  var.sinks = true;
  cases.push_back(var);
  Case var_causal = base;
  var_causal.heads_q = 4, var_causal.heads_kv = 2;
  var_causal.varlen_q = {17, 1100, 128, 3};
  var_causal.varlen_k = {17, 1100, 200, 129};
  var_causal.mask = Mask::causal();
  cases.push_back(var_causal);
  return cases;
}

std::vector<Case> score_mod_cases(const Case& base) {
  std::vector<Case> cases;
  // Softcap under a causal mask, GQA, both ends ragged; a cap of 1.5 keeps the logits in tanh's bend, where a wrong
  // derivative shows in a backward.
  Case soft = base;
  soft.batch = 2, soft.heads_q = 4, soft.heads_kv = 2, soft.seqlen_q = 333, soft.seqlen_k = 1029;
  soft.mask = Mask::causal();
  soft.softcap = 1.5f;
  cases.push_back(soft);
  // ALiBi [h] without a mask.
  Case alibi = base;
  alibi.batch = 2, alibi.heads_q = 4, alibi.heads_kv = 4, alibi.seqlen_q = 300, alibi.seqlen_k = 700;
  alibi.alibi = Alibi::per_head;
  cases.push_back(alibi);
  // ALiBi [b, h] with softcap, top-left causal, MQA (a slope per query head of the group).
  Case alibi_bh = base;
  alibi_bh.batch = 3, alibi_bh.heads_q = 3, alibi_bh.heads_kv = 1, alibi_bh.seqlen_q = 260, alibi_bh.seqlen_k = 517;
  alibi_bh.mask = Mask::causal(Alignment::top_left);
  alibi_bh.alibi = Alibi::per_batch_head;
  alibi_bh.softcap = 20.0f;
  cases.push_back(alibi_bh);
  // Varlen, causal, ALiBi [b, h], sinks, empty sequences.
  Case var_alibi = base;
  var_alibi.heads_q = 4, var_alibi.heads_kv = 2;
  var_alibi.varlen_q = {300, 0, 129, 17};
  var_alibi.varlen_k = {450, 33, 129, 0};
  var_alibi.mask = Mask::causal();
  var_alibi.alibi = Alibi::per_batch_head;
  var_alibi.sinks = true;
  cases.push_back(var_alibi);
  // Varlen, sliding window, softcap and ALiBi [h], more queries than keys in one sequence.
  Case var_soft = base;
  var_soft.heads_q = 2, var_soft.heads_kv = 2;
  var_soft.varlen_q = {1, 400, 77, 250};
  var_soft.varlen_k = {90, 600, 77, 130};
  var_soft.mask = Mask::window(200, 30);
  var_soft.softcap = 3.0f;
  var_soft.alibi = Alibi::per_head;
  cases.push_back(var_soft);
  return cases;
}

bool listed(const std::string& list, const std::string& item) {
  std::istringstream in(list);
  for (std::string token; std::getline(in, token, ',');) {
    if (token == item) return true;
  }
  return false;
}

}  // namespace ioattn::test
