#!/usr/bin/env python3
"""Paged decoding: ioattn's cuda paged backend against PyTorch SDPA (cuDNN and flash) in one run on one GPU.

Decode (one new token per sequence), GQA 32/8 heads, head dim 128 (--dim 64 or 256 too), bf16. Decode is bound by
memory, so the figure of merit is the K+V read bandwidth: bytes of K and V the kernel must read (batch x context x kv
heads x head dim x 2 bytes, twice) over its time, against the device's copy bandwidth measured in the same run (a
large device-to-device copy: bytes read + written over time). ioattn reads a paged cache (pages shuffled in the pool,
so a sequence's pages are not contiguous) through its C ABI (include/ioattn/ioattn.h) with ctypes on PyTorch's
current stream, with a caller-owned workspace (plan once, run many: no allocation in the timed call). SDPA reads the
same K and V laid out contiguously ([batch, context, kv heads, 128], viewed as [batch, kv heads, context, 128]); its
GQA mode is printed per row: "gqa" (enable_gqa=True: each K/V byte read once per group, the same bytes as ioattn) or
"expand" (K/V materialized to 32 heads before the call, outside the timing: SDPA then reads 4x the bytes, and its
TB/s column counts what it read, its time is what to compare).

Timing: each call is timed alone with CUDA events, after a read of a 256 MB buffer that evicts the 50 MB L2 and
keeps the GPU busy while Python issues the call (so host launch overhead is not timed); median over --repeat calls
after --warmup, the implementations of a row (ioattn, its variants, cuDNN, flash) taking turns in five rounds. The
table's header gives the harness floor: a one-element kernel timed the same way (launch and event cost that no
kernel can avoid). The flush reads rather than writes: a memset leaves the L2 full of dirty lines whose write-back
then lands inside the timed kernel (about 50 MB, some 12 us at 4.2 TB/s, a large share of a 40 us decode).
--flush memset times the other way. The working sets (>= 134 MB) are far above L2 too. Outputs are checked:
max |ioattn - SDPA| per backend, and the cuDNN-vs-flash difference as the yardstick of what two correct kernels
disagree by.

--graph adds a second table: each implementation's calls back to back in a CUDA graph (20 a replay, rotating over
four input sets so that none finds its K/V in L2), as a server replays a decode step: no launch or event cost is
timed between calls, only the gap a graph leaves between kernels. Its outputs are those the first table checked.
--page-order sequential stores each sequence's pages in order instead of shuffled. --cache-layout hnd stores each
page head by head ([pages, heads, page, dim], passed as a strided [pages, page, heads, dim] view), so that a kv head's
rows of a page are contiguous, instead of token by token (nhd, vLLM's layout).

--variant NAME:VAR=VALUE[,VAR=VALUE] (repeatable) times ioattn once more per row, in the same process on the same
data, with those environment variables set around its plan and run; the pseudo-variable lib=PATH times another build
of the library instead (e.g. before:lib=/tmp/base/libioattn.so: a change against its baseline in one run). A second
table compares the variants with the default.

Usage: python3 bench/paged_decode.py --lib build/libioattn.so [--json out.json] [--warmup 10] [--repeat 50]
"""
import argparse
import ctypes
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cuda_timing import time_interleaved
from ioattn_abi import (SPLIT_AUTO, SPLIT_FIXED, SPLIT_NONE, PagedForwardArgs, PagedKV, PagedPlanInfo, check,
                        environment, load, params, view)

HEADS_Q, HEADS_KV = 32, 8
DIM = 128  # --dim

# (batch, context, page size, split): the issue's grid, one row with large pages, one with a fixed split.
GRID = [(1, 32768, 16, "auto"), (16, 2048, 16, "auto"), (16, 4096, 16, "auto"), (16, 8192, 16, "auto"),
        (64, 4096, 16, "auto"), (128, 2048, 16, "auto"), (16, 4096, 256, "auto"), (1, 32768, 16, "fixed:1024"),
        (16, 8192, 16, "none")]


