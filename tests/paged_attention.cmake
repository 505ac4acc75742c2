# Paged attention (tests/paged/paged_attention_test.cpp) against every paged backend present, judged by the fp64
# dense reference on the same K/V laid out contiguously. Kept under a minute on 2 cores.
ioattn_add_test(ioattn_paged_attention_tests
  ${CMAKE_CURRENT_SOURCE_DIR}/paged/paged_attention_test.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/paged/paged_support.cpp
  LABELS paged TIMEOUT 300)
target_link_libraries(ioattn_paged_attention_tests PRIVATE ioattn_attention_support)
target_compile_options(ioattn_paged_attention_tests PRIVATE -Wall -Wextra -Wno-missing-field-initializers)
