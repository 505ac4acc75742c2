// ioattn: the C ABI (include/ioattn/ioattn.h) over the C++ API. No exception may cross into C: every entry point
// catches everything and turns it into a status plus this thread's last-error message.
#include "ioattn/ioattn.h"

#include <cstring>
#include <new>
#include <optional>
#include <string>

#include "ioattn/attention.hpp"
#include "ioattn/fp8.hpp"
#include "ioattn/paged.hpp"
#include "ioattn/error.hpp"

namespace {

thread_local std::string t_last_error;

[[noreturn]] void bad_field(const std::string& field, const std::string& expected, const std::string& got) {
  throw ioattn::Error(ioattn::ErrorCode::invalid_argument, field + ": expected " + expected + ", got " + got);
}

// The C view is checked field by field before it becomes a TensorView, since a C caller can put any integer in the
// enum fields and any rank in `rank` (the C++ view's arrays hold at most kMaxRank dimensions).
ioattn::TensorView to_view(const ioattn_tensor& t, const std::string& name) {
  if (t.rank < 0 || t.rank > IOATTN_MAX_RANK) {
    bad_field(name + ".rank", "0 to " + std::to_string(IOATTN_MAX_RANK), std::to_string(t.rank));
  }
  if (t.dtype < IOATTN_DTYPE_F32 || t.dtype > IOATTN_DTYPE_F8E4M3) {
    bad_field(name + ".dtype", "IOATTN_DTYPE_F32/F16/BF16/I32/F8E4M3 (0 to 4)", std::to_string(t.dtype));
  }
  if (t.device != IOATTN_DEVICE_CPU && t.device != IOATTN_DEVICE_CUDA) {
    bad_field(name + ".device", "IOATTN_DEVICE_CPU or IOATTN_DEVICE_CUDA (0 or 1)", std::to_string(t.device));
  }
  ioattn::TensorView view;
  view.data = t.data;
  view.dtype = static_cast<ioattn::DType>(t.dtype);
  view.device = static_cast<ioattn::Device>(t.device);
  view.device_index = t.device_index;
  view.rank = t.rank;
  for (int d = 0; d < t.rank; ++d) {
    view.shape[static_cast<std::size_t>(d)] = t.shape[d];
    view.stride[static_cast<std::size_t>(d)] = t.stride[d];
  }
  return view;
}

// A view passed by pointer (the calls whose tensors are separate arguments): NULL is a bad argument, not a crash.
ioattn::TensorView to_view(const ioattn_tensor* t, const std::string& name) {
  if (t == nullptr) bad_field(name, "a pointer to an ioattn_tensor", "NULL");
  return to_view(*t, name);
}

std::optional<ioattn::Varlen> to_varlen(const ioattn_varlen* varlen) {
  if (varlen == nullptr) return std::nullopt;
  ioattn::Varlen v;
  v.cu_seqlens_q = to_view(varlen->cu_seqlens_q, "varlen.cu_seqlens_q");
  v.cu_seqlens_k = to_view(varlen->cu_seqlens_k, "varlen.cu_seqlens_k");
  v.max_seqlen_q = varlen->max_seqlen_q;
  v.max_seqlen_k = varlen->max_seqlen_k;
  return v;
}

ioattn::AttentionParams to_params(const ioattn_params* p) {
  ioattn::AttentionParams params;
  if (p == nullptr) return params;
  // 0 selects the default: a C struct has no "unset", and a zero scale would make every row uniform anyway.
  if (p->softmax_scale != 0.0f) params.softmax_scale = p->softmax_scale;
  params.softcap = p->softcap;
  if (p->mask.alignment != IOATTN_ALIGN_BOTTOM_RIGHT && p->mask.alignment != IOATTN_ALIGN_TOP_LEFT) {
    bad_field("params.mask.alignment", "IOATTN_ALIGN_BOTTOM_RIGHT or IOATTN_ALIGN_TOP_LEFT (0 or 1)",
              std::to_string(p->mask.alignment));
  }
  params.mask.window_left = p->mask.window_left;
  params.mask.window_right = p->mask.window_right;
  params.mask.alignment =
      p->mask.alignment == IOATTN_ALIGN_TOP_LEFT ? ioattn::Alignment::top_left : ioattn::Alignment::bottom_right;
  params.alibi_slopes = to_view(p->alibi_slopes, "params.alibi_slopes");
  params.sinks = to_view(p->sinks, "params.sinks");
  params.deterministic = p->deterministic != 0;
  params.num_threads = p->num_threads;
  params.impl = p->impl != nullptr ? p->impl : "auto";
  params.stream = p->stream;
  params.workspace.data = p->workspace;
  params.workspace.bytes = p->workspace_bytes;
  return params;
}

ioattn::ForwardArgs to_forward(const ioattn_forward_args* a) {
  if (a == nullptr) bad_field("args", "a pointer to ioattn_forward_args", "NULL");
  ioattn::ForwardArgs args;
  args.q = to_view(a->q, "q");
  args.k = to_view(a->k, "k");
  args.v = to_view(a->v, "v");
  args.out = to_view(a->out, "out");
  args.lse = to_view(a->lse, "lse");
  args.varlen = to_varlen(a->varlen);
  return args;
}

ioattn::BackwardArgs to_backward(const ioattn_backward_args* a) {
  if (a == nullptr) bad_field("args", "a pointer to ioattn_backward_args", "NULL");
  ioattn::BackwardArgs args;
  args.q = to_view(a->q, "q");
  args.k = to_view(a->k, "k");
  args.v = to_view(a->v, "v");
  args.out = to_view(a->out, "out");
  args.dout = to_view(a->dout, "dout");
  args.lse = to_view(a->lse, "lse");
  args.dq = to_view(a->dq, "dq");
  args.dk = to_view(a->dk, "dk");
  args.dv = to_view(a->dv, "dv");
  args.dsinks = to_view(a->dsinks, "dsinks");
  args.varlen = to_varlen(a->varlen);
  return args;
}

ioattn::PagedForwardArgs to_paged(const ioattn_paged_forward_args* a) {
  if (a == nullptr) bad_field("args", "a pointer to ioattn_paged_forward_args", "NULL");
  ioattn::PagedForwardArgs args;
  args.q = to_view(a->q, "q");
  args.kv.k_cache = to_view(a->kv.k_cache, "kv.k_cache");
  args.kv.v_cache = to_view(a->kv.v_cache, "kv.v_cache");
  args.kv.block_table = to_view(a->kv.block_table, "kv.block_table");
  args.kv.seqlens_k = to_view(a->kv.seqlens_k, "kv.seqlens_k");
  args.out = to_view(a->out, "out");
  args.lse = to_view(a->lse, "lse");
  args.cu_seqlens_q = to_view(a->cu_seqlens_q, "cu_seqlens_q");
  args.max_seqlen_q = a->max_seqlen_q;
  return args;
}

// The C plan carries the C++ plan's fields; `planned` holds its shapes in this fixed order.
void plan_to_c(const ioattn::PagedPlan& p, ioattn_paged_plan_info* c) {
  *c = ioattn_paged_plan_info{};
  if (p.impl.size() >= sizeof(c->impl)) bad_field("plan", "a backend name shorter than 32 bytes", p.impl);
  p.impl.copy(c->impl, p.impl.size());
  c->split_tokens = p.split_tokens;
  c->max_splits = p.max_splits;
  c->workspace_bytes = p.workspace_bytes;
  const std::int64_t fields[12] = {static_cast<std::int64_t>(p.dtype), static_cast<std::int64_t>(p.device),
                                   p.batch, p.rows_q, p.heads_q, p.heads_kv, p.dim_qk, p.dim_v, p.page_size,
                                   p.max_pages_per_seq, p.packed_q ? 1 : 0,
                                   static_cast<std::int64_t>(p.split_mode)};
  for (int i = 0; i < 12; ++i) c->planned[i] = fields[i];
}

ioattn::PagedPlan plan_from_c(const ioattn_paged_plan_info* c) {
  if (c == nullptr) bad_field("plan", "a pointer to an ioattn_paged_plan_info from ioattn_paged_plan()", "NULL");
  ioattn::PagedPlan p;
  p.impl.assign(c->impl, strnlen(c->impl, sizeof(c->impl)));
  p.split_tokens = c->split_tokens;
  p.max_splits = c->max_splits;
  p.workspace_bytes = c->workspace_bytes;
  const std::int64_t* f = c->planned;
  if (f[0] < 0 || f[0] > static_cast<std::int64_t>(ioattn::DType::bf16) || f[1] < 0 || f[1] > 1 || f[11] < 0 ||
      f[11] > static_cast<std::int64_t>(ioattn::SplitKV::Mode::fixed)) {
    bad_field("plan", "a plan from ioattn_paged_plan()", "an altered plan");
  }
  p.dtype = static_cast<ioattn::DType>(f[0]);
  p.device = static_cast<ioattn::Device>(f[1]);
  p.batch = f[2];
  p.rows_q = f[3];
  p.heads_q = f[4];
  p.heads_kv = f[5];
  p.dim_qk = f[6];
  p.dim_v = f[7];
  p.page_size = f[8];
  p.max_pages_per_seq = f[9];
  p.packed_q = f[10] != 0;
  p.split_mode = static_cast<ioattn::SplitKV::Mode>(f[11]);
  return p;
}

ioattn::SplitKV to_split(int32_t mode, int64_t tokens) {
  switch (mode) {
    case IOATTN_SPLIT_AUTO: return ioattn::SplitKV::automatic();
    case IOATTN_SPLIT_NONE: return ioattn::SplitKV::none();
    case IOATTN_SPLIT_FIXED: return ioattn::SplitKV::fixed(tokens);
  }
  bad_field("split_mode", "IOATTN_SPLIT_AUTO, IOATTN_SPLIT_NONE or IOATTN_SPLIT_FIXED (0 to 2)", std::to_string(mode));
}

ioattn_status status_of(ioattn::ErrorCode code) {
  switch (code) {
    case ioattn::ErrorCode::invalid_argument: return IOATTN_ERROR_INVALID_ARGUMENT;
    case ioattn::ErrorCode::unsupported: return IOATTN_ERROR_UNSUPPORTED;
    case ioattn::ErrorCode::out_of_memory: return IOATTN_ERROR_OUT_OF_MEMORY;
    case ioattn::ErrorCode::backend_failure: return IOATTN_ERROR_BACKEND_FAILURE;
  }
  return IOATTN_ERROR_INTERNAL;
}

// Runs fn, mapping whatever it throws to a status; the message is kept for ioattn_last_error().
template <class Fn>
ioattn_status guarded(Fn&& fn) noexcept {
  try {
    try {
      fn();
      t_last_error.clear();
      return IOATTN_OK;
    } catch (const ioattn::Error& e) {
      t_last_error = e.what();
      return status_of(e.code());
    } catch (const std::bad_alloc&) {
      t_last_error = "out of host memory";
      return IOATTN_ERROR_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
      t_last_error = std::string("internal error: ") + e.what();
      return IOATTN_ERROR_INTERNAL;
    } catch (...) {
      t_last_error = "internal error: an unknown exception";
      return IOATTN_ERROR_INTERNAL;
    }
  } catch (...) {
    // Storing the message itself failed (no memory for the string): the status still gets out.
    return IOATTN_ERROR_OUT_OF_MEMORY;
  }
}

}  // namespace

