// `ioattn demo`: the project's main job. One embedded problem, forward and backward, timed, measured and checked.
#include <algorithm>
#include <chrono>
#include <cstdio>
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

// The embedded problem: a GQA layer of a mid-sized model (2 x 4096 tokens, 16 query heads over 4 kv heads).
ProblemSpec demo_problem() { return ProblemSpec{}; }

// --quick: small enough to run in well under a second on one core, still GQA and causal.
ProblemSpec quick_problem() {
  ProblemSpec s;
  s.batch = 1;
  s.heads_q = 4;
  s.heads_kv = 2;
  s.seqlen_q = s.seqlen_k = 256;
  s.dim_qk = s.dim_v = 64;
  return s;
}

constexpr int kCpuWarmup = 0, kCpuRepeat = 1, kCudaWarmup = 3, kCudaRepeat = 10;

std::vector<FlagSpec> demo_flags() {
  std::vector<FlagSpec> flags = {
      {"quick", FlagKind::boolean, "", "a small problem (batch 1, heads 4/2, seqlen 256, head dim 64) instead", ""},
  };
  for (FlagSpec& f : problem_flag_specs(demo_problem())) flags.push_back(std::move(f));
  for (FlagSpec& f : run_flag_specs("cpu 0, cuda 3", "cpu 1, cuda 10")) flags.push_back(std::move(f));
  return flags;
}

std::string phase_line(const PhaseResult& r, int repeat) {
  return fmt("%.3f ms", r.median_ms) + "  " + fmt("%.3f TFLOP/s", r.tflops) + "  (median of " +
         std::to_string(repeat) + ", " + fmt("%.3g GFLOP", r.flops / 1e9) + ")";
}

std::string memory_part(const char* name, const PhaseResult& r, Device device) {
  return std::string(name) + " " + format_bytes(static_cast<double>(r.peak_extra_bytes())) + " (workspace " +
         format_bytes(static_cast<double>(r.workspace_bytes)) + " + " + MemoryProbe::method(device) + " " +
         format_bytes(static_cast<double>(r.measured_bytes)) + ")";
}

std::string error_part(const char* name, const TensorError& e) {
  return std::string(name) + " " + (e.checked ? fmt("%.2e", e.max_abs) : std::string("not checked"));
}

}  // namespace

std::string demo_help() {
  return "usage: ioattn demo [flags]\n"
         "\n"
         "Runs one attention problem forward and backward and reports what it cost and how exact it was:\n"
         "the backend, the forward and backward times (median over --repeat) and TFLOP/s, the peak extra memory\n"
         "(the backend's workspace plus what the run took beyond its tensors: VmHWM growth on the CPU, the drop of\n"
         "cudaMemGetInfo on the GPU), the max error against the fp64 reference on a sample of rows, and the wall\n"
         "time. FLOPs count exactly the (query, key) pairs the mask leaves visible: forward 2 * pairs * (head_dim\n"
         "+ head_dim_v) (= 4*B*H*Sq*Sk*D without a mask), backward 2.5x the forward.\n"
         "\n"
         "The embedded problem: batch 2, 16 query heads over 4 kv heads, seqlen 4096, head dim 128, causal, bf16.\n"
         "It runs on the GPU when this build has CUDA and a GPU is present, else on the CPU. Any flag below\n"
         "overrides one part of the problem. Exit status: 0 ok, 1 error, 2 bad flag, 3 check failed.\n"
         "\n"
         "Flags:\n" +
         format_flags_help(demo_flags()) +
         "\n"
         "Examples:\n"
         "  ioattn demo\n"
         "  ioattn demo --quick --device cpu\n"
         "  ioattn demo --seqlen 8192 --head-dim 64 --heads 32 --kv-heads 32\n";
}

int run_demo(int argc, char** argv) {
  const auto wall_start = std::chrono::steady_clock::now();
  const std::vector<FlagSpec> specs = demo_flags();
  const ParsedFlags flags = parse_flags("ioattn demo", specs, argc, argv);
  if (flags.help_requested) {
    std::fputs(demo_help().c_str(), stdout);
    return kExitOk;
  }
  const ProblemSpec spec = problem_from_flags(flags, flags.has("quick") ? quick_problem() : demo_problem());
  const RunOptions options = run_options_from_flags(flags, kCpuWarmup, kCpuRepeat, kCudaWarmup, kCudaRepeat);

  std::printf("ioattn demo: exact attention, forward and backward, checked against the fp64 reference\n");
  std::printf("problem:   %s\n", describe_problem(spec).c_str());
  std::fflush(stdout);
  AttentionRun run(spec, options, /*with_backward=*/true);
  std::printf("device:    %s\n", run.device_text().c_str());
  std::fflush(stdout);
  const PhaseResult fwd = run.forward();
  std::printf("backend:   %s\n", run.backend().c_str());
  std::printf("forward:   %s\n", phase_line(fwd, options.repeat).c_str());
  std::fflush(stdout);
  const PhaseResult bwd = run.backward();
  std::printf("backward:  %s\n", phase_line(bwd, options.repeat).c_str());
  std::printf("peak extra memory: %s; %s; beyond %s of tensors\n",
              memory_part("forward", fwd, options.device).c_str(),
              memory_part("backward", bwd, options.device).c_str(),
              format_bytes(static_cast<double>(run.tensor_bytes())).c_str());
  std::fflush(stdout);

  const CheckReport check =
      check_against_reference(spec, run.inputs(), run.download(), /*backward=*/true, options.threads);
  std::printf("max error: %s, %s, %s, %s, %s (fp64 reference on %s)\n", error_part("out", check.out).c_str(),
              error_part("lse", check.lse).c_str(), error_part("dq", check.dq).c_str(),
              error_part("dk", check.dk).c_str(), error_part("dv", check.dv).c_str(), check.sample.c_str());
  double worst = 0.0;
  for (const TensorError* e : {&check.out, &check.lse, &check.dq, &check.dk, &check.dv}) {
    if (e->checked) worst = std::max(worst, e->normalized());
  }
  std::printf("check:     %s (largest error relative to the tensor's largest value %.2e, bound %.2e; %lld non-finite "
              "outputs)\n",
              check.pass ? "pass" : "FAIL", worst, check.tolerance, static_cast<long long>(check.nonfinite));
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  std::printf("wall time: %.1f s\n", wall_s);
  return check.pass ? kExitOk : kExitCheckFailed;
}

}  // namespace ioattn::cli
