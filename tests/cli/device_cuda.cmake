# `--device cuda`: runs and passes its check when the tool sees a GPU; is a clear error (exit 1, naming the flag)
# when it does not (no GPU, or a build without CUDA).
#   cmake -DEXE=<tool> -P device_cuda.cmake
execute_process(COMMAND "${EXE}" --version RESULT_VARIABLE rc OUTPUT_VARIABLE version)
if(NOT rc EQUAL 0 OR NOT version MATCHES "cuda devices: ([0-9]+)")
  message(FATAL_ERROR "ioattn --version: expected a 'cuda devices: N' line, got (exit ${rc}):\n${version}")
endif()
set(gpus ${CMAKE_MATCH_1})
execute_process(COMMAND "${EXE}" bench --device cuda --batch 1 --heads 4 --kv-heads 2 --seqlen 100 --head-dim 64
                        --dtype bf16 --causal --backward --check --json
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "cuda devices: ${gpus}; exit ${rc}\n${out}${err}")
if(gpus EQUAL 0)
  if(NOT rc EQUAL 1 OR NOT err MATCHES "--device cuda: ")
    message(FATAL_ERROR "without a GPU, expected exit 1 and an error naming --device cuda")
  endif()
elseif(NOT rc EQUAL 0 OR NOT out MATCHES "\"device\":\"cuda\"" OR NOT out MATCHES "\"check\":\"pass\"")
  message(FATAL_ERROR "with a GPU, expected a passing run on cuda")
endif()
