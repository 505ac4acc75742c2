#!/usr/bin/env bash
# Tuning run of the cuda backward ON a GPU machine, from the repository root: builds the library with the tuning
# variants (bf16, head dims 64 and 128, sm_90a), runs the GPU correctness tests once per variant (the shared case
# table's cuda cases and tests/cuda/backward_test.cpp, the variant picked by IOATTN_SM80_BWD_VARIANT), then times
# every variant against SDPA flash (tests/cuda/backward_variants.py). Logs under $OUT (or out/backward-tune).
# Environment: BWD_VARIANTS (default "0,9,13"), BWD_SEQLENS (default the grid), BWD_DIMS (default "64,128").
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-out/backward-tune}
mkdir -p "$out"
build=build-pbwd
variants=${BWD_VARIANTS:-0,9,13}
BWD_DIMS=${BWD_DIMS:-64,128}
tuning=$(echo "$variants" | tr ',' '\n' | grep -v '^0$' | paste -sd';')
cfg=(-S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIOATTN_CUDA=ON -DIOATTN_CUDA_ARCHS=90a
     "-DIOATTN_CUDA_HEAD_DIMS=64;128" -DIOATTN_CUDA_DTYPES=bf16 -DIOATTN_BUILD_BENCH=OFF
     -DIOATTN_SM80_BWD_VARIANTS=ON "-DIOATTN_SM80_BWD_TUNING_VARIANTS=$tuning")
[[ -d .deps/cutlass/include ]] && ! python3 -c 'import cutlass_library' 2>/dev/null &&
  cfg+=("-DIOATTN_CUTLASS_DIR=$PWD/.deps/cutlass/include")
t0=$SECONDS
cmake "${cfg[@]}" >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target ioattn test_attention test_cuda_backward -- -k 0 >>"$out/build.log" 2>&1 ||
  { grep -A20 FAILED: "$out/build.log" | head -60; exit 1; }
echo "build: $((SECONDS - t0)) s"
# The variants' tests run side by side (CPU-bound fp64 references), all before any timing.
for v in ${variants//,/ }; do
  (
    IOATTN_SM80_BWD_VARIANT=$v timeout 100 "$build/tests/test_attention" --gtest_filter='*cuda*' --gtest_brief=1 \
      >"$out/tests_v$v.log" 2>&1
    a=$?
    IOATTN_SM80_BWD_VARIANT=$v timeout 100 "$build/tests/test_cuda_backward" --gtest_brief=1 >>"$out/tests_v$v.log" 2>&1
    echo "rc $a $?" >>"$out/tests_v$v.log"
  ) &
done
t0=$SECONDS
wait
summary=("tests: $((SECONDS - t0)) s")
for v in ${variants//,/ }; do
  summary+=("v$v: $(tail -1 "$out/tests_v$v.log") (case table, backward tests) $(grep -h PASSED "$out/tests_v$v.log" | tr '\n' ' ')")
  grep -q "^rc 0 0$" "$out/tests_v$v.log" || grep -h -B2 -A8 "FAILED\|Failure" "$out/tests_v$v.log" | head -20
done
printf '%s\n' "${summary[@]}"
PYTHONUNBUFFERED=1 timeout ${BWD_BENCH_TIMEOUT:-200} python3 tests/cuda/backward_variants.py "$build/libioattn.so" "${BWD_DIMS}" \
  "${BWD_SEQLENS:-512,1024,2048,4096,8192,16384}" "$variants" 2>&1 | tee "$out/bench.log"
# The SDPA comparison (bench/sdpa_compare.py, forward and backward, against flash and cuDNN) of the default, then
# of the best variant per head dim by the geometric mean above when that is not the default.
if [[ ${BWD_SDPA:-1} == 1 ]]; then
  PYTHONUNBUFFERED=1 timeout 150 python3 bench/sdpa_compare.py --lib "$build/libioattn.so" --dims "${BWD_DIMS:-64,128}" \
    --seqlens "${BWD_SEQLENS:-512,1024,2048,4096,8192,16384}" >"$out/sdpa.log" 2>&1
  for D in ${BWD_DIMS//,/ }; do
    best=$(awk -v d="D$D" '$1 == d { v = substr($2, 2); sub(":", "", v); if ($3 > m) { m = $3; b = v } } END { print b }' \
      "$out/bench.log")
    if [[ -n $best && $best != 0 ]]; then
      echo "=== D $D: IOATTN_SM80_BWD_VARIANT=$best" >>"$out/sdpa.log"
      IOATTN_SM80_BWD_VARIANT=$best PYTHONUNBUFFERED=1 timeout 100 python3 bench/sdpa_compare.py \
        --lib "$build/libioattn.so" --dims "$D" --seqlens "${BWD_SEQLENS:-512,1024,2048,4096,8192,16384}" \
        >>"$out/sdpa.log" 2>&1
    fi
  done
  grep -E "^\||^===|^20|Error|error" "$out/sdpa.log"
fi
printf '%s\n' "${summary[@]}"
