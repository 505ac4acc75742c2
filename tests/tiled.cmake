# The tiled CPU backend's own tests (the shared case table in attention.cmake runs it too).
if(TARGET ioattn_attention_support)
  ioattn_add_test(test_tiled ${CMAKE_CURRENT_SOURCE_DIR}/tiled/test_tiled.cpp LABELS tiled)
  target_link_libraries(test_tiled PRIVATE ioattn_attention_support)
  # The same tests on the 4-lane (SSE2) variant of the kernels, which AVX2 machines would otherwise never run.
  add_test(NAME test_tiled_baseline_isa COMMAND test_tiled)
  set_tests_properties(test_tiled_baseline_isa PROPERTIES ENVIRONMENT "IOATTN_TILED_ISA=baseline" LABELS tiled
                                                          TIMEOUT 600)
endif()

ioattn_add_test(test_tiled_memory ${CMAKE_CURRENT_SOURCE_DIR}/tiled/test_tiled_memory.cpp
                ${CMAKE_CURRENT_SOURCE_DIR}/support/random.cpp LABELS tiled memory TIMEOUT 600)