extern "C" {

void ioattn_params_init(ioattn_params* params) {
  if (params == nullptr) return;
  *params = ioattn_params{};
  params->softmax_scale = 0.0f;
  params->softcap = 0.0f;
  params->mask.window_left = -1;
  params->mask.window_right = -1;
  params->mask.alignment = IOATTN_ALIGN_BOTTOM_RIGHT;
  params->impl = nullptr;
}

ioattn_status ioattn_forward(const ioattn_forward_args* args, const ioattn_params* params) {
  return guarded([&] { ioattn::attention_forward(to_forward(args), to_params(params)); });
}

ioattn_status ioattn_backward(const ioattn_backward_args* args, const ioattn_params* params) {
  return guarded([&] { ioattn::attention_backward(to_backward(args), to_params(params)); });
}

ioattn_status ioattn_forward_workspace_bytes(const ioattn_forward_args* args, const ioattn_params* params,
                                             size_t* bytes) {
  return guarded([&] {
    if (bytes == nullptr) bad_field("bytes", "a pointer to a size_t", "NULL");
    *bytes = ioattn::forward_workspace_bytes(to_forward(args), to_params(params));
  });
}

ioattn_status ioattn_backward_workspace_bytes(const ioattn_backward_args* args, const ioattn_params* params,
                                              size_t* bytes) {
  return guarded([&] {
    if (bytes == nullptr) bad_field("bytes", "a pointer to a size_t", "NULL");
    *bytes = ioattn::backward_workspace_bytes(to_backward(args), to_params(params));
  });
}

ioattn_status ioattn_paged_plan(const ioattn_paged_forward_args* args, const ioattn_params* params,
                                int32_t split_mode, int64_t split_tokens, int64_t expected_seqlen_k,
                                ioattn_paged_plan_info* plan) {
  return guarded([&] {
    if (plan == nullptr) bad_field("plan", "a pointer to an ioattn_paged_plan_info to fill", "NULL");
    const ioattn::PagedPlan p = ioattn::paged_attention_plan(to_paged(args), to_params(params),
                                                             to_split(split_mode, split_tokens), expected_seqlen_k);
    plan_to_c(p, plan);
  });
}

ioattn_status ioattn_paged_forward(const ioattn_paged_forward_args* args, const ioattn_paged_plan_info* plan,
                                   const ioattn_params* params) {
  return guarded([&] { ioattn::paged_attention_forward(to_paged(args), plan_from_c(plan), to_params(params)); });
}

ioattn_status ioattn_paged_kv_write(const ioattn_paged_write_args* args, const ioattn_params* params) {
  return guarded([&] {
    if (args == nullptr) bad_field("args", "a pointer to ioattn_paged_write_args", "NULL");
    ioattn::PagedWriteArgs w;
    w.k_new = to_view(args->k_new, "k_new");
    w.v_new = to_view(args->v_new, "v_new");
    w.slot_mapping = to_view(args->slot_mapping, "slot_mapping");
    w.k_cache = to_view(args->k_cache, "k_cache");
    w.v_cache = to_view(args->v_cache, "v_cache");
    ioattn::paged_kv_write(w, to_params(params));
  });
}

ioattn_status ioattn_paged_kv_copy_pages(const ioattn_tensor* k_cache, const ioattn_tensor* v_cache,
                                         const ioattn_tensor* copies, const ioattn_params* params) {
  return guarded([&] {
    ioattn::paged_kv_copy_pages(to_view(k_cache, "k_cache"), to_view(v_cache, "v_cache"), to_view(copies, "copies"),
                                to_params(params));
  });
}

ioattn_status ioattn_forward_fp8(const ioattn_fp8_forward_args* args, const ioattn_params* params) {
  return guarded([&] {
    if (args == nullptr) bad_field("args", "a pointer to ioattn_fp8_forward_args", "NULL");
    ioattn::Fp8ForwardArgs a;
    a.q = to_view(args->q, "q");
    a.k = to_view(args->k, "k");
    a.v = to_view(args->v, "v");
    a.scales.q_descale = to_view(args->scales.q_descale, "scales.q_descale");
    a.scales.k_descale = to_view(args->scales.k_descale, "scales.k_descale");
    a.scales.v_descale = to_view(args->scales.v_descale, "scales.v_descale");
    a.scales.block_rows = args->scales.block_rows;
    a.out = to_view(args->out, "out");
    a.lse = to_view(args->lse, "lse");
    ioattn::attention_forward_fp8(a, to_params(params));
  });
}

ioattn_status ioattn_quantize_fp8(const ioattn_tensor* input, const ioattn_tensor* output,
                                  const ioattn_tensor* descale, int64_t block_rows, int32_t rotate) {
  return guarded([&] {
    ioattn::quantize_fp8(to_view(input, "input"), to_view(output, "output"), to_view(descale, "descale"), block_rows,
                         rotate != 0);
  });
}

const char* ioattn_last_error(void) { return t_last_error.c_str(); }

const char* ioattn_status_string(ioattn_status status) {
  switch (status) {
    case IOATTN_OK: return "IOATTN_OK";
    case IOATTN_ERROR_INVALID_ARGUMENT: return "IOATTN_ERROR_INVALID_ARGUMENT";
    case IOATTN_ERROR_UNSUPPORTED: return "IOATTN_ERROR_UNSUPPORTED";
    case IOATTN_ERROR_OUT_OF_MEMORY: return "IOATTN_ERROR_OUT_OF_MEMORY";
    case IOATTN_ERROR_BACKEND_FAILURE: return "IOATTN_ERROR_BACKEND_FAILURE";
    case IOATTN_ERROR_INTERNAL: return "IOATTN_ERROR_INTERNAL";
  }
  return "IOATTN_UNKNOWN_STATUS";
}

const char* ioattn_backends(void) {
  try {
    static const std::string names = ioattn::backends();
    return names.c_str();
  } catch (...) {
    return "";
  }
}

const char* ioattn_default_backend(int32_t device) {
  try {
    static const std::string cpu = ioattn::default_backend(ioattn::Device::cpu);
    static const std::string cuda = ioattn::default_backend(ioattn::Device::cuda);
    if (device == IOATTN_DEVICE_CPU) return cpu.c_str();
    if (device == IOATTN_DEVICE_CUDA) return cuda.c_str();
    return "";
  } catch (...) {
    return "";
  }
}

int32_t ioattn_cuda_device_count(void) {
  try {
    return ioattn::cuda_device_count();
  } catch (...) {
    return 0;
  }
}

const char* ioattn_version(void) { return ioattn::version(); }

}  // extern "C"
