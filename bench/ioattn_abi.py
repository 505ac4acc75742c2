"""ioattn's C ABI (include/ioattn/ioattn.h) for Python through ctypes: the structs, the library loader, a view of a
torch tensor, and the versions a benchmark prints. Shared by bench/sdpa_compare.py, bench/paged_decode.py and
tests/api/ctypes_paged_smoke.py; it needs no torch unless view() or environment() is called.
"""
import ctypes
import subprocess
import time

MAX_RANK = 4
DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_I32, DTYPE_F8E4M3 = 0, 1, 2, 3, 4
DEVICE_CPU, DEVICE_CUDA = 0, 1
SPLIT_AUTO, SPLIT_NONE, SPLIT_FIXED = 0, 1, 2


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int32), ("device", ctypes.c_int32),
                ("device_index", ctypes.c_int32), ("rank", ctypes.c_int32),
                ("shape", ctypes.c_int64 * MAX_RANK), ("stride", ctypes.c_int64 * MAX_RANK)]


class Mask(ctypes.Structure):
    _fields_ = [("window_left", ctypes.c_int64), ("window_right", ctypes.c_int64), ("alignment", ctypes.c_int32)]


class Params(ctypes.Structure):
    _fields_ = [("softmax_scale", ctypes.c_float), ("softcap", ctypes.c_float), ("mask", Mask),
                ("alibi_slopes", Tensor), ("sinks", Tensor), ("deterministic", ctypes.c_int32),
                ("num_threads", ctypes.c_int32), ("impl", ctypes.c_char_p), ("stream", ctypes.c_void_p),
                ("workspace", ctypes.c_void_p), ("workspace_bytes", ctypes.c_size_t)]


class ForwardArgs(ctypes.Structure):
    _fields_ = [("q", Tensor), ("k", Tensor), ("v", Tensor), ("out", Tensor), ("lse", Tensor),
                ("varlen", ctypes.c_void_p)]


class BackwardArgs(ctypes.Structure):
    _fields_ = [("q", Tensor), ("k", Tensor), ("v", Tensor), ("out", Tensor), ("dout", Tensor), ("lse", Tensor),
                ("dq", Tensor), ("dk", Tensor), ("dv", Tensor), ("dsinks", Tensor), ("varlen", ctypes.c_void_p)]


class Fp8Scales(ctypes.Structure):
    _fields_ = [("q_descale", Tensor), ("k_descale", Tensor), ("v_descale", Tensor), ("block_rows", ctypes.c_int64)]


class Fp8ForwardArgs(ctypes.Structure):
    _fields_ = [("q", Tensor), ("k", Tensor), ("v", Tensor), ("scales", Fp8Scales), ("out", Tensor),
                ("lse", Tensor)]


class PagedKV(ctypes.Structure):
    _fields_ = [("k_cache", Tensor), ("v_cache", Tensor), ("block_table", Tensor), ("seqlens_k", Tensor)]


class PagedForwardArgs(ctypes.Structure):
    _fields_ = [("q", Tensor), ("kv", PagedKV), ("out", Tensor), ("lse", Tensor), ("cu_seqlens_q", Tensor),
                ("max_seqlen_q", ctypes.c_int64)]


class PagedPlanInfo(ctypes.Structure):
    _fields_ = [("impl", ctypes.c_char * 32), ("split_tokens", ctypes.c_int64), ("max_splits", ctypes.c_int64),
                ("workspace_bytes", ctypes.c_size_t), ("planned", ctypes.c_int64 * 12)]


class PagedWriteArgs(ctypes.Structure):
    _fields_ = [("k_new", Tensor), ("v_new", Tensor), ("slot_mapping", Tensor), ("k_cache", Tensor),
                ("v_cache", Tensor)]


def load(path):
    """The library at `path`, with the return types of the functions the scripts call."""
    lib = ctypes.CDLL(path)
    for name in ("ioattn_forward", "ioattn_backward", "ioattn_forward_fp8", "ioattn_paged_plan",
                 "ioattn_paged_forward", "ioattn_paged_kv_write"):
        getattr(lib, name).restype = ctypes.c_int
    for name in ("ioattn_last_error", "ioattn_backends", "ioattn_version"):
        getattr(lib, name).restype = ctypes.c_char_p
    return lib


def check(lib, status, what):
    if status != 0:
        raise RuntimeError(f"ioattn {what}: {lib.ioattn_last_error().decode()}")


def params(lib):
    """Params with every default (ioattn_params_init)."""
    p = Params()
    lib.ioattn_params_init(ctypes.byref(p))
    return p


def tensor(data, dtype, shape, strides=None, device=DEVICE_CPU, device_index=0):
    """A view of raw memory; contiguous strides when none are given."""
    if strides is None:
        strides, step = [], 1
        for extent in reversed(shape):
            strides.insert(0, step)
            step *= extent
    v = Tensor()
    v.data, v.dtype, v.device, v.device_index, v.rank = data, dtype, device, device_index, len(shape)
    for i, (extent, stride) in enumerate(zip(shape, strides)):
        v.shape[i], v.stride[i] = extent, stride
    return v


def view(t):
    """A view of a torch tensor (shape and strides in elements, CUDA or CPU)."""
    import torch
    codes = {torch.float32: DTYPE_F32, torch.float16: DTYPE_F16, torch.bfloat16: DTYPE_BF16, torch.int32: DTYPE_I32,
             torch.float8_e4m3fn: DTYPE_F8E4M3}
    device = DEVICE_CUDA if t.is_cuda else DEVICE_CPU
    return tensor(t.data_ptr(), codes[t.dtype], list(t.shape), [t.stride(i) for i in range(t.dim())], device,
                  t.device.index or 0)


def environment():
    """The GPU, driver, torch, CUDA and cuDNN versions and the UTC date and time, for a benchmark's table."""
    import torch
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - the table says "unknown" rather than fail
        env["driver"] = "unknown"
    return env
