# Runs the ioattn tool once and judges its exit status and output (stdout and stderr together).
#   cmake -DEXE=<tool> -DARGS="<arguments>" -DEXIT=0|nonzero|<n> [-DEXPECT_0=<regex> ... -DEXPECT_9=<regex>]
#         -P expect_run.cmake
# Every EXPECT_<i> must match somewhere in the output. ('.' in CMake regexes also matches newlines.)
separate_arguments(args UNIX_COMMAND "${ARGS}")
execute_process(COMMAND "${EXE}" ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${out}${err}")
message(STATUS "ioattn ${ARGS}\n--- exit ${rc}, output:\n${all}---")

if(EXIT STREQUAL "nonzero")
  if(rc EQUAL 0)
    message(FATAL_ERROR "expected a non-zero exit status, got 0")
  endif()
elseif(NOT rc EQUAL EXIT)
  message(FATAL_ERROR "expected exit status ${EXIT}, got '${rc}'")
endif()

foreach(i RANGE 0 9)
  if(DEFINED EXPECT_${i})
    if(NOT all MATCHES "${EXPECT_${i}}")
      message(FATAL_ERROR "output does not match the expected pattern: ${EXPECT_${i}}")
    endif()
  endif()
endforeach()
