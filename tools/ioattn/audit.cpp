// `ioattn check`: the sweep, its flags, the table, the JSON lines and the plot (audit.hpp says what is measured).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "args.hpp"
#include "audit.hpp"
#include "commands.hpp"
#include "ioattn/error.hpp"
#include "problem.hpp"
#include "report.hpp"

#ifndef IOATTN_SOURCE_DIR
#define IOATTN_SOURCE_DIR "."
#endif

namespace ioattn::cli {
namespace {

std::vector<FlagSpec> check_flags() {
  return {
      {"impl", FlagKind::text, "LIST", "implementations to audit: tiled, cuda (auto: tiled, and cuda with a GPU)",
       "auto"},
      {"dtypes", FlagKind::text, "LIST", "input dtypes", "fp32,fp16,bf16"},
      {"seqlens", FlagKind::text, "LIST", "sequence lengths of the random inputs", "128,512,2048"},
      {"head-dims", FlagKind::text, "LIST", "head dims of the random inputs", "64,128"},
      {"inputs", FlagKind::text, "LIST",
       "input kinds: random, large_logits, softcap_limit, dominant_key, masked_rows",
       "all"},
      {"adversarial-seqlen", FlagKind::integer, "N",
       "sequence length of the adversarial inputs (run at the first head dim)", "2048"},
      {"key-tiles", FlagKind::text, "LIST",
       "tiled CPU kernel: key tile sizes bc to sweep (default = the kernel's own choice; 32..128, step 16)",
       "default,32,128"},
      {"batch", FlagKind::integer, "N", "batch size", "1"},
      {"heads", FlagKind::integer, "N", "query heads", "2"},
      {"kv-heads", FlagKind::integer, "N", "key/value heads (GQA when fewer than --heads)", "1"},
      {"no-mask", FlagKind::boolean, "", "random and large_logits inputs without the causal mask", ""},
      {"forward-only", FlagKind::boolean, "", "audit out and lse only", ""},
      {"seed", FlagKind::integer, "N", "input seed (printed; default: from the clock, fresh every run)", ""},
      {"threads", FlagKind::integer, "N", "CPU threads (0: the OpenMP default)", "0"},
      {"json", FlagKind::boolean, "", "one JSON object per (run, tensor) instead of the table", ""},
      {"plot", FlagKind::text, "FILE",
       "also write FILE.jsonl and a PNG plot FILE of error against seqlen (python3, matplotlib)", ""},
      {"inject-error", FlagKind::number, "X",
       "testing the audit: add X * max|ref| to one element of every tested output (must then fail)", ""},
  };
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) items.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return items;
}

std::vector<std::int64_t> integer_list(const char* flag, const std::string& text) {
  std::vector<std::int64_t> values;
  for (const std::string& item : split_list(text)) {
    const std::int64_t v = parse_integer(flag, item);
    if (v < 1) throw UsageError(std::string(flag) + " expects positive integers, got '" + item + "'");
    values.push_back(v);
  }
  if (values.empty()) throw UsageError(std::string(flag) + " expects a comma-separated list, got '" + text + "'");
  return values;
}

std::vector<AuditTarget> targets_from(const std::string& impl_text, const std::vector<std::string>& key_tiles) {
  const std::string have = backends();
  const bool gpu = cuda_device_count() > 0 && have.find("cuda") != std::string::npos;
  std::vector<std::string> impls = impl_text == "auto" ? std::vector<std::string>{"tiled"} : split_list(impl_text);
  if (impl_text == "auto" && gpu) impls.push_back("cuda");
  std::vector<AuditTarget> targets;
  for (const std::string& impl : impls) {
    if (impl == "tiled") {
      AuditTarget t{impl, Device::cpu, {}};
      for (const std::string& bc : key_tiles) {
        if (bc == "default") {
          t.tiles.push_back("default");
          continue;
        }
        const std::int64_t v = parse_integer("--key-tiles", bc);
        if (v < 32 || v > 128 || v % 16 != 0) {
          throw UsageError("--key-tiles expects 'default' or 32..128 in steps of 16, got '" + bc + "'");
        }
        t.tiles.push_back("0," + bc);  // IOATTN_CPU_TILES: query tile left to the kernel
      }
      targets.push_back(t);
    } else if (impl == "cuda") {
      if (!gpu) throw UsageError("--impl cuda: this build or machine has no CUDA device (backends: " + have + ")");
      targets.push_back({impl, Device::cuda, {}});
    } else {
      throw UsageError("--impl expects auto or a list of tiled, cuda, got '" + impl + "'");
    }
  }
  return targets;
}

std::string json_escape(const std::string& text) {
  std::string out;
  for (const char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) >= 0x20) out += ch;
  }
  return out;
}

