# Installs the build into a fresh prefix, then configures, builds and runs tests/install/consumer against it.
# Run by CTest as: cmake -DBUILD_DIR=... -DWORK_DIR=... -DCONSUMER_SOURCE=... -DREADME_EXAMPLE=... -DCONFIG=...
#                        -DCXX_COMPILER=... -P run_install_test.cmake
foreach(var BUILD_DIR WORK_DIR CONSUMER_SOURCE README_EXAMPLE CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_install_test.cmake: ${var} not set")
  endif()
endforeach()

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "${what}: ok")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
set(config_args)
if(CONFIG)
  set(config_args --config ${CONFIG})
endif()
run_step("cmake --install" ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}" ${config_args})

# The public headers are there, the library's private ones are not.
foreach(header ioattn/ioattn.h ioattn/ioattn.hpp ioattn/attention.hpp ioattn/tensor.hpp ioattn/core/mask.hpp)
  if(NOT EXISTS "${prefix}/include/${header}")
    message(FATAL_ERROR "installed tree lacks include/${header}")
  endif()
endforeach()
file(GLOB_RECURSE private_headers "${prefix}/include/*problem.hpp" "${prefix}/include/*backend.hpp")
if(private_headers)
  message(FATAL_ERROR "installed tree holds internal headers: ${private_headers}")
endif()

run_step("configure consumer" ${CMAKE_COMMAND} -S "${CONSUMER_SOURCE}" -B "${WORK_DIR}/build"
         "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DCMAKE_BUILD_TYPE=Release
         "-DREADME_EXAMPLE=${README_EXAMPLE}")
run_step("build consumer" ${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run_step("run consumer" "${WORK_DIR}/build/consumer")
message(STATUS "${step_output}")
run_step("run README example against the installed tree" "${WORK_DIR}/build/readme_example")
message(STATUS "${step_output}")
