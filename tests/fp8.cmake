# FP8 (e4m3): conversions, quantization (scales, blocks, Hadamard rotation), the FP8 forward against the fp64
# reference, argument checks. The error table of docs/NUMERICS.md comes from ioattn_fp8_numerics (not a test: it
# runs minutes on two cores; see its header for how to run it).
ioattn_add_test(ioattn_fp8_tests
  fp8/convert_test.cpp
  fp8/quantize_test.cpp
  fp8/forward_test.cpp
  fp8/validate_test.cpp
  fp8/fp8_util.cpp
  support/random.cpp
  LABELS fp8
  TIMEOUT 120)


add_executable(ioattn_fp8_numerics fp8/numerics_table.cpp fp8/fp8_util.cpp)
target_link_libraries(ioattn_fp8_numerics PRIVATE ioattn_test_support OpenMP::OpenMP_CXX)

# Against the CUDA toolkit's FP8 conversions (host emulation of the hardware's rounding; no GPU needed), wherever the
# toolkit's headers are installed, CPU-only builds included.
find_package(CUDAToolkit QUIET)
if(CUDAToolkit_FOUND)
  ioattn_add_test(ioattn_fp8_cuda_convert_tests fp8/convert_vs_cuda_test.cpp LABELS fp8 TIMEOUT 120)
  target_include_directories(ioattn_fp8_cuda_convert_tests PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(ioattn_fp8_cuda_convert_tests PRIVATE -O2)  # ~350M conversions compared
endif()
