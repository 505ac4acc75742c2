# Unit tests of include/ioattn/core: the math every backend shares, checked on its own.
ioattn_add_test(ioattn_core_tests
  core/mask_test.cpp
  core/softmax_state_test.cpp
  core/convert_test.cpp
  core/seqlen_test.cpp
  support/random.cpp
  LABELS core)
