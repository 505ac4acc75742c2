#!/usr/bin/env python3
"""Grouped-query attention with few queries per head in FP8: ioattn's FP8 forward with and without packed GQA, and
its bf16 forward (packed), in one run on one GPU.

Rows as bench/gqa_forward.py (batch, queries, keys, query heads, kv heads; no mask). q, k, v are drawn N(0, 1) in
bf16 and quantized to e4m3 per (batch, head) as bench/fp8_forward.py does. "packed" forces IOATTN_SM90_PACK_GQA=1
(a kv head's query heads in one tile; the default dispatch packs every row here), "one head" forces 0; the library
reads the variable at every launch, so the columns take turns in rounds in one process. The FP8 outputs are checked
against the bf16 forward's (largest |difference|). Times are CUDA-event medians in microseconds; "K+V GB/s" is the K
and V bytes read (one byte an element in FP8, two in bf16) over the time.

Usage: python3 bench/fp8_gqa_forward.py --lib build/libioattn.so [--dims 128,256] [--json out.json]
"""
import argparse
import ctypes
import json
import os
import sys

import torch

from cuda_timing import time_interleaved
from fp8_forward import quantize
from gqa_forward import PACK_ENV, ROWS
from ioattn_abi import Fp8ForwardArgs, Fp8Scales, ForwardArgs, Tensor, check, environment, load, params, view


def with_pack(value, fn):
    def run():
        os.environ[PACK_ENV] = value
        fn()
    return run


def run_row(lib, dim, row, args):
    batch, queries, keys, heads_q, heads_kv = row
    gen = torch.Generator(device="cuda").manual_seed(batch * 1000 + queries + dim)
    q = torch.randn((batch, queries, heads_q, dim), device="cuda", dtype=torch.bfloat16, generator=gen)
    k, v = (torch.randn((batch, keys, heads_kv, dim), device="cuda", dtype=torch.bfloat16, generator=gen)
            for _ in range(2))
    (q8, qd), (k8, kd), (v8, vd) = quantize(q), quantize(k), quantize(v)
    out16, out8 = (torch.full(q.shape, float("nan"), device="cuda", dtype=torch.bfloat16) for _ in range(2))
    p = params(lib)
    p.impl = b"cuda_sm90"
    p.stream = torch.cuda.current_stream().cuda_stream
    none = Tensor()
    a16 = ForwardArgs(view(q), view(k), view(v), view(out16), none, None)
    a8 = Fp8ForwardArgs(view(q8), view(k8), view(v8), Fp8Scales(view(qd), view(kd), view(vd), 0), view(out8), none)
    fwd16 = lambda: check(lib, lib.ioattn_forward(ctypes.byref(a16), ctypes.byref(p)), "bf16 forward")  # noqa: E731
    fwd8 = lambda: check(lib, lib.ioattn_forward_fp8(ctypes.byref(a8), ctypes.byref(p)), "fp8 forward")  # noqa: E731
    fns = {"fp8 packed": with_pack("1", fwd8), "fp8 one head": with_pack("0", fwd8),
           "bf16 packed": with_pack("1", fwd16)}
    for fn in fns.values():
        fn()
    torch.cuda.synchronize()
    diff = (out8.float() - out16.float()).abs().max().item()
    times = time_interleaved(fns, args.warmup, args.repeat, rounds=args.rounds)
    os.environ.pop(PACK_ENV, None)
    kv_elems = 2 * batch * keys * heads_kv * dim
    res = {"dim": dim, "batch": batch, "queries": queries, "keys": keys, "heads_q": heads_q, "heads_kv": heads_kv,
           "max_abs_diff": diff}
    for name, ms in times.items():
        res[name] = ms * 1e3
        res[name + " GB/s"] = kv_elems * (2 if name.startswith("bf16") else 1) / (ms * 1e-3) / 1e9
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--json")
    ap.add_argument("--dims", default="128,256")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    lib = load(args.lib)
    env = environment()
    rows = []
    for dim in (int(d) for d in args.dims.split(",")):
        for row in ROWS:
            rows.append(run_row(lib, dim, row, args))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nFP8 packed GQA, {env['gpu']}, driver {env['driver']}, torch {env['torch']}, {env['date']}: us "
          "(K+V GB/s)")
    print("| D | batch x queries x keys | heads q/kv | fp8 packed | fp8 one head | bf16 packed | one head / packed "
          "| bf16 / fp8 packed | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cell = lambda n: f"{r[n]:.1f} ({r[n + ' GB/s']:.0f})"  # noqa: E731
        print(f"| {r['dim']} | {r['batch']} x {r['queries']} x {r['keys']} | {r['heads_q']}/{r['heads_kv']} | "
              f"{cell('fp8 packed')} | {cell('fp8 one head')} | {cell('bf16 packed')} | "
              f"{r['fp8 one head'] / r['fp8 packed']:.2f} | {r['bf16 packed'] / r['fp8 packed']:.2f} | "
              f"{r['max_abs_diff']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