class IoAttn:
    def __init__(self, path):
        self.lib = load(path)

    def decode_fn(self, q, k_cache, v_cache, table, lens, out, lse, split):
        """Plans once (as a server would per batch) and returns the per-layer call, with its workspace."""
        args = PagedForwardArgs()
        args.q, args.out, args.lse = view(q), view(out), view(lse)
        args.kv = PagedKV(view(k_cache), view(v_cache), view(table), view(lens))
        call_params = params(self.lib)
        call_params.impl = b"cuda"
        call_params.stream = torch.cuda.current_stream().cuda_stream
        mode, tokens = {"auto": (SPLIT_AUTO, 0), "none": (SPLIT_NONE, 0)}.get(split, (SPLIT_FIXED, 0))
        if mode == SPLIT_FIXED:
            tokens = int(split.split(":")[1])
        plan = PagedPlanInfo()
        check(self.lib, self.lib.ioattn_paged_plan(ctypes.byref(args), ctypes.byref(call_params), mode, tokens,
                                                   int(lens.max().item()), ctypes.byref(plan)), "paged plan")
        workspace = torch.empty(max(plan.workspace_bytes, 16), dtype=torch.uint8, device="cuda")
        call_params.workspace, call_params.workspace_bytes = workspace.data_ptr(), plan.workspace_bytes
        fwd, a, pl = self.lib.ioattn_paged_forward, ctypes.byref(args), ctypes.byref(plan)
        p = ctypes.byref(call_params)
        keep = (args, call_params, plan, workspace)  # alive as long as the closure

        def run():
            check(self.lib, fwd(a, pl, p), "paged forward")
            return keep
        return run, plan


FLUSH = None
FLUSH_MODE = "read"
PAGE_ORDER = "shuffled"  # --page-order
CACHE_LAYOUT = "nhd"  # --cache-layout


def flush_l2():
    global FLUSH
    if FLUSH is None:
        FLUSH = torch.ones(64 << 20, dtype=torch.float32, device="cuda")  # 256 MB
    if FLUSH_MODE == "read":
        FLUSH.sum()
    else:
        FLUSH.zero_()


def time_ms(fn, warmup, repeat):
    """Median of `repeat` CUDA-event timings of fn alone, each after an L2 flush (see the docstring)."""
    return time_interleaved({"fn": fn}, warmup, repeat, rounds=1, before_each=flush_l2)["fn"]


def copy_bandwidth():
    """Device-to-device copy of 2 GiB: (bytes read + bytes written) / time, median of 20."""
    src = torch.empty(1 << 31, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), 3, 20)
    del src, dst
    return 2 * (1 << 31) / (ms * 1e-3) / 1e12


def harness_floor_us(warmup, repeat):
    """What the timing itself costs: a one-element kernel timed exactly as the decodes are (flush, event, launch,
    event). Every row's time includes about this much that no kernel can remove."""
    x = torch.zeros(1, device="cuda")
    return time_ms(lambda: x.add_(1.0), warmup, repeat) * 1e3


def sdpa_fn(backend, q, k, v, gqa):
    """q [B, Hq, 1, D]; k, v [B, Hkv or Hq, L, D] views."""
    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa) if gqa else \
                F.scaled_dot_product_attention(q, k, v)
    return run


