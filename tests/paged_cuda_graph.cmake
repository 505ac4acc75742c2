# A paged forward captured in a CUDA graph (GPU only; skips without one).
if(IOATTN_CUDA AND TARGET ioattn_attention_support)
  ioattn_add_test(test_paged_cuda_graph ${CMAKE_CURRENT_SOURCE_DIR}/paged/cuda_graph_test.cpp LABELS cuda paged)
  target_link_libraries(test_paged_cuda_graph PRIVATE ioattn_attention_support)
endif()
