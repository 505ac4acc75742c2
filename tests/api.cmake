# The API layer: argument validation, backend dispatch, the C ABI.
ioattn_add_test(ioattn_api_tests
  api/validate_test.cpp
  api/dispatch_test.cpp
  api/c_api_test.cpp
  api/paged_c_api_test.cpp
  api/fp8_c_api_test.cpp
  api/tensor_test.cpp
  support/random.cpp
  LABELS api)

# ioattn.h must compile as plain C and work from a C program.
include(CheckLanguage)
check_language(C)
if(CMAKE_C_COMPILER)
  enable_language(C)
  add_executable(ioattn_c_abi_smoke api/c_abi_smoke.c)
  set_target_properties(ioattn_c_abi_smoke PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)
  target_compile_options(ioattn_c_abi_smoke PRIVATE -Wall -Wextra -pedantic -Werror)
  target_link_libraries(ioattn_c_abi_smoke PRIVATE ioattn m)
  add_test(NAME ioattn_c_abi_smoke COMMAND ioattn_c_abi_smoke)
  set_tests_properties(ioattn_c_abi_smoke PROPERTIES LABELS api TIMEOUT 60)
endif()

# ...and from Python through ctypes, when a Python interpreter is around (shared builds only: ctypes loads a .so).
find_package(Python3 COMPONENTS Interpreter QUIET)
if(Python3_Interpreter_FOUND AND BUILD_SHARED_LIBS)
  add_test(NAME ioattn_ctypes_smoke
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/api/ctypes_smoke.py $<TARGET_FILE:ioattn>)
  set_tests_properties(ioattn_ctypes_smoke PROPERTIES LABELS api TIMEOUT 60)
  # The paged calls through bench/ioattn_abi.py, the struct mirror the GPU benchmarks use.
  add_test(NAME ioattn_ctypes_paged_smoke
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/api/ctypes_paged_smoke.py $<TARGET_FILE:ioattn>
                   ${PROJECT_SOURCE_DIR}/bench)
  set_tests_properties(ioattn_ctypes_paged_smoke PROPERTIES LABELS api TIMEOUT 60)
endif()
