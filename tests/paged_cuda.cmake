# GPU-only tests of the cuda paged backend (src/cuda/paged/): they skip, saying so, without a GPU. They reuse the
# paged test support (tests/paged/paged_support.*: the cases made concrete, the fp64 reference on contiguous K/V).
if(IOATTN_CUDA AND TARGET ioattn_attention_support)
  ioattn_add_test(test_cuda_paged
    ${CMAKE_CURRENT_SOURCE_DIR}/paged/cuda_paged_test.cpp
    ${CMAKE_CURRENT_SOURCE_DIR}/paged/paged_support.cpp
    LABELS cuda paged TIMEOUT 900)
  target_link_libraries(test_cuda_paged PRIVATE ioattn_attention_support)
  target_compile_options(test_cuda_paged PRIVATE -Wall -Wextra -Wno-missing-field-initializers)

  # A small split decode for compute-sanitizer (scripts/device-check's paged step); not a CTest test.
  add_executable(cuda_paged_sanitize ${CMAKE_CURRENT_SOURCE_DIR}/paged/cuda_paged_sanitize.cpp)
  target_link_libraries(cuda_paged_sanitize PRIVATE ioattn CUDA::cudart)
endif()
