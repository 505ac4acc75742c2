// ioattn: the C ABI (include/ioattn/ioattn.h) over the C++ API. Being written; see the next commit.
