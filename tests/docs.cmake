# Documentation that must not rot: the README's usage examples are compiled files under tests/install/.
add_test(NAME readme_example_matches_source
         COMMAND ${CMAKE_COMMAND} -DREADME=${PROJECT_SOURCE_DIR}/README.md
                 -DEXAMPLE=${CMAKE_CURRENT_SOURCE_DIR}/install/readme_example.cpp
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/docs/check_readme_example.cmake)
set_tests_properties(readme_example_matches_source PROPERTIES LABELS docs)

# ...and so is its serving example, tests/install/paged_example.cpp.
add_test(NAME readme_paged_example_matches_source
         COMMAND ${CMAKE_COMMAND} -DREADME=${PROJECT_SOURCE_DIR}/README.md -DMARKER=readme-paged-example
                 -DEXAMPLE=${CMAKE_CURRENT_SOURCE_DIR}/install/paged_example.cpp
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/docs/check_readme_example.cmake)
set_tests_properties(readme_paged_example_matches_source PROPERTIES LABELS docs)
