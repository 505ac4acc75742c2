# sm80-path backward kernels (included by src/cuda/CMakeLists.txt).
target_sources(ioattn PRIVATE ${CMAKE_CURRENT_LIST_DIR}/backward.cu)