std::string tiles_text(const std::string& tiles) {
  return tiles.rfind("0,", 0) == 0 ? "bc=" + tiles.substr(2) : tiles;
}

std::string json_line(const AuditCase& c, const AuditRun& run, const TensorAudit* t) {
  const AuditProblem ap = audit_problem(c);
  const auto i = [](std::int64_t v) { return std::to_string(v); };
  std::string mask = ap.mask.is_none() ? "none" : "causal";
  std::string line = "{\"source\":\"ioattn\",\"impl\":\"" + run.impl + "\",\"tiles\":\"" + tiles_text(run.tiles) +
                     "\",\"input\":\"" + audit_input_name(c.input) + "\",\"dtype\":\"" + dtype_name(c.dtype) + "\"";
  line += ",\"batch\":" + i(c.batch) + ",\"heads\":" + i(c.heads_q) + ",\"kv_heads\":" + i(c.heads_kv);
  line += ",\"seqlen_q\":" + i(ap.seqlen_q) + ",\"seqlen_k\":" + i(ap.seqlen_k) + ",\"head_dim\":" + i(c.dim);
  line += ",\"mask\":\"" + mask + "\",\"softcap\":" + json_number(ap.softcap) + ",\"seed\":" + std::to_string(c.seed);
  if (t == nullptr) return line + ",\"error\":\"" + json_escape(run.error) + "\"}";
  line += ",\"tensor\":\"" + t->tensor + "\",\"count\":" + i(t->count);
  line += ",\"max_abs\":" + json_number(t->max_abs) + ",\"mean_abs\":" + json_number(t->mean_abs);
  line += ",\"max_rel\":" + json_number(t->max_rel) + ",\"mean_rel\":" + json_number(t->mean_rel);
  line += ",\"naive_max_abs\":" + json_number(t->naive_max_abs) +
          ",\"naive_mean_abs\":" + json_number(t->naive_mean_abs);
  line += ",\"ratio\":" + json_number(t->ratio) + ",\"bound\":" + json_number(t->bound);
  line += ",\"nonfinite\":" + i(t->nonfinite) + ",\"pass\":" + (t->pass ? "true" : "false") + "}";
  return line;
}

constexpr const char* kTableHeader =
    "input          dtype  seqlen  dim  impl   tiles    | max_abs error, (ratio to naive)\n";

std::string table_line(const AuditCase& c, const AuditRun& run) {
  const AuditProblem ap = audit_problem(c);
  char head[128];
  std::snprintf(head, sizeof head, "%-14s %-5s %7lld %4lld  %-6s %-8s |", audit_input_name(c.input),
                dtype_name(c.dtype), static_cast<long long>(ap.seqlen_q), static_cast<long long>(c.dim),
                run.impl.c_str(), tiles_text(run.tiles).c_str());
  std::string line = head;
  if (!run.error.empty()) return line + " refused: " + run.error + "\n";
  for (const TensorAudit& t : run.tensors) {
    line += " " + t.tensor + " " + fmt("%.2e", t.max_abs);
    if (run.impl != "naive") line += " (" + fmt("%.2f", t.ratio) + ")";
  }
  line += run.impl == "naive" ? "\n" : (run.pass() ? "  ok\n" : "  FAIL\n");
  return line;
}

