# Packaging: `cmake --install` of this build into a scratch prefix, then a separate consumer project that uses
# find_package(ioattn CONFIG REQUIRED), builds, and runs (tests/install/run_install_test.cmake). Plus the README's
# usage example, built here as part of the test suite and run.
add_test(NAME ioattn_install_consumer
  COMMAND ${CMAKE_COMMAND}
          -DBUILD_DIR=${PROJECT_BINARY_DIR}
          -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install-test
          -DCONSUMER_SOURCE=${CMAKE_CURRENT_SOURCE_DIR}/install/consumer
          -DREADME_EXAMPLE=${CMAKE_CURRENT_SOURCE_DIR}/install/readme_example.cpp
          -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
          -DCONFIG=$<CONFIG>
          -P ${CMAKE_CURRENT_SOURCE_DIR}/install/run_install_test.cmake)
set_tests_properties(ioattn_install_consumer PROPERTIES LABELS install TIMEOUT 300)

add_executable(ioattn_readme_example install/readme_example.cpp)
target_link_libraries(ioattn_readme_example PRIVATE ioattn)
add_test(NAME ioattn_readme_example COMMAND ioattn_readme_example)
set_tests_properties(ioattn_readme_example PROPERTIES LABELS install TIMEOUT 120)

add_executable(ioattn_paged_example install/paged_example.cpp)
target_link_libraries(ioattn_paged_example PRIVATE ioattn)
add_test(NAME ioattn_paged_example COMMAND ioattn_paged_example)
set_tests_properties(ioattn_paged_example PROPERTIES LABELS install TIMEOUT 120)