def prepare_sdpa(backend, q, k, v):
    """(fn, out, mode, bytes of K+V it reads) with enable_gqa, else with K/V expanded to all query heads; fn None
    where the backend refuses both."""
    for gqa in (True, False):
        try:
            if gqa:
                kk, vv = k, v
            else:
                kk = k.repeat_interleave(HEADS_Q // HEADS_KV, dim=1)
                vv = v.repeat_interleave(HEADS_Q // HEADS_KV, dim=1)
            fn = sdpa_fn(backend, q, kk, vv, gqa)
            out = fn()
            return fn, out, "gqa" if gqa else "expand", (kk.numel() + vv.numel()) * kk.element_size()
        except RuntimeError as err:  # backend refuses this form: try the other, or report none
            last = str(err).splitlines()[0][:100]
    return None, None, f"n/a ({last})", 0


def make_inputs(batch, ctx, page, seed):
    """One decode problem: q, the contiguous K/V (for SDPA), the same K/V in a paged cache (page p of the contiguous
    layout at pool slot perm[p]: shuffled, or in order with --page-order sequential), its block table and lengths,
    and the outputs (poisoned with NaN)."""
    torch.manual_seed(seed)
    dev = "cuda"
    k = torch.randn(batch, ctx, HEADS_KV, DIM, dtype=torch.bfloat16, device=dev)
    v = torch.randn(batch, ctx, HEADS_KV, DIM, dtype=torch.bfloat16, device=dev)
    q = torch.randn(batch, 1, HEADS_Q, DIM, dtype=torch.bfloat16, device=dev)
    pages_per_seq = ctx // page
    num_pages = batch * pages_per_seq
    perm = torch.randperm(num_pages, device=dev) if PAGE_ORDER == "shuffled" else \
        torch.arange(num_pages, device=dev)
    if CACHE_LAYOUT == "hnd":  # each page stored head by head: a head's rows of a page are contiguous
        k_cache = torch.empty(num_pages, HEADS_KV, page, DIM, dtype=torch.bfloat16, device=dev).transpose(1, 2)
        v_cache = torch.empty(num_pages, HEADS_KV, page, DIM, dtype=torch.bfloat16, device=dev).transpose(1, 2)
    else:
        k_cache = torch.empty(num_pages, page, HEADS_KV, DIM, dtype=torch.bfloat16, device=dev)
        v_cache = torch.empty_like(k_cache)
    k_cache[perm] = k.reshape(num_pages, page, HEADS_KV, DIM)
    v_cache[perm] = v.reshape(num_pages, page, HEADS_KV, DIM)
    return {"q": q, "k": k, "v": v, "k_cache": k_cache, "v_cache": v_cache,
            "table": perm.reshape(batch, pages_per_seq).to(torch.int32),
            "lens": torch.full((batch,), ctx, dtype=torch.int32, device=dev),
            "out": torch.full((batch, 1, HEADS_Q, DIM), float("nan"), dtype=torch.bfloat16, device=dev),
            "lse": torch.empty(batch, HEADS_Q, 1, dtype=torch.float32, device=dev)}


def run_point(lib, batch, ctx, page, split, args):
    d = make_inputs(batch, ctx, page, batch * 100003 + ctx + page)
    q, k, v, k_cache, v_cache, table, lens, out, lse = (d[n] for n in ("q", "k", "v", "k_cache", "v_cache", "table",
                                                                       "lens", "out", "lse"))
    kv_bytes = 2 * batch * ctx * HEADS_KV * DIM * 2
    fn, plan = lib.decode_fn(q, k_cache, v_cache, table, lens, out, lse, split)
    fn()
    torch.cuda.synchronize()
    ours = out.clone()
    row = {"batch": batch, "ctx": ctx, "page": page, "split": split, "split_tokens": plan.split_tokens,
           "max_splits": plan.max_splits, "kv_bytes": kv_bytes, "finite": bool(torch.isfinite(ours).all().item()),
           "variants": {}}
    timed = {"ioattn": fn}
    for name, env, vlib in args.variant:
        with environment_set(env):
            out.fill_(float("nan"))
            vfn, vplan = (vlib or lib).decode_fn(q, k_cache, v_cache, table, lens, out, lse, split)
            vfn()
            torch.cuda.synchronize()
        row["variants"][name] = {"split_tokens": vplan.split_tokens, "max_splits": vplan.max_splits,
                                 "finite": bool(torch.isfinite(out).all().item()),
                                 "diff_default": (out.float() - ours.float()).abs().max().item()}
        timed[name] = lambda vfn=vfn, env=env: run_with_environment(vfn, env)
    # SDPA on the contiguous K/V: [B, L, Hkv, D] viewed as [B, Hkv, L, D].
    qs, ks, vs = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    outs, sdpa_bytes = {}, {}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        sfn, sout, mode, sdpa_bytes[name] = prepare_sdpa(backend, qs, ks, vs)
        row[f"{name}_mode"] = mode
        row[f"{name}_ms"] = row[f"{name}_tbs"] = None
        if sfn is not None:
            timed[name] = sfn
            outs[name] = sout.transpose(1, 2)
            row[f"diff_{name}"] = (ours.float() - outs[name].float()).abs().max().item()
    ms = time_interleaved(timed, args.warmup, args.repeat, before_each=flush_l2)
    row["ioattn_ms"] = ms["ioattn"]
    row["ioattn_tbs"] = kv_bytes / (ms["ioattn"] * 1e-3) / 1e12
    for name in row["variants"]:
        row["variants"][name]["ms"] = ms[name]
        row["variants"][name]["tbs"] = kv_bytes / (ms[name] * 1e-3) / 1e12
    for name in ("cudnn", "flash"):
        if name in ms:
            row[f"{name}_ms"] = ms[name]
            row[f"{name}_tbs"] = sdpa_bytes[name] / (ms[name] * 1e-3) / 1e12
    if len(outs) == 2:
        row["diff_cudnn_flash"] = (outs["cudnn"].float() - outs["flash"].float()).abs().max().item()
    if args.graph:
        row["graph_us"] = graph_point(lib, batch, ctx, page, split, args)
    return row


GRAPH_SETS = 4  # input sets a graph rotates through: each >= 134 MB, so a call never finds its K/V in the 50 MB L2
GRAPH_CALLS = 20  # calls per graph replay


def graph_point(lib, batch, ctx, page, split, args):
    """{name: us per call} with the calls back to back in a CUDA graph, as a server replays a decode step's layers:
    GRAPH_CALLS calls rotating through GRAPH_SETS input sets (none in L2 when its turn comes), a replay timed with
    events, so no launch or event cost between calls is timed, only the gap between kernels that a graph leaves.
    Each implementation is planned and captured on the graph's stream; one whose capture fails is left out."""
    stream = torch.cuda.Stream()
    sets = [make_inputs(batch, ctx, page, 7919 * i + batch + ctx) for i in range(GRAPH_SETS)]
    torch.cuda.synchronize()  # the plans below read the lengths on `stream`
    calls = {}
    with torch.cuda.stream(stream):
        calls["ioattn"] = [lib.decode_fn(d["q"], d["k_cache"], d["v_cache"], d["table"], d["lens"], d["out"],
                                         d["lse"], split)[0] for d in sets]
        for name, env, vlib in args.variant:
            with environment_set(env):
                calls[name] = [(vlib or lib).decode_fn(d["q"], d["k_cache"], d["v_cache"], d["table"], d["lens"],
                                                       d["out"], d["lse"], split)[0] for d in sets]
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            fns = [prepare_sdpa(backend, d["q"].transpose(1, 2), d["k"].transpose(1, 2), d["v"].transpose(1, 2))[0]
                   for d in sets]
            if all(fn is not None for fn in fns):
                calls[name] = fns
    torch.cuda.synchronize()
    envs = {name: env for name, env, _ in args.variant}
    graphs = {}
    for name, fns in calls.items():
        graph = torch.cuda.CUDAGraph()
        try:
            with environment_set(envs.get(name, {})):
                with torch.cuda.stream(stream):
                    for fn in fns:  # warm-up outside the capture (handles, plans, module loads)
                        fn()
                stream.synchronize()
                with torch.cuda.graph(graph, stream=stream):
                    for i in range(GRAPH_CALLS):
                        fns[i % len(fns)]()
            graphs[name] = graph
        except RuntimeError as err:
            print(f"graph capture of {name} failed: {str(err).splitlines()[0][:120]}", file=sys.stderr)
    torch.cuda.synchronize()
    ms = time_interleaved({name: g.replay for name, g in graphs.items()}, 3, max(10, args.repeat // 5))
    return {name: t * 1e3 / GRAPH_CALLS for name, t in ms.items()}


def run_with_environment(fn, env):
    with environment_set(env):
        fn()


class environment_set:
    """Sets environment variables (the library reads them at each plan and run) for the body of a with block."""

    def __init__(self, env):
        self.env, self.saved = env, {}

    def __enter__(self):
        for key, value in self.env.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def parse_variant(text):
    """NAME:VAR=VALUE,... -> (name, environment, library path or None)."""
    name, _, assignments = text.partition(":")
    env = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return name, env, env.pop("lib", None)


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def print_table(rows, env, copy_tbs, floor_us):
    print(f"\n{env['date']}  {env['gpu']}  driver {env['driver']}  torch {env['torch']}  CUDA {env['cuda']}  "
          f"cuDNN {env['cudnn']}")
    print(f"decode, GQA {HEADS_Q}/{HEADS_KV}, D {DIM}, bf16; copy bandwidth {copy_tbs:.2f} TB/s (read + write); "
          f"TB/s = K+V bytes read / time; L2 flushed by a {FLUSH_MODE} before each call; a one-element kernel timed "
          f"the same way: {floor_us:.1f} us; pages {PAGE_ORDER}, cache layout {CACHE_LAYOUT}\n")
    print("| batch x ctx | page | split (tokens x max) | ioattn us | ioattn TB/s | % copy | cuDNN us | cuDNN TB/s "
          "| flash us | flash TB/s | SDPA K/V | max diff vs cuDNN / flash (cuDNN-flash) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        modes = "/".join(sorted({r.get("cudnn_mode", "-"), r.get("flash_mode", "-")}))
        print(f"| {r['batch']} x {r['ctx']} | {r['page']} | {r['split']} ({r['split_tokens']} x {r['max_splits']}) "
              f"| {r['ioattn_ms'] * 1e3:.1f} | {r['ioattn_tbs']:.2f} | {100 * r['ioattn_tbs'] / copy_tbs:.0f}% "
              f"| {fmt(r['cudnn_ms'] and r['cudnn_ms'] * 1e3, '.1f')} | {fmt(r['cudnn_tbs'], '.2f')} "
              f"| {fmt(r['flash_ms'] and r['flash_ms'] * 1e3, '.1f')} | {fmt(r['flash_tbs'], '.2f')} | {modes} "
              f"| {fmt(r.get('diff_cudnn'), '.2e')} / {fmt(r.get('diff_flash'), '.2e')} "
              f"({fmt(r.get('diff_cudnn_flash'), '.2e')}) |")
    if rows and "graph_us" in rows[0]:
        names = list(rows[0]["graph_us"])
        print(f"\nback to back in a CUDA graph ({GRAPH_CALLS} calls a replay over {GRAPH_SETS} input sets; µs a call, "
              "% of copy)\n")
        print("| batch x ctx | page | split | " + " | ".join(names) + " |")
        print("|---|---|---|" + "---|" * len(names))
        for r in rows:
            cells = []
            for n in names:
                us = r["graph_us"].get(n)
                pct = None if us is None else 100 * r["kv_bytes"] / (us * 1e-6) / 1e12 / copy_tbs
                cells.append("-" if us is None else f"{us:.1f} us {pct:.0f}%")
            print(f"| {r['batch']} x {r['ctx']} | {r['page']} | {r['split']} | " + " | ".join(cells) + " |")
    names = list(rows[0]["variants"]) if rows else []
    if names:
        print("\nioattn variants, same run (us, % of copy, split tokens x max; max |diff| to the default's output)\n")
        print("| batch x ctx | page | split | default | " + " | ".join(names) + " |")
        print("|---|---|---|---|" + "---|" * len(names))
        for r in rows:
            cells = [f"{r['ioattn_ms'] * 1e3:.1f} us {100 * r['ioattn_tbs'] / copy_tbs:.0f}% "
                     f"({r['split_tokens']} x {r['max_splits']})"]
            for n in names:
                v = r["variants"][n]
                cells.append(f"{v['ms'] * 1e3:.1f} us {100 * v['tbs'] / copy_tbs:.0f}% ({v['split_tokens']} x "
                             f"{v['max_splits']}) {v['diff_default']:.1e}")
            print(f"| {r['batch']} x {r['ctx']} | {r['page']} | {r['split']} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--json")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--flush", choices=("read", "memset"), default="read", help="how L2 is flushed before each call")
    ap.add_argument("--dim", type=int, default=128, help="head dim (64, 128, 256; the issue's goals are at 128)")
    ap.add_argument("--page-order", choices=("shuffled", "sequential"), default="shuffled",
                    help="where the cache's pages lie in the pool: shuffled (as a long-running server's are), or "
                         "sequential (each sequence's pages in order: the contiguous layout SDPA reads)")
    ap.add_argument("--cache-layout", choices=("nhd", "hnd"), default="nhd",
                    help="token-major pages (nhd, vLLM) or head-major pages (hnd): see above")
    ap.add_argument("--graph", action="store_true",
                    help="also time each implementation back to back in a CUDA graph (a second table)")
    ap.add_argument("--rows", help="comma-separated batch:ctx:page:split (e.g. 16:8192:16:auto) instead of the grid")
    ap.add_argument("--variant", action="append", default=[], type=parse_variant,
                    help="NAME:VAR=VALUE[,VAR=VALUE]: also time ioattn with these environment variables")
    args = ap.parse_args()
    global FLUSH_MODE, DIM, PAGE_ORDER, CACHE_LAYOUT
    FLUSH_MODE = args.flush
    PAGE_ORDER = args.page_order
    CACHE_LAYOUT = args.cache_layout
    DIM = args.dim
    if not torch.cuda.is_available():
        print("no CUDA device visible to torch: skipped")
        return 0
    lib = IoAttn(args.lib)
    args.variant = [(name, env, path and IoAttn(path)) for name, env, path in args.variant]
    env = environment()
    copy_tbs = copy_bandwidth()
    floor_us = harness_floor_us(args.warmup, args.repeat)
    rows = []
    grid = GRID
    if args.rows:
        grid = [(int(b), int(c), int(p), s) for b, c, p, s in (r.split(":", 3) for r in args.rows.split(","))]
    for batch, ctx, page, split in grid:
        row = run_point(lib, batch, ctx, page, split, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()
    print_table(rows, env, copy_tbs, floor_us)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "copy_tbs": copy_tbs, "harness_floor_us": floor_us, "rows": rows}, f, indent=1)
    # Outputs must agree with SDPA (bf16 outputs of unit-scale data: a few bf16 ulps) and be finite.
    bad = [r for r in rows if not r["finite"] or any(r.get(f"diff_{n}", 0) > 2e-2 for n in ("cudnn", "flash"))
           or any(not v["finite"] or v["diff_default"] > 2e-2 for v in r["variants"].values())]
    if bad:
        print(f"{len(bad)} row(s) disagree with SDPA or are not finite", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
