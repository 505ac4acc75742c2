# Tests of the `ioattn` command line (tools/ioattn): the built tool run as a process, plus unit tests of its flag
# parser, FLOP count and reference checker. (The cli area owns this file and tests/cli/.)
if(NOT TARGET ioattn_cli)
  return()
endif()

set(_cli_dir ${CMAKE_CURRENT_SOURCE_DIR}/cli)

# ioattn_cli_test(NAME ARGS "<arguments>" EXIT 0|nonzero|<n> EXPECT <regex>...)
function(ioattn_cli_test name)
  cmake_parse_arguments(ARG "" "ARGS;EXIT" "EXPECT" ${ARGN})
  set(defines -DEXE=$<TARGET_FILE:ioattn_cli> "-DARGS=${ARG_ARGS}" -DEXIT=${ARG_EXIT})
  set(i 0)
  foreach(regex IN LISTS ARG_EXPECT)
    list(APPEND defines "-DEXPECT_${i}=${regex}")
    math(EXPR i "${i} + 1")
  endforeach()
  add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} ${defines} -P ${_cli_dir}/expect_run.cmake)
  set_tests_properties(${name} PROPERTIES LABELS cli TIMEOUT 300)
endfunction()

# ioattn_cli_json_test(NAME ARGS "<arguments>" ROWS "fwd bwd" MAX_ERR <number>)
function(ioattn_cli_json_test name)
  cmake_parse_arguments(ARG "" "ARGS;ROWS;MAX_ERR" "" ${ARGN})
  add_test(NAME ${name}
           COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:ioattn_cli> "-DARGS=${ARG_ARGS}" "-DROWS=${ARG_ROWS}"
                   -DMAX_ERR=${ARG_MAX_ERR} -P ${_cli_dir}/check_json.cmake)
  set_tests_properties(${name} PROPERTIES LABELS cli TIMEOUT 300)
endfunction()

# Help and version.
ioattn_cli_test(cli_help ARGS "--help" EXIT 0
                EXPECT "usage: ioattn <command>" "  demo +run" "  bench +time" "--version")
ioattn_cli_test(cli_help_command ARGS "help bench" EXIT 0 EXPECT "usage: ioattn bench")
ioattn_cli_test(cli_no_command ARGS "" EXIT 2 EXPECT "usage: ioattn")
ioattn_cli_test(cli_unknown_command ARGS "frobnicate" EXIT 2 EXPECT "unknown command 'frobnicate'")
ioattn_cli_test(cli_version ARGS "--version" EXIT 0
                EXPECT "ioattn [0-9]+\\.[0-9]+\\.[0-9]+" "backends: [a-z ]*reference" "cuda devices: [0-9]+")
ioattn_cli_test(cli_demo_help ARGS "demo --help" EXIT 0
                EXPECT "usage: ioattn demo" "batch 2, 16 query heads over 4 kv heads, seqlen 4096, head dim 128"
                       "--quick" "--device auto.cpu.cuda" "Examples:")
ioattn_cli_test(cli_bench_help ARGS "bench --help" EXIT 0
                EXPECT "usage: ioattn bench" "--kv-heads N" "--window L,R" "--json" "--check" "--top-left"
                       "\\[default: bf16\\]" "Examples:")

# The main job, small: every field of the report, a passing check, the wall time.
ioattn_cli_test(cli_demo_quick ARGS "demo --quick --device cpu" EXIT 0
                EXPECT "problem: +batch 1, heads 4 \\(kv 2\\), seqlen 256 x 256, head dim 64, bf16, causal"
                       "device: +cpu \\([0-9]+ threads\\)"
                       "backend: +[a-z]+"
                       "forward: +[0-9.]+ ms +[0-9.]+ TFLOP/s"
                       "backward: +[0-9.]+ ms +[0-9.]+ TFLOP/s"
                       "peak extra memory: forward [0-9.]+ [KMG]?i?B \\(workspace [0-9.]+ [KMG]?i?B \\+ VmHWM growth"
                       "max error: out [0-9.]+e[-+][0-9]+, lse [0-9.]+e[-+][0-9]+, dq [0-9.]+e[-+][0-9]+, dk [0-9.]"
                       "check: +pass"
                       "wall time: [0-9.]+ s")
# Flags override the demo's problem.
ioattn_cli_test(cli_demo_override ARGS "demo --quick --device cpu --seqlen-q 77 --seqlen-k 130 --head-dim 32 --no-mask"
                EXIT 0 EXPECT "seqlen 77 x 130, head dim 32, bf16, no mask" "check: +pass")

# Bench: JSON lines with a small max_err, over dtypes, masks and odd shapes; whole-problem and sampled checks.
ioattn_cli_json_test(cli_bench_json_fp32_window
  ARGS "bench --device cpu --batch 2 --heads 6 --kv-heads 3 --seqlen-q 113 --seqlen-k 203 --head-dim 40 --dtype fp32 --window 30,5 --top-left --backward --check --json --repeat 2 --warmup 1"
  ROWS "fwd bwd" MAX_ERR 1e-4)
