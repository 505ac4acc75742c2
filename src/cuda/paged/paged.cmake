# Paged attention (split-KV decoding) and the paged-cache kernels. The decode kernel is instantiated once per
# (dtype, head dims) file so the files compile in parallel; it does not follow IOATTN_CUDA_HEAD_DIMS/_DTYPES
# (8 small instantiations, each holding a 16-row and a 64-row variant).
target_sources(ioattn PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/backend.cu
  ${CMAKE_CURRENT_LIST_DIR}/combine.cu
  ${CMAKE_CURRENT_LIST_DIR}/cache_ops.cu
  ${CMAKE_CURRENT_LIST_DIR}/dense_decode.cu
  ${CMAKE_CURRENT_LIST_DIR}/instantiations/decode_bf16_d64x64.cu
  ${CMAKE_CURRENT_LIST_DIR}/instantiations/decode_bf16_d128x128.cu
  ${CMAKE_CURRENT_LIST_DIR}/instantiations/decode_bf16_d192x128.cu
  ${CMAKE_CURRENT_LIST_DIR}/instantiations/decode_bf16_d256x256.cu
  ${CMAKE_CURRENT_LIST_DIR}/instantiations/decode_fp16_d64x64.cu
  ${CMAKE_CURRENT_LIST_DIR}/instantiations/decode_fp16_d128x128.cu
  ${CMAKE_CURRENT_LIST_DIR}/instantiations/decode_fp16_d192x128.cu
  ${CMAKE_CURRENT_LIST_DIR}/instantiations/decode_fp16_d256x256.cu)
