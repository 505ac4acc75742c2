# GPU-only tests of the Hopper backend "cuda_sm90" (src/cuda/sm90/): they skip, saying why, without a Hopper GPU.
# The shared case table (tests/attention) runs cuda_sm90 too; these add multi-tile shapes for every compiled head dim.
if(IOATTN_CUDA AND TARGET ioattn_attention_support)
  ioattn_add_test(test_cuda_sm90_forward ${CMAKE_CURRENT_SOURCE_DIR}/cuda/sm90_forward_test.cpp LABELS cuda TIMEOUT 900)
  target_link_libraries(test_cuda_sm90_forward PRIVATE ioattn_attention_support)
  # The tests read the build's switches, so a cut-down build tests what it holds.
  string(REPLACE ";" "," _ioattn_sm90_dims "${IOATTN_CUDA_HEAD_DIMS}")
  string(REPLACE ";" "," _ioattn_sm90_dtypes "${IOATTN_CUDA_DTYPES}")
  target_compile_definitions(test_cuda_sm90_forward PRIVATE
    IOATTN_TEST_CUDA_HEAD_DIMS="${_ioattn_sm90_dims}" IOATTN_TEST_CUDA_DTYPES="${_ioattn_sm90_dtypes}")
endif()

# The Hopper backward: dq, dk, dv against the fp64 reference on shapes, masks and layouts the case table lacks.
if(IOATTN_CUDA AND TARGET ioattn_attention_support)
  ioattn_add_test(test_cuda_sm90_backward ${CMAKE_CURRENT_SOURCE_DIR}/cuda/sm90_backward_test.cpp LABELS cuda
                  TIMEOUT 900)
  target_link_libraries(test_cuda_sm90_backward PRIVATE ioattn_attention_support)
  string(REPLACE ";" "," _ioattn_sm90_bwd_dims "${IOATTN_CUDA_HEAD_DIMS}")
  string(REPLACE ";" "," _ioattn_sm90_bwd_dtypes "${IOATTN_CUDA_DTYPES}")
  target_compile_definitions(test_cuda_sm90_backward PRIVATE
    IOATTN_TEST_CUDA_HEAD_DIMS="${_ioattn_sm90_bwd_dims}" IOATTN_TEST_CUDA_DTYPES="${_ioattn_sm90_bwd_dtypes}")
endif()

# The Hopper FP8 forward: out and lse against the fp64 oracle on the dequantized operands, within twice a naive
# program's error in the kernel's precision.
if(IOATTN_CUDA AND TARGET ioattn_attention_support)
  ioattn_add_test(test_cuda_sm90_fp8 ${CMAKE_CURRENT_SOURCE_DIR}/cuda/sm90_fp8_test.cpp
                  ${CMAKE_CURRENT_SOURCE_DIR}/fp8/fp8_util.cpp LABELS cuda TIMEOUT 900)
  target_link_libraries(test_cuda_sm90_fp8 PRIVATE ioattn_attention_support)
  target_compile_definitions(test_cuda_sm90_fp8 PRIVATE
    IOATTN_TEST_CUDA_HEAD_DIMS="${_ioattn_sm90_dims}" IOATTN_TEST_CUDA_DTYPES="${_ioattn_sm90_dtypes}")
endif()

# The FP8 forward's key order against cute's register layouts: host code, runs without a GPU (CI included).
if(IOATTN_CUDA)
  find_package(CUDAToolkit REQUIRED)
  ioattn_add_test(test_sm90_fp8_key_order ${CMAKE_CURRENT_SOURCE_DIR}/cuda/sm90_fp8_layout_test.cpp LABELS fp8)
  target_include_directories(test_sm90_fp8_key_order PRIVATE "${IOATTN_CUTLASS_DIR}" ${CUDAToolkit_INCLUDE_DIRS}
                             "${CUDAToolkit_INCLUDE_DIRS}/cccl")
endif()
