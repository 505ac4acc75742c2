# CPU benchmark: the tiled kernels against a materialized fp32 attention on a BLAS (docs/PERF.md, section CPU).
# Optional: without Google Benchmark or a CBLAS (OpenBLAS) it is skipped with a message, never an error.
find_package(benchmark QUIET)
find_package(OpenBLAS CONFIG QUIET)
if(OpenBLAS_FOUND)
  find_path(IOATTN_CBLAS_INCLUDE_DIR cblas.h HINTS ${OpenBLAS_INCLUDE_DIRS} NO_DEFAULT_PATH)
  set(IOATTN_CBLAS_LIBRARY ${OpenBLAS_LIBRARIES})
else()
  find_path(IOATTN_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas openblas-pthread)
  find_library(IOATTN_CBLAS_LIBRARY NAMES openblas cblas)
endif()

if(NOT benchmark_FOUND)
  message(STATUS "ioattn: CPU benchmark skipped (Google Benchmark not found; Debian: libbenchmark-dev)")
  return()
endif()
if(NOT IOATTN_CBLAS_INCLUDE_DIR OR NOT IOATTN_CBLAS_LIBRARY)
  message(STATUS "ioattn: CPU benchmark skipped (CBLAS not found; Debian: libopenblas-dev)")
  return()
endif()

add_executable(ioattn_bench_cpu
  ${CMAKE_CURRENT_SOURCE_DIR}/cpu/bench_cpu.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/cpu/materialized.cpp)
target_include_directories(ioattn_bench_cpu PRIVATE ${IOATTN_CBLAS_INCLUDE_DIR} ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(ioattn_bench_cpu PRIVATE ioattn benchmark::benchmark ${IOATTN_CBLAS_LIBRARY}
                                               OpenMP::OpenMP_CXX)
target_compile_options(ioattn_bench_cpu PRIVATE -Wall -Wextra)
message(STATUS "ioattn: CPU benchmark ioattn_bench_cpu (CBLAS: ${IOATTN_CBLAS_LIBRARY})")
