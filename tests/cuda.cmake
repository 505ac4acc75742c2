# GPU-only tests of the cuda backend (src/cuda/): they skip, saying so, without a GPU. The shared case table
# (tests/attention) runs the cuda backend too; these add multi-tile shapes for every compiled head dim.
if(IOATTN_CUDA AND TARGET ioattn_attention_support)
  ioattn_add_test(test_cuda_forward ${CMAKE_CURRENT_SOURCE_DIR}/cuda/forward_test.cpp LABELS cuda TIMEOUT 900)
  target_link_libraries(test_cuda_forward PRIVATE ioattn_attention_support)
  # The tests read the build's switches, so a cut-down build tests what it holds.
  string(REPLACE ";" "," _ioattn_dims "${IOATTN_CUDA_HEAD_DIMS}")
  string(REPLACE ";" "," _ioattn_dtypes "${IOATTN_CUDA_DTYPES}")
  target_compile_definitions(test_cuda_forward PRIVATE
    IOATTN_TEST_CUDA_HEAD_DIMS="${_ioattn_dims}" IOATTN_TEST_CUDA_DTYPES="${_ioattn_dtypes}")

  # Decode shapes through the paged kernels (the cuda_decode backend); the paged kernels are always compiled.
  ioattn_add_test(test_cuda_dense_decode ${CMAKE_CURRENT_SOURCE_DIR}/cuda/dense_decode_test.cpp LABELS cuda
                  TIMEOUT 900)
  target_link_libraries(test_cuda_dense_decode PRIVATE ioattn_attention_support)

  # A small forward + backward for compute-sanitizer (scripts/device-check); not a CTest test.
  add_executable(cuda_sanitize_small ${CMAKE_CURRENT_SOURCE_DIR}/cuda/sanitize_small.cpp)
  target_link_libraries(cuda_sanitize_small PRIVATE ioattn CUDA::cudart)
endif()
# The backward's own GPU tests (another area's file).
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/cuda_backward.cmake)
  include(${CMAKE_CURRENT_SOURCE_DIR}/cuda_backward.cmake)
endif()
