"""The C ABI from Python through ctypes alone (no third-party modules): mirrors ioattn.h's structs, runs a tiny
forward on the CPU and checks it by hand, then checks that a bad argument gives a status and a message naming it.
Usage: python3 ctypes_smoke.py /path/to/libioattn.so"""
import ctypes as C
import math
import sys

MAX_RANK = 4
F32, I32, CPU = 0, 3, 0
OK, INVALID_ARGUMENT = 0, 1


class Tensor(C.Structure):
    _fields_ = [("data", C.c_void_p), ("dtype", C.c_int32), ("device", C.c_int32), ("device_index", C.c_int32),
                ("rank", C.c_int32), ("shape", C.c_int64 * MAX_RANK), ("stride", C.c_int64 * MAX_RANK)]


class Mask(C.Structure):
    _fields_ = [("window_left", C.c_int64), ("window_right", C.c_int64), ("alignment", C.c_int32)]


class Varlen(C.Structure):
    _fields_ = [("cu_seqlens_q", Tensor), ("cu_seqlens_k", Tensor), ("max_seqlen_q", C.c_int64),
                ("max_seqlen_k", C.c_int64)]


class Params(C.Structure):
    _fields_ = [("softmax_scale", C.c_float), ("softcap", C.c_float), ("mask", Mask), ("alibi_slopes", Tensor),
                ("sinks", Tensor), ("deterministic", C.c_int32), ("num_threads", C.c_int32), ("impl", C.c_char_p),
                ("stream", C.c_void_p), ("workspace", C.c_void_p), ("workspace_bytes", C.c_size_t)]


class ForwardArgs(C.Structure):
    _fields_ = [("q", Tensor), ("k", Tensor), ("v", Tensor), ("out", Tensor), ("lse", Tensor),
                ("varlen", C.POINTER(Varlen))]


def tensor(buf, dtype, shape):
    t = Tensor()
    t.data = C.cast(buf, C.c_void_p)
    t.dtype, t.device, t.rank = dtype, CPU, len(shape)
    stride = 1
    for d in reversed(range(len(shape))):
        t.shape[d], t.stride[d] = shape[d], stride
        stride *= max(shape[d], 1)
    return t


def main():
    lib = C.CDLL(sys.argv[1])
    lib.ioattn_forward.restype = C.c_int
    lib.ioattn_forward.argtypes = [C.POINTER(ForwardArgs), C.POINTER(Params)]
    lib.ioattn_params_init.argtypes = [C.POINTER(Params)]
    for name in ("ioattn_last_error", "ioattn_version", "ioattn_backends"):
        getattr(lib, name).restype = C.c_char_p

    # Varlen: sequence 0 has one query over two keys, sequence 1 is empty.
    q = (C.c_float * 2)(1, 0)
    k = (C.c_float * 4)(1, 0, 0, 1)
    v = (C.c_float * 4)(1, 2, 3, 4)
    out = (C.c_float * 2)(float("nan"), float("nan"))
    lse = (C.c_float * 1)(float("nan"))
    cu_q = (C.c_int32 * 3)(0, 1, 1)
    cu_k = (C.c_int32 * 3)(0, 2, 2)
    varlen = Varlen(tensor(cu_q, I32, [3]), tensor(cu_k, I32, [3]), 0, 0)
    args = ForwardArgs(tensor(q, F32, [1, 1, 2]), tensor(k, F32, [2, 1, 2]), tensor(v, F32, [2, 1, 2]),
                       tensor(out, F32, [1, 1, 2]), tensor(lse, F32, [1, 1]), C.pointer(varlen))
    params = Params()
    lib.ioattn_params_init(C.byref(params))
    params.softmax_scale = 1.0
    params.impl = b"reference"
    status = lib.ioattn_forward(C.byref(args), C.byref(params))
    assert status == OK, (status, lib.ioattn_last_error())
    w0 = math.exp(1) / (math.exp(1) + 1)
    assert abs(out[0] - (w0 + 3 * (1 - w0))) < 1e-5 and abs(out[1] - (2 * w0 + 4 * (1 - w0))) < 1e-5, list(out)
    assert abs(lse[0] - math.log(math.exp(1) + 1)) < 1e-5, lse[0]

    cu_k[2] = 9  # beyond k's 2 rows
    out[0] = 42.0
    status = lib.ioattn_forward(C.byref(args), C.byref(params))
    message = lib.ioattn_last_error().decode()
    assert status == INVALID_ARGUMENT and message.startswith("varlen.cu_seqlens_k: expected"), (status, message)
    assert out[0] == 42.0, "a rejected call wrote out"
    print("ctypes ok: ioattn", lib.ioattn_version().decode(), "backends:", lib.ioattn_backends().decode())


if __name__ == "__main__":
    main()
