# The attention case table (tests/support/) run against every backend present, and the reference's own checks.
add_library(ioattn_attention_support STATIC
  ${CMAKE_CURRENT_SOURCE_DIR}/support/random.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/support/buffers.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/support/cases.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/support/harness.cpp)
target_link_libraries(ioattn_attention_support PUBLIC ioattn_test_support OpenMP::OpenMP_CXX)
target_compile_options(ioattn_attention_support PRIVATE -Wall -Wextra)

ioattn_add_test(test_attention
  ${CMAKE_CURRENT_SOURCE_DIR}/attention/test_attention.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/attention/test_compare.cpp
  LABELS attention TIMEOUT 900)
target_link_libraries(test_attention PRIVATE ioattn_attention_support)

ioattn_add_test(test_reference_fd ${CMAKE_CURRENT_SOURCE_DIR}/attention/test_reference_fd.cpp LABELS attention)
target_link_libraries(test_reference_fd PRIVATE ioattn_attention_support)