std::string failure_detail(const AuditRun& run) {
  std::string text;
  for (const TensorAudit& t : run.tensors) {
    if (t.pass) continue;
    text += "    " + t.tensor + ": error " + fmt("%.3e", t.max_abs) + " > bound " + fmt("%.3e", t.bound) +
            " (2x naive " + fmt("%.3e", t.naive_max_abs) + " + allowance)";
    if (t.nonfinite > 0) text += ", " + std::to_string(t.nonfinite) + " non-finite or wrong -inf";
    text += "\n";
  }
  return text;
}

}  // namespace

std::string check_help() {
  std::string text =
      "usage: ioattn check [flags]\n"
      "\n"
      "Numerics audit against an fp64 reference (after \"Is Flash Attention Stable?\", Golden et al. 2024).\n"
      "Each implementation runs on fresh random inputs and on adversarial ones (large logits, softcap at its limit,\n"
      "one dominant key in long rows, fully masked rows), outputs poisoned (NaN) beforehand. For out, lse, dq, dk\n"
      "and dv it reports max and mean absolute and relative error against the fp64 reference, and the ratio to a\n"
      "naive program in the same precision (fp32 accumulation, S, P and O rounded to the dtype, as plain PyTorch).\n"
      "A run passes when every error is within 2x the naive error plus a rounding allowance (the test suite's\n"
      "bound). Relative errors are relative to the tensor's largest (max) or mean (mean) reference magnitude.\n"
      "\n";
  text += format_flags_help(check_flags());
  text +=
      "\n"
      "Exit status: 0 all runs pass, 3 some run fails the bound, 1 an error, 2 a bad flag.\n"
      "\n"
      "Examples:\n"
      "  ioattn check                                   # the default sweep, about 1-2 minutes on 2 cores\n"
      "  ioattn check --dtypes bf16 --seqlens 4096 --inputs random --json\n"
      "  ioattn check --plot numerics.png               # also numerics.png.jsonl\n";
  return text;
}

