# The KV-cache block manager (host bookkeeping of the paged cache): unit tests and the randomized model test.
ioattn_add_test(ioattn_paged_block_manager_tests paged/block_manager_test.cpp support/random.cpp LABELS paged)
target_compile_options(ioattn_paged_block_manager_tests PRIVATE -Wall -Wextra)