ioattn_cli_json_test(cli_bench_json_fp16_causal
  ARGS "bench --device cpu --batch 1 --heads 4 --kv-heads 1 --seqlen-q 203 --seqlen-k 113 --head-dim 64 --dtype fp16 --causal --softcap 20 --backward --check --json --repeat 1 --warmup 0"
  ROWS "fwd bwd" MAX_ERR 2e-2)
ioattn_cli_json_test(cli_bench_json_bf16_sampled
  ARGS "bench --device cpu --batch 2 --heads 4 --kv-heads 2 --seqlen 1000 --head-dim 64 --dtype bf16 --causal --backward --check --json --repeat 1 --warmup 0"
  ROWS "fwd bwd" MAX_ERR 1e-1)
ioattn_cli_json_test(cli_bench_json_head_dim_v
  ARGS "bench --device cpu --batch 1 --heads 3 --kv-heads 3 --seqlen-q 17 --seqlen-k 1 --head-dim 96 --head-dim-v 64 --dtype fp32 --backward --check --json"
  ROWS "fwd bwd" MAX_ERR 1e-4)
ioattn_cli_json_test(cli_bench_json_forward_only
  ARGS "bench --device cpu --batch 1 --heads 2 --kv-heads 2 --seqlen 1 --head-dim 16 --dtype fp32 --check --json"
  ROWS "fwd" MAX_ERR 1e-4)
ioattn_cli_test(cli_bench_table ARGS "bench --device cpu --batch 1 --heads 2 --kv-heads 1 --seqlen 64 --head-dim 32 --backward --check"
                EXIT 0 EXPECT "dir +time_ms +TFLOP/s +peak_extra +max_err" "fwd +[0-9.]+ +[0-9.]+" "bwd +[0-9.]+"
                              "check: +pass")

# Bad problems: the API's error, naming the argument, and a non-zero exit; bad flags: a usage error (exit 2).
ioattn_cli_test(cli_bench_bad_heads ARGS "bench --device cpu --heads 6 --kv-heads 4 --seqlen 64 --head-dim 32" EXIT 1
                EXPECT "ioattn bench: error: .*heads_q.*multiple of heads_kv")
ioattn_cli_test(cli_bench_bad_window ARGS "bench --device cpu --seqlen 64 --head-dim 32 --window -2,0" EXIT 1
                EXPECT "error: .*window_left")
ioattn_cli_test(cli_bench_bad_head_dim ARGS "bench --device cpu --seqlen 16 --head-dim 1000" EXIT 1
                EXPECT "error: .*head_dim")
ioattn_cli_test(cli_bench_unknown_flag ARGS "bench --frobnicate 3" EXIT 2 EXPECT "unknown flag '--frobnicate'")
ioattn_cli_test(cli_bench_bad_integer ARGS "bench --batch two" EXIT 2 EXPECT "--batch expects an integer, got 'two'")
ioattn_cli_test(cli_bench_bad_dtype ARGS "bench --dtype fp64" EXIT 2 EXPECT "--dtype expects fp32, fp16 or bf16")
ioattn_cli_test(cli_bench_missing_value ARGS "bench --seqlen" EXIT 2 EXPECT "--seqlen expects an integer")
ioattn_cli_test(cli_bench_two_masks ARGS "bench --causal --window 4,0" EXIT 2 EXPECT "exclude each other")
ioattn_cli_test(cli_bench_bad_device ARGS "bench --device tpu" EXIT 2 EXPECT "--device expects auto, cpu or cuda")
add_test(NAME cli_device_cuda
         COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:ioattn_cli> -P ${_cli_dir}/device_cuda.cmake)
set_tests_properties(cli_device_cuda PROPERTIES LABELS cli TIMEOUT 300)

# Unit tests of the tool's parts (flags, FLOP count, the checker catching what it must).
ioattn_add_test(cli_unit_tests cli/cli_unit_test.cpp LABELS cli)
target_link_libraries(cli_unit_tests PRIVATE ioattn_cli_core)

# `ioattn decode`: a paged decoding step, checked against the fp64 reference; chunked prefill with a causal mask.
ioattn_cli_test(cli_decode_check ARGS "decode --device cpu --batch 3 --context 700 --heads 8 --kv-heads 2 --check"
                EXIT 0 EXPECT "decode: batch 3, context 700, 1 new token" "backend [a-z]+, split [0-9]+ keys"
                              "K\\+V read [0-9.]+ MB at [0-9.]+ GB/s, max_err [0-9.]+e[-+][0-9]+ \\(pass\\)")
ioattn_cli_test(cli_decode_prefill_json
                ARGS "decode --device cpu --batch 2 --context 300 --new-tokens 5 --causal --page-size 7 --split 128 --dtype fp16 --check --json"
                EXIT 0 EXPECT "\"split_tokens\":128" "\"kv_gbps\":[0-9.]+" "\"max_err\":[0-9.e-]+")
ioattn_cli_test(cli_decode_bad_split ARGS "decode --device cpu --split 100" EXIT 1
                EXPECT "split.tokens: expected a positive multiple of 64")