int run_check(int argc, char** argv) {
  const std::vector<FlagSpec> specs = check_flags();
  const ParsedFlags flags = parse_flags("ioattn check", specs, argc, argv);
  if (flags.help_requested) {
    std::fputs(check_help().c_str(), stdout);
    return kExitOk;
  }
  std::vector<DType> dtypes;
  for (const std::string& d : split_list(flags.text("dtypes", "fp32,fp16,bf16"))) dtypes.push_back(parse_dtype(d));
  if (dtypes.empty()) throw UsageError("--dtypes expects a list of fp32, fp16, bf16");
  const auto seqlens = integer_list("--seqlens", flags.text("seqlens", "128,512,2048"));
  const auto dims = integer_list("--head-dims", flags.text("head-dims", "64,128"));
  std::vector<AuditInput> inputs;
  const std::string input_text = flags.text("inputs", "all");
  for (const std::string& name :
       split_list(input_text == "all" ? "random,large_logits,softcap_limit,dominant_key,masked_rows" : input_text)) {
    inputs.push_back(parse_audit_input(name));
  }
  const std::int64_t adv_seqlen = flags.integer("adversarial-seqlen", 2048, 1);
  const auto targets = targets_from(flags.text("impl", "auto"), split_list(flags.text("key-tiles", "default,32,128")));
  const std::uint64_t seed = flags.has("seed") ? static_cast<std::uint64_t>(flags.integer("seed", 0, 0))
                                               : static_cast<std::uint64_t>(
                                                     std::chrono::steady_clock::now().time_since_epoch().count());
  AuditOptions options;
  options.threads = static_cast<int>(flags.integer("threads", 0, 0));
  options.inject_error = flags.number("inject-error", 0.0);
  const bool json = flags.has("json");
  const std::string plot = flags.text("plot", "");

  AuditCase base;
  base.batch = flags.integer("batch", 1, 1);
  base.heads_q = flags.integer("heads", 2, 1);
  base.heads_kv = flags.integer("kv-heads", 1, 1);
  base.causal = !flags.has("no-mask");
  base.backward = !flags.has("forward-only");

  std::vector<AuditCase> cases;
  std::uint64_t case_index = 0;
  for (const AuditInput input : inputs) {
    for (const DType dtype : dtypes) {
      const auto lengths = input == AuditInput::random ? seqlens : std::vector<std::int64_t>{adv_seqlen};
      const auto case_dims = input == AuditInput::random ? dims : std::vector<std::int64_t>{dims.front()};
      for (const std::int64_t s : lengths) {
        for (const std::int64_t d : case_dims) {
          AuditCase c = base;
          c.input = input;
          c.dtype = dtype;
          c.seqlen = s;
          c.dim = d;
          c.seed = seed + 1000003 * ++case_index;  // each case its own stream; --seed replays the whole sweep
          cases.push_back(c);
        }
      }
    }
  }

  FILE* plot_json = nullptr;
  if (!plot.empty()) {
    plot_json = std::fopen((plot + ".jsonl").c_str(), "w");
    if (plot_json == nullptr) throw Error(ErrorCode::invalid_argument, "--plot: cannot write " + plot + ".jsonl");
  }
  if (!json) {
    std::printf("ioattn check: %zu cases, seed %llu (replay with --seed %llu), backends: %s\n", cases.size(),
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed), backends().c_str());
    std::fputs(kTableHeader, stdout);
  }
  int failed = 0, runs_judged = 0;
  std::string failures;
  for (const AuditCase& c : cases) {
    for (const AuditRun& run : run_audit_case(c, targets, options)) {
      std::string lines;
      if (run.tensors.empty()) {
        lines = json_line(c, run, nullptr) + "\n";
      } else {
        for (const TensorAudit& t : run.tensors) lines += json_line(c, run, &t) + "\n";
      }
      if (json) std::fputs(lines.c_str(), stdout);
      if (plot_json != nullptr) std::fputs(lines.c_str(), plot_json);
      if (!json) std::fputs(table_line(c, run).c_str(), stdout);
      if (run.impl == "naive") continue;
      ++runs_judged;
      if (!run.pass()) {
        ++failed;
        failures += "  " + std::string(audit_input_name(c.input)) + " " + dtype_name(c.dtype) + " seqlen " +
                    std::to_string(c.seqlen) + " dim " + std::to_string(c.dim) + " " + run.impl + " " +
                    tiles_text(run.tiles) + ":\n" + failure_detail(run);
      }
    }
    std::fflush(stdout);
  }
  if (plot_json != nullptr) {
    std::fclose(plot_json);
    const std::string command = "python3 \"" IOATTN_SOURCE_DIR "/scripts/numerics-plot.py\" \"" + plot +
                                ".jsonl\" --out \"" + plot + "\"";
    if (std::system(command.c_str()) != 0) {
      throw Error(ErrorCode::invalid_argument, "--plot: the plot script failed: " + command);
    }
  }
  if (!json) {
    if (failed == 0) {
      std::printf("check: pass (%d runs within 2x naive + allowance)\n", runs_judged);
    } else {
      std::printf("check: FAIL (%d of %d runs over the bound)\n%s", failed, runs_judged, failures.c_str());
    }
  } else if (failed > 0) {
    std::fprintf(stderr, "ioattn check: FAIL (%d of %d runs over the bound)\n%s", failed, runs_judged,
                 failures.c_str());
  }
  return failed == 0 ? kExitOk : kExitCheckFailed;
}

}  // namespace ioattn::cli
