// `ioattn bench`: one problem from flags, timed forward (and backward), as a table or as JSON lines.
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "args.hpp"
#include "check.hpp"
#include "commands.hpp"
#include "problem.hpp"
#include "report.hpp"
#include "run.hpp"
#include "timing.hpp"

namespace ioattn::cli {
namespace {

// Same shape as the demo's problem, unmasked unless a mask flag says otherwise.
ProblemSpec bench_problem() {
  ProblemSpec s;
  s.mask = Mask::none();
  return s;
}

constexpr int kCpuWarmup = 1, kCpuRepeat = 3, kCudaWarmup = 5, kCudaRepeat = 20;

std::vector<FlagSpec> bench_flags() {
  std::vector<FlagSpec> flags;
  for (FlagSpec& f : problem_flag_specs(bench_problem())) flags.push_back(std::move(f));
  for (FlagSpec& f : run_flag_specs("cpu 1, cuda 5", "cpu 3, cuda 20")) flags.push_back(std::move(f));
  flags.push_back({"backward", FlagKind::boolean, "", "also time the backward (a separate row)", ""});
  flags.push_back({"check", FlagKind::boolean, "", "compare with the fp64 reference on a sample of rows (max_err)", ""});
  flags.push_back({"json", FlagKind::boolean, "", "one JSON object per line instead of the table", ""});
  return flags;
}

struct Row {
  const char* dir;  // "fwd" or "bwd"
  PhaseResult phase;
  std::optional<double> max_err;
  std::string errors_json;  // per-tensor fields
};

std::string tensor_error_json(const char* name, const TensorError& e) {
  return e.checked ? std::string(",\"err_") + name + "\":" + json_number(e.max_abs) : std::string();
}

std::string json_line(const ProblemSpec& s, const RunOptions& o, const std::string& backend, const Row& row,
                      const CheckReport* check) {
  const auto i = [](std::int64_t v) { return std::to_string(v); };
  std::string mask = s.mask.is_none() ? "none" : s.mask.is_causal() ? "causal" : "window";
  std::string line = std::string("{\"dir\":\"") + row.dir + "\"";
  line += ",\"batch\":" + i(s.batch) + ",\"heads\":" + i(s.heads_q) + ",\"kv_heads\":" + i(s.heads_kv);
  line += ",\"seqlen_q\":" + i(s.seqlen_q) + ",\"seqlen_k\":" + i(s.seqlen_k);
  line += ",\"head_dim\":" + i(s.dim_qk) + ",\"head_dim_v\":" + i(s.dim_v);
  line += std::string(",\"dtype\":\"") + dtype_name(s.dtype) + "\",\"mask\":\"" + mask + "\"";
  line += std::string(",\"causal\":") + (s.mask.is_causal() ? "true" : "false");
  line += std::string(",\"alignment\":\"") +
          (s.mask.alignment == Alignment::top_left ? "top_left" : "bottom_right") + "\"";
  line += ",\"window_left\":" + i(s.mask.window_left) + ",\"window_right\":" + i(s.mask.window_right);
  line += ",\"softcap\":" + json_number(s.softcap) + ",\"seed\":" + i(static_cast<std::int64_t>(s.seed));
  line += ",\"impl\":\"" + backend + "\",\"device\":\"" + to_string(o.device) + "\"";
  line += ",\"threads\":" + i(o.threads) + ",\"warmup\":" + i(o.warmup) + ",\"repeat\":" + i(o.repeat);
  line += ",\"time_ms\":" + json_number(row.phase.median_ms) + ",\"flops\":" + json_number(row.phase.flops) +
          ",\"tflops\":" + json_number(row.phase.tflops);
  line += ",\"workspace_bytes\":" + i(static_cast<std::int64_t>(row.phase.workspace_bytes)) +
          ",\"measured_bytes\":" + i(row.phase.measured_bytes) + ",\"peak_bytes\":" + i(row.phase.peak_extra_bytes());
  if (check != nullptr) {
    line += ",\"max_err\":" + json_number(*row.max_err) + row.errors_json;
    line += ",\"tolerance\":" + json_number(check->tolerance) + ",\"nonfinite\":" + i(check->nonfinite);
    line += std::string(",\"check\":\"") + (check->pass ? "pass" : "fail") + "\"";
  }
  return line + "}";
}

}  // namespace

std::string bench_help() {
  return "usage: ioattn bench [flags]\n"
         "\n"
         "Times one attention problem given by flags: the forward, and with --backward the backward too, each\n"
         "the median over --repeat runs after --warmup runs (outputs poisoned with NaN before each run). Prints a\n"
         "table, or with --json one JSON object per line (fwd and bwd rows apart) with the problem's fields,\n"
         "impl, device, time_ms, flops, tflops, workspace_bytes, measured_bytes, peak_bytes (workspace + the\n"
         "measured growth beyond the tensors), and with --check max_err (max |error| against the fp64 reference\n"
         "over out and lse, or dq, dk and dv), err_<tensor>, tolerance, nonfinite and check (pass/fail).\n"
         "The problem defaults to the demo's shape without a mask. A problem the API refuses (e.g. --heads 6\n"
         "--kv-heads 4) exits with status 1 and the API's message, which names the argument. Exit status: 0 ok,\n"
         "1 error, 2 bad flag, 3 --check failed.\n"
         "\n"
         "Flags:\n" +
         format_flags_help(bench_flags()) +
         "\n"
         "Examples:\n"
         "  ioattn bench --seqlen 2048 --causal --backward\n"
         "  ioattn bench --batch 1 --heads 8 --kv-heads 2 --seqlen-q 113 --seqlen-k 203 --head-dim 64 \\\n"
         "               --dtype fp16 --window 32,0 --device cpu --check --json\n";
}

int run_bench(int argc, char** argv) {
  const std::vector<FlagSpec> specs = bench_flags();
  const ParsedFlags flags = parse_flags("ioattn bench", specs, argc, argv);
  if (flags.help_requested) {
    std::fputs(bench_help().c_str(), stdout);
    return kExitOk;
  }
  const ProblemSpec spec = problem_from_flags(flags, bench_problem());
  const RunOptions options = run_options_from_flags(flags, kCpuWarmup, kCpuRepeat, kCudaWarmup, kCudaRepeat);
  const bool backward = flags.has("backward");
  const bool json = flags.has("json");

  AttentionRun run(spec, options, backward);
  std::vector<Row> rows;
  rows.push_back({"fwd", run.forward(), std::nullopt, {}});
  if (backward) rows.push_back({"bwd", run.backward(), std::nullopt, {}});

  std::optional<CheckReport> check;
  if (flags.has("check")) {
    check = check_against_reference(spec, run.inputs(), run.download(), backward, options.threads);
    rows[0].max_err = check->max_err_forward();
    rows[0].errors_json = tensor_error_json("out", check->out) + tensor_error_json("lse", check->lse);
    if (backward) {
      rows[1].max_err = check->max_err_backward();
      rows[1].errors_json = tensor_error_json("dq", check->dq) + tensor_error_json("dk", check->dk) +
                            tensor_error_json("dv", check->dv);
    }
  }

  const std::string backend = run.backend();
  if (json) {
    for (const Row& row : rows) {
      std::printf("%s\n", json_line(spec, options, backend, row, check ? &*check : nullptr).c_str());
    }
  } else {
    std::printf("problem: %s\n", describe_problem(spec).c_str());
    std::printf("device:  %s, backend %s, median of %d after %d warmup\n", run.device_text().c_str(),
                backend.c_str(), options.repeat, options.warmup);
    std::printf("%-4s %12s %10s %14s %12s\n", "dir", "time_ms", "TFLOP/s", "peak_extra", "max_err");
    for (const Row& row : rows) {
      std::printf("%-4s %12.3f %10.4f %14s %12s\n", row.dir, row.phase.median_ms, row.phase.tflops,
                  format_bytes(static_cast<double>(row.phase.peak_extra_bytes())).c_str(),
                  row.max_err ? fmt("%.3e", *row.max_err).c_str() : "-");
    }
    if (check) {
      std::printf("check:   %s against the fp64 reference on %s (bound %.2e relative; %lld non-finite outputs)\n",
                  check->pass ? "pass" : "FAIL", check->sample.c_str(), check->tolerance,
                  static_cast<long long>(check->nonfinite));
    }
  }
  return check && !check->pass ? kExitCheckFailed : kExitOk;
}

}  // namespace ioattn::cli
