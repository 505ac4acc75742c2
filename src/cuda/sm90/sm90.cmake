# The Hopper (sm90a) backend "cuda_sm90": its sources.
target_sources(ioattn PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/backend.cu)
