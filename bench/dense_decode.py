#!/usr/bin/env python3
"""Decoding against a dense K and V through the dense API: "auto" (the cuda_decode backend: the paged split-KV
kernels), the same with deterministic=1 (chunks that do not follow the batch), the dense Hopper kernels
(cuda_sm90, what "auto" ran before), and PyTorch SDPA (cuDNN and flash, enable_gqa), in one run on one GPU.

Rows: (batch, new tokens, keys), GQA 32/8 at D 64, 128 and 256 (heads 32/8 for each), bf16, no mask. Each call
is timed after an L2 flush (as bench/paged_decode.py does), the backends taking turns in rounds; "K+V %" is the K
and V bytes over the time against the device's copy bandwidth measured in the same run. Outputs are checked
against flash.

Usage: python3 bench/dense_decode.py --lib build/libioattn.so [--dims 128,64,256] [--json out.json]
"""
import argparse
import ctypes
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cuda_timing import time_interleaved
from ioattn_abi import ForwardArgs, check, environment, load, params, view
from paged_decode import copy_bandwidth, flush_l2

HEADS_Q, HEADS_KV = 32, 8
ROWS = [(1, 1, 32768), (1, 1, 8192), (4, 1, 16384), (16, 1, 2048), (16, 1, 8192), (64, 1, 2048), (16, 4, 8192),
        (1, 8, 32768), (16, 8, 8192), (1, 16, 16384), (16, 16, 4096)]  # the last four: 32 and 64 rows per kv head
IMPLS = {"auto": (b"auto", False), "auto det": (b"auto", True), "cuda_sm90": (b"cuda_sm90", False)}


def ioattn_fn(lib, impl, deterministic, q, k, v, out, lse):
    args = ForwardArgs(view(q), view(k), view(v), view(out), view(lse), None)
    p = params(lib)
    p.impl = impl
    p.deterministic = int(deterministic)
    p.stream = torch.cuda.current_stream().cuda_stream
    a, pp = ctypes.byref(args), ctypes.byref(p)
    return lambda: check(lib, lib.ioattn_forward(a, pp), f"forward ({impl.decode()})")


def sdpa_fn(backend, q, k, v):
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)
    try:
        run()
    except RuntimeError:
        return None
    return run


def run_row(lib, dim, row, copy_tbs, args):
    batch, sq, sk = row
    gen = torch.Generator(device="cuda").manual_seed(sk * 31 + batch * 7 + dim)
    q = torch.randn((batch, sq, HEADS_Q, dim), device="cuda", dtype=torch.bfloat16, generator=gen)
    k, v = (torch.randn((batch, sk, HEADS_KV, dim), device="cuda", dtype=torch.bfloat16, generator=gen)
            for _ in range(2))
    outs = {name: torch.full_like(q, float("nan")) for name in IMPLS}
    lses = {name: torch.full((batch, HEADS_Q, sq), float("nan"), device="cuda") for name in IMPLS}
    fns = {name: ioattn_fn(lib, impl, det, q, k, v, outs[name], lses[name]) for name, (impl, det) in IMPLS.items()}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        fn = sdpa_fn(backend, q, k, v)
        if fn is not None:
            fns[name] = fn
    ref = fns["flash"]().transpose(1, 2) if "flash" in fns else None
    result = {"dim": dim, "batch": batch, "queries": sq, "keys": sk, "ok": True}
    for name in IMPLS:
        fns[name]()
        torch.cuda.synchronize()
        err = (outs[name].float() - ref.float()).abs().max().item() if ref is not None else 0.0
        result[f"{name}_err"] = err
        result["ok"] &= bool(torch.isfinite(outs[name]).all().item()) and err <= 2e-2
    ms = time_interleaved(fns, args.warmup, args.repeat, rounds=args.rounds, before_each=flush_l2)
    kv_bytes = 2 * batch * sk * HEADS_KV * dim * 2
    result["us"] = {name: t * 1e3 for name, t in ms.items()}
    result["kv_pct"] = {name: 100 * kv_bytes / (t * 1e-3) / 1e12 / copy_tbs for name, t in ms.items()}
    return result


def print_table(rows, env, copy_tbs):
    print(f"\n{env['gpu']}, driver {env['driver']}, torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
          f"{env['date']}; GQA {HEADS_Q}/{HEADS_KV}, bf16, no mask; copy bandwidth {copy_tbs:.2f} TB/s; us (K+V % of "
          f"copy)\n")
    names = list(IMPLS) + ["cudnn", "flash"]
    print("| D | batch x new x keys | " + " | ".join(names) + " | cuda_sm90 / auto | cuDNN / auto |")
    print("|---" * (len(names) + 4) + "|")
    for r in rows:
        us, pct = r["us"], r["kv_pct"]
        cells = [f"{us[n]:.1f} ({pct[n]:.0f}%)" if n in us else "-" for n in names]
        cudnn = f"{us['cudnn'] / us['auto']:.2f}" if "cudnn" in us else "-"
        print(f"| {r['dim']} | {r['batch']} x {r['queries']} x {r['keys']} | " + " | ".join(cells) +
              f" | {us['cuda_sm90'] / us['auto']:.2f} | {cudnn} |{'' if r['ok'] else ' OUTPUT OFF'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", required=True, help="path to libioattn.so (built with CUDA)")
    ap.add_argument("--json", help="write every measured row here")
    ap.add_argument("--dims", default="128,64,256")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    lib = load(args.lib)
    env = environment()
    copy_tbs = copy_bandwidth()
    rows = []
    for dim in (int(d) for d in args.dims.split(",")):
        for row in ROWS:
            try:
                rows.append(run_row(lib, dim, row, copy_tbs, args))
            except Exception as e:  # noqa: BLE001 - one failing row must not hide the rest
                print(f"D={dim} {row}: FAILED: {e}", flush=True)
                continue
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "copy_tbs": copy_tbs, "rows": rows}, f, indent=1)
    print_table(rows, env, copy_tbs)
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
