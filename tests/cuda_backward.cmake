# GPU-only tests of the cuda backward (src/cuda/sm80/backward*): they skip, saying so, without a GPU.
if(IOATTN_CUDA AND TARGET ioattn_attention_support)
  ioattn_add_test(test_cuda_backward ${CMAKE_CURRENT_SOURCE_DIR}/cuda/backward_test.cpp LABELS cuda TIMEOUT 600)
  target_link_libraries(test_cuda_backward PRIVATE ioattn_attention_support)
  string(REPLACE ";" "," _ioattn_bwd_dims "${IOATTN_CUDA_HEAD_DIMS}")
  string(REPLACE ";" "," _ioattn_bwd_dtypes "${IOATTN_CUDA_DTYPES}")
  target_compile_definitions(test_cuda_backward PRIVATE
    IOATTN_TEST_CUDA_HEAD_DIMS="${_ioattn_bwd_dims}" IOATTN_TEST_CUDA_DTYPES="${_ioattn_bwd_dtypes}")
endif()
