# Paged attention, split-KV decoding and the paged-cache kernels.
target_sources(ioattn PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/backend.cu)
