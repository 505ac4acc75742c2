#!/usr/bin/env python3
"""Grouped-query attention with few queries per head: the Hopper forward with and without packed GQA, against
PyTorch SDPA (cuDNN and flash), in one run on one GPU.

Rows are (batch, queries, keys, query heads, kv heads): decoding against a dense cache (1 query), speculative
decoding and chunked prefill (4-64 queries), group sizes 4, 7 and 8; no mask (with 1-64 queries against thousands
of keys a bottom-right causal mask hides almost nothing, and SDPA's is_causal is top-left). ioattn runs through
its C ABI on PyTorch's stream: "packed" forces IOATTN_SM90_PACK_GQA=1 (a kv head's query heads in one tile; the
default dispatch packs every row here) and "one head" forces 0; the library reads the variable at every launch, so
both run in one process, taking turns with SDPA in rounds. SDPA gets enable_gqa=True; a backend that refuses it runs on
K and V expanded to every query head (marked "x"), the memory a caller without GQA support would have to spend.
Outputs are checked against flash. Times are CUDA-event medians in microseconds; "K+V GB/s" is the K and V bytes
over the time (what bounds these shapes).

Usage: python3 bench/gqa_forward.py --lib build/libioattn.so [--dims 64,128,256] [--json out.json]
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cuda_timing import time_interleaved
from ioattn_abi import environment
from sdpa_compare import IoAttn, max_diff

PACK_ENV = "IOATTN_SM90_PACK_GQA"
ROWS = [  # batch, queries, keys, query heads, kv heads
    (16, 1, 8192, 32, 8),
    (64, 1, 2048, 32, 8),
    (16, 4, 8192, 32, 8),
    (16, 16, 8192, 32, 8),
    (8, 64, 8192, 64, 8),
    (8, 32, 4096, 28, 4),
    (4, 16, 16384, 64, 8),
]


def sdpa_fn(backend, q, k, v):
    """SDPA on [B, S, H, D] tensors with GQA; None when the backend refuses it. Returns (fn, expanded)."""
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def run(kk, vv, gqa):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kk, vv, enable_gqa=gqa)

    try:
        run(kt, vt, True)
        return (lambda: run(kt, vt, True)), False
    except RuntimeError:
        group = q.shape[2] // k.shape[2]
        ke, ve = kt.repeat_interleave(group, dim=1), vt.repeat_interleave(group, dim=1)
        try:
            run(ke, ve, False)
        except RuntimeError:
            return None, False
        return (lambda: run(ke, ve, False)), True


def run_row(lib, dim, row, args):
    batch, sq, sk, hq, hkv = row
    gen = torch.Generator(device="cuda").manual_seed(sq * 7919 + sk + dim)
    q = torch.randn((batch, sq, hq, dim), device="cuda", dtype=torch.bfloat16, generator=gen)
    k, v = (torch.randn((batch, sk, hkv, dim), device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(2))
    out = torch.full_like(q, float("nan"))
    lse = torch.full((batch, hq, sq), float("nan"), device="cuda", dtype=torch.float32)
    fwd = lib.forward_fn(q, k, v, out, lse, False)

    def with_pack(value):
        def call():
            os.environ[PACK_ENV] = value
            fwd()
        return call

    fns = {"packed": with_pack("1"), "one head": with_pack("0")}
    expanded = {}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        fn, was_expanded = sdpa_fn(backend, q, k, v)
        if fn is not None:
            fns[name], expanded[name] = fn, was_expanded
    ref = fns["flash"]().transpose(1, 2) if "flash" in fns else None
    result = {"dim": dim, "batch": batch, "queries": sq, "keys": sk, "heads_q": hq, "heads_kv": hkv,
              "expanded": expanded, "ok": True}
    for name in ("packed", "one head"):
        out.fill_(float("nan"))
        fns[name]()
        torch.cuda.synchronize()
        err = max_diff(out, ref) if ref is not None else 0.0
        finite = bool(torch.isfinite(out).all().item())
        result[f"{name}_err"] = err
        result["ok"] &= finite and err <= 2e-2
    ms = time_interleaved(fns, args.warmup, args.repeat, rounds=args.rounds)
    os.environ.pop(PACK_ENV, None)
    kv_bytes = 2 * batch * sk * hkv * dim * 2
    result["us"] = {name: t * 1e3 for name, t in ms.items()}
    result["kv_gbs"] = {name: kv_bytes / (t * 1e-3) / 1e9 for name, t in ms.items()}
    return result


def print_table(rows, env):
    print(f"\n{env['gpu']}, driver {env.get('driver', '?')}, torch {env['torch']}, CUDA {env['cuda']}, "
          f"cuDNN {env['cudnn']}, {env['date']}; bf16, no mask; us (K+V GB/s); x = SDPA on expanded K, V\n")
    print("| D | batch x queries x keys | heads q/kv | packed | one head | cuDNN | flash | one head / packed |"
          " cuDNN / packed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        us, gbs = r["us"], r["kv_gbs"]

        def cell(name):
            if name not in us:
                return "-"
            mark = " x" if r["expanded"].get(name) else ""
            return f"{us[name]:.1f} ({gbs[name]:.0f}){mark}"

        cudnn = f"{us['cudnn'] / us['packed']:.2f}" if "cudnn" in us else "-"
        print(f"| {r['dim']} | {r['batch']} x {r['queries']} x {r['keys']} | {r['heads_q']}/{r['heads_kv']} | "
              f"{cell('packed')} | {cell('one head')} | {cell('cudnn')} | {cell('flash')} | "
              f"{us['one head'] / us['packed']:.2f} | {cudnn} |{'' if r['ok'] else ' OUTPUT OFF'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", required=True, help="path to libioattn.so (built with CUDA, sm_90a)")
    ap.add_argument("--json", help="write every measured row here")
    ap.add_argument("--dims", default="128")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--impl", default="cuda_sm90")
    args = ap.parse_args()
    lib = IoAttn(args.lib, args.impl, args.impl)
    env = environment()
    rows = []
    for dim in (int(d) for d in args.dims.split(",")):
        for row in ROWS:
            try:
                rows.append(run_row(lib, dim, row, args))
            except Exception as e:  # noqa: BLE001 - one failing row must not hide the rest
                print(f"D={dim} {row}: FAILED: {e}", flush=True)
                continue
            print(json.dumps(rows[-1]), flush=True)
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=1)
    print_table(rows, env)
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
