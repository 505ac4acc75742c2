// `ioattn decode`: a decoding step over a paged KV cache, timed: the bandwidth at which the keys and values are read,
// which is what decoding speed is (it is memory-bound: each cached K and V element is read once per step).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "device_memory.hpp"
#include "ioattn/core/convert.hpp"
#include "ioattn/error.hpp"
#include "ioattn/paged.hpp"
#include "problem.hpp"
#include "report.hpp"
#include "run.hpp"
#include "timing.hpp"

namespace ioattn::cli {
namespace {

std::vector<FlagSpec> decode_flags() {
  std::vector<FlagSpec> flags = {
      {"batch", FlagKind::integer, "N", "sequences decoding together", "16"},
      {"context", FlagKind::integer, "N", "tokens in each sequence's cache, the new ones included", "4096"},
      {"new-tokens", FlagKind::integer, "N", "query tokens per sequence (1: decoding; more: chunked prefill)", "1"},
      {"heads", FlagKind::integer, "N", "query heads", "32"},
      {"kv-heads", FlagKind::integer, "N", "key/value heads (GQA)", "8"},
      {"head-dim", FlagKind::integer, "N", "head dim of q, k and v", "128"},
      {"page-size", FlagKind::integer, "N", "tokens per cache page", "16"},
      {"dtype", FlagKind::text, "fp32|fp16|bf16", "element type", "bf16"},
      {"split", FlagKind::text, "auto|none|N", "split-KV: automatic, none, or fixed chunks of N keys", "auto"},
      {"causal", FlagKind::boolean, "", "causal among the new tokens", ""},
      {"check", FlagKind::boolean, "", "compare with the fp64 reference (max_err)", ""},
      {"json", FlagKind::boolean, "", "one JSON object instead of the table", ""},
  };
  for (FlagSpec& f : run_flag_specs("cpu 1, cuda 10", "cpu 5, cuda 50")) flags.push_back(std::move(f));
  return flags;
}

SplitKV parse_split(const std::string& text) {
  if (text == "auto") return SplitKV::automatic();
  if (text == "none") return SplitKV::none();
  return SplitKV::fixed(parse_integer("split", text));
}

// Host values of `dtype` from fp32 draws.
std::vector<unsigned char> host_values(DType dtype, std::int64_t n, std::mt19937& gen) {
  std::normal_distribution<float> normal;
  std::vector<unsigned char> bytes(static_cast<std::size_t>(n) * dtype_size(dtype));
  for (std::int64_t i = 0; i < n; ++i) {
    const float x = normal(gen);
    if (dtype == DType::f32) {
      std::memcpy(bytes.data() + i * 4, &x, 4);
    } else {
      const std::uint16_t h = dtype == DType::bf16 ? core::float_to_bf16(x) : core::float_to_fp16(x);
      std::memcpy(bytes.data() + i * 2, &h, 2);
    }
  }
  return bytes;
}

double to_double(const std::vector<unsigned char>& bytes, DType dtype, std::size_t i) {
  if (dtype == DType::f32) {
    float x;
    std::memcpy(&x, bytes.data() + i * 4, 4);
    return x;
  }
  std::uint16_t h;
  std::memcpy(&h, bytes.data() + i * 2, 2);
  return dtype == DType::bf16 ? core::bf16_to_float(h) : core::fp16_to_float(h);
}

}  // namespace

std::string decode_help() {
  return "usage: ioattn decode [flags]\n"
         "\n"
         "Times attention of --new-tokens query tokens per sequence over a paged KV cache of --context tokens per\n"
         "sequence (pages of --page-size tokens in a shuffled order, as a serving cache holds them). Reports the\n"
         "median time and the bandwidth at which the keys and values are read: bytes of K and V / time. Plans once\n"
         "(paged_attention_plan), then times paged_attention_forward alone.\n"
         "\n"
         "Flags:\n" +
         format_flags_help(decode_flags()) +
         "\n"
         "Examples:\n"
         "  ioattn decode --batch 1 --context 32768\n"
         "  ioattn decode --batch 4 --context 2048 --device cpu --check\n";
}

int run_decode(int argc, char** argv) {
  const std::vector<FlagSpec> specs = decode_flags();
  const ParsedFlags flags = parse_flags("ioattn decode", specs, argc, argv);
  if (flags.help_requested) {
    std::fputs(decode_help().c_str(), stdout);
    return kExitOk;
  }
  const std::int64_t batch = flags.integer("batch", 16, 1), context = flags.integer("context", 4096, 1);
  const std::int64_t new_tokens = flags.integer("new-tokens", 1, 1), heads = flags.integer("heads", 32, 1);
  const std::int64_t kv_heads = flags.integer("kv-heads", 8, 1), dim = flags.integer("head-dim", 128, 1);
  const std::int64_t page = flags.integer("page-size", 16, 1);
  const DType dtype = parse_dtype(flags.text("dtype", "bf16"));
  const SplitKV split = parse_split(flags.text("split", "auto"));
  const RunOptions options = run_options_from_flags(flags, 1, 5, 10, 50);
  const Device device = options.device;

  // The cache: each sequence's pages drawn from a shuffled pool, as after a while of serving.
  const std::int64_t pages_per_seq = (context + page - 1) / page, pages = batch * pages_per_seq;
  std::mt19937 gen(42);
  std::vector<std::int32_t> table(static_cast<std::size_t>(pages)), lengths(static_cast<std::size_t>(batch));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), gen);
  std::fill(lengths.begin(), lengths.end(), static_cast<std::int32_t>(context));
  const std::int64_t cache_elems = pages * page * kv_heads * dim, q_elems = batch * new_tokens * heads * dim;
  const auto q_host = host_values(dtype, q_elems, gen);
  const auto k_host = host_values(dtype, cache_elems, gen), v_host = host_values(dtype, cache_elems, gen);

  const std::size_t elem = dtype_size(dtype);
  DeviceBuffer q(device, q_host.size()), k(device, k_host.size()), v(device, v_host.size());
  DeviceBuffer out(device, static_cast<std::size_t>(q_elems) * elem);
  DeviceBuffer lse(device, static_cast<std::size_t>(batch * heads * new_tokens) * sizeof(float));
  DeviceBuffer table_dev(device, table.size() * 4), lengths_dev(device, lengths.size() * 4);
  q.upload(q_host.data());
  k.upload(k_host.data());
  v.upload(v_host.data());
  table_dev.upload(table.data());
  lengths_dev.upload(lengths.data());

  PagedForwardArgs args;
  args.q = TensorView::contiguous(q.data(), dtype, {batch, new_tokens, heads, dim}, device);
  args.kv.k_cache = TensorView::contiguous(k.data(), dtype, {pages, page, kv_heads, dim}, device);
  args.kv.v_cache = TensorView::contiguous(v.data(), dtype, {pages, page, kv_heads, dim}, device);
  args.kv.block_table = TensorView::contiguous(table_dev.data(), DType::i32, {batch, pages_per_seq}, device);
  args.kv.seqlens_k = TensorView::contiguous(lengths_dev.data(), DType::i32, {batch}, device);
  args.out = TensorView::contiguous(out.data(), dtype, {batch, new_tokens, heads, dim}, device);
  args.lse = TensorView::contiguous(lse.data(), DType::f32, {batch, heads, new_tokens}, device);
  AttentionParams params;
  params.impl = options.impl;
  params.num_threads = options.threads;
  if (flags.has("causal")) params.mask = Mask::causal();
  void* stream = device == Device::cuda ? gpu::create_stream() : nullptr;
  params.stream = stream;

  const PagedPlan plan = paged_attention_plan(args, params, split);
  DeviceBuffer workspace(device, plan.workspace_bytes);
  params.workspace = {workspace.data(), plan.workspace_bytes};
  const TimedRuns timed = time_runs(
      device, stream, options.warmup, options.repeat, [&] { out.poison(stream); },
      [&] { paged_attention_forward(args, plan, params); });
  if (stream != nullptr) gpu::synchronize(stream);

  // Bytes the step must read: every cached K and V element once (plus q, out and lse, small beside them).
  const double kv_bytes = 2.0 * static_cast<double>(batch * context * kv_heads * dim) * static_cast<double>(elem);
  const double gbps = kv_bytes / (timed.median_ms * 1e-3) / 1e9;

  double max_err = -1, max_ref = 0;
  if (flags.has("check")) {
    std::vector<unsigned char> got(out.bytes());
    out.download(got.data());
    std::vector<unsigned char> ref(got.size());
    PagedForwardArgs host = args;  // the same inputs, in host memory, through the fp64 reference
    auto host_view = [](const TensorView& t, const void* data) {
      TensorView h = t;
      h.data = const_cast<void*>(data);
      h.device = Device::cpu;
      return h;
    };
    host.q = host_view(args.q, q_host.data());
    host.kv.k_cache = host_view(args.kv.k_cache, k_host.data());
    host.kv.v_cache = host_view(args.kv.v_cache, v_host.data());
    host.kv.block_table = host_view(args.kv.block_table, table.data());
    host.kv.seqlens_k = host_view(args.kv.seqlens_k, lengths.data());
    host.out = host_view(args.out, ref.data());
    host.lse = TensorView{};
    AttentionParams ref_params;
    ref_params.impl = "reference";
    ref_params.mask = params.mask;
    paged_attention_forward(host, paged_attention_plan(host, ref_params), ref_params);
    max_err = 0;
    for (std::size_t i = 0; i < static_cast<std::size_t>(q_elems); ++i) {
      const double r = to_double(ref, dtype, i), g = to_double(got, dtype, i);
      max_err = std::isfinite(g) ? std::max(max_err, std::fabs(g - r)) : INFINITY;
      max_ref = std::max(max_ref, std::fabs(r));
    }
  }
  // Both sides read the same rounded inputs; what differs is fp32 accumulation and the output's rounding.
  const double eps = dtype == DType::f32 ? 0x1p-23 : dtype == DType::bf16 ? 0x1p-8 : 0x1p-11;
  const bool pass = max_err <= 4 * eps * std::max(1.0, max_ref);
  if (stream != nullptr) gpu::destroy_stream(stream);

  const std::string dev = device == Device::cuda ? gpu::device_name() : "cpu";
  if (flags.has("json")) {
    std::printf("{\"batch\":%lld,\"context\":%lld,\"new_tokens\":%lld,\"heads\":%lld,\"kv_heads\":%lld,"
                "\"head_dim\":%lld,\"page_size\":%lld,\"dtype\":\"%s\",\"impl\":\"%s\",\"device\":\"%s\","
                "\"split_tokens\":%lld,\"max_splits\":%lld,\"workspace_bytes\":%zu,\"time_ms\":%s,"
                "\"kv_gbps\":%s%s}\n",
                (long long)batch, (long long)context, (long long)new_tokens, (long long)heads, (long long)kv_heads,
                (long long)dim, (long long)page, dtype_name(dtype), plan.impl.c_str(), dev.c_str(),
                (long long)plan.split_tokens, (long long)plan.max_splits, plan.workspace_bytes,
                json_number(timed.median_ms).c_str(), json_number(gbps).c_str(),
                max_err >= 0 ? (",\"max_err\":" + json_number(max_err)).c_str() : "");
  } else {
    std::printf("decode: batch %lld, context %lld, %lld new token(s), heads %lld/%lld, head dim %lld, %s, "
                "pages of %lld\n",
                (long long)batch, (long long)context, (long long)new_tokens, (long long)heads, (long long)kv_heads,
                (long long)dim, dtype_name(dtype), (long long)page);
    std::printf("device: %s, backend %s, split %lld keys x up to %lld, median of %d after %d warmup\n", dev.c_str(),
                plan.impl.c_str(), (long long)plan.split_tokens, (long long)plan.max_splits, options.repeat,
                options.warmup);
    std::printf("time %.4f ms, K+V read %.1f MB at %.1f GB/s", timed.median_ms, kv_bytes / 1e6, gbps);
    if (max_err >= 0) std::printf(", max_err %.3e (%s)", max_err, pass ? "pass" : "FAIL");
    std::printf("\n");
  }
  return max_err >= 0 && !pass ? kExitCheckFailed : kExitOk;
}

}  // namespace ioattn::cli
