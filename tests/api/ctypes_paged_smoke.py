"""The paged C ABI from Python through bench/ioattn_abi.py (the module the GPU benchmarks use), on the CPU: writes a
cache with ioattn_paged_kv_write, plans and runs ioattn_paged_forward, and checks the result by hand; then a bad
argument gives a status and a message naming it. So the benchmarks' struct layouts are checked where CI runs.
Usage: python3 ctypes_paged_smoke.py /path/to/libioattn.so /path/to/bench"""
import ctypes
import sys

sys.path.insert(0, sys.argv[2])
import ioattn_abi as abi  # noqa: E402

lib = abi.load(sys.argv[1])
PAGES, PAGE, HKV, HQ, D = 6, 4, 1, 2, 8
LENGTHS = [7, 10]  # two sequences decoding one token each
f32 = ctypes.c_float
k_cache = (f32 * (PAGES * PAGE * HKV * D))(*([float("nan")] * (PAGES * PAGE * HKV * D)))
v_cache = (f32 * (PAGES * PAGE * HKV * D))(*([float("nan")] * (PAGES * PAGE * HKV * D)))
table = (ctypes.c_int32 * 6)(5, 0, 3, 2, 4, 1)  # [2, 3]: sequence 0 on pages 5, 0; sequence 1 on 2, 4, 1
lengths = (ctypes.c_int32 * 2)(*LENGTHS)

# Token j of each sequence: key all zeros, value all j (so uniform weights give the mean of 0 .. len - 1).
slots, k_rows, v_rows = [], [], []
for b, n in enumerate(LENGTHS):
    for j in range(n):
        slots.append(table[b * 3 + j // PAGE] * PAGE + j % PAGE)
        k_rows += [0.0] * D
        v_rows += [float(j)] * D
t = len(slots)
w = (ctypes.c_int32 * t)(*slots)
k_new, v_new = (f32 * len(k_rows))(*k_rows), (f32 * len(v_rows))(*v_rows)
cache = lambda buf: abi.tensor(ctypes.addressof(buf), abi.DTYPE_F32, [PAGES, PAGE, HKV, D])  # noqa: E731
wa = abi.PagedWriteArgs(abi.tensor(ctypes.addressof(k_new), abi.DTYPE_F32, [t, HKV, D]),
                        abi.tensor(ctypes.addressof(v_new), abi.DTYPE_F32, [t, HKV, D]),
                        abi.tensor(ctypes.addressof(w), abi.DTYPE_I32, [t]), cache(k_cache), cache(v_cache))
abi.check(lib, lib.ioattn_paged_kv_write(ctypes.byref(wa), None), "kv write")

q = (f32 * (2 * HQ * D))(*([0.5] * (2 * HQ * D)))
out = (f32 * (2 * HQ * D))(*([float("nan")] * (2 * HQ * D)))
args = abi.PagedForwardArgs()
args.q = abi.tensor(ctypes.addressof(q), abi.DTYPE_F32, [2, 1, HQ, D])
args.kv = abi.PagedKV(cache(k_cache), cache(v_cache), abi.tensor(ctypes.addressof(table), abi.DTYPE_I32, [2, 3]),
                      abi.tensor(ctypes.addressof(lengths), abi.DTYPE_I32, [2]))
args.out = abi.tensor(ctypes.addressof(out), abi.DTYPE_F32, [2, 1, HQ, D])
plan = abi.PagedPlanInfo()
abi.check(lib, lib.ioattn_paged_plan(ctypes.byref(args), None, abi.SPLIT_FIXED, 64, 0, ctypes.byref(plan)), "plan")
abi.check(lib, lib.ioattn_paged_forward(ctypes.byref(args), ctypes.byref(plan), None), "forward")
for b, n in enumerate(LENGTHS):
    want = (n - 1) / 2
    got = out[b * HQ * D: (b + 1) * HQ * D]
    assert all(abs(x - want) < 1e-5 for x in got), f"sequence {b}: expected {want}, got {got[:4]}..."

bad = lib.ioattn_paged_plan(ctypes.byref(args), None, 9, 0, 0, ctypes.byref(plan))
message = lib.ioattn_last_error().decode()
assert bad == 1 and message.startswith("split_mode: expected"), (bad, message)
print(f"paged through ctypes: ok (impl {plan.impl.decode()}, split {plan.split_tokens} x {plan.max_splits})")
