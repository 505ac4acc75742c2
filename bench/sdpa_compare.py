#!/usr/bin/env python3
"""ioattn's cuda backend against PyTorch SDPA (flash and cuDNN backends), in one run on one GPU.

Grid (docs/PERF.md): 16k total tokens, hidden 2048 (heads = 2048 / D), D in 64/128/256, seqlen 512..16k, causal and
not, bf16, forward and backward. ioattn is called through its C ABI (include/ioattn/ioattn.h) with ctypes, on
PyTorch's current CUDA stream, on the same tensors. Times are CUDA-event medians after warm-up; TFLOP/s count
4*B*H*S*S*D for the forward (halved when causal) and 2.5 times that for the backward. Outputs are checked: ioattn's
out (and gradients) against flash's, with the flash-vs-cuDNN difference as the yardstick of what two correct
kernels disagree by.

Usage: python3 bench/sdpa_compare.py --lib build/libioattn.so [--json out.json] [--dims 64,128,256]
       [--seqlens 512,1024,...] [--no-backward] [--warmup 5] [--repeat 20] [--variants 0,1,2] [--deterministic]

--variants times the forward once per value of IOATTN_FWD_VARIANT (read by the library at each launch in a build
with -DIOATTN_FWD_VARIANTS, see src/cuda/sm80/forward_launch.cuh), each checked against flash like the default, in
--rounds rounds that alternate with flash, and prints one more table.
"""
import argparse
import ctypes
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cuda_timing import time_ms
from ioattn_abi import BackwardArgs, ForwardArgs, Tensor, check, environment, load, params, view

class IoAttn:
    def __init__(self, path, forward_impl="cuda", backward_impl="cuda", deterministic=False):
        self.forward_impl = forward_impl.encode()
        self.backward_impl = backward_impl.encode()
        self.deterministic = deterministic
        self.lib = load(path)

    def params(self, causal, impl=b"cuda"):
        p = params(self.lib)
        p.impl = impl
        if causal:
            p.mask.window_left, p.mask.window_right = -1, 0
        p.stream = torch.cuda.current_stream().cuda_stream
        return p

    def check(self, status, what):
        check(self.lib, status, what)

    def forward_fn(self, q, k, v, out, lse, causal):
        args = ForwardArgs(view(q), view(k), view(v), view(out), view(lse), None)
        params = self.params(causal, self.forward_impl)
        fwd, a, p = self.lib.ioattn_forward, ctypes.byref(args), ctypes.byref(params)
        return lambda: self.check(fwd(a, p), "forward")

    def backward_fn(self, q, k, v, out, dout, lse, dq, dk, dv, causal):
        args = BackwardArgs(view(q), view(k), view(v), view(out), view(dout), view(lse), view(dq), view(dk),
                            view(dv), Tensor(), None)
        params = self.params(causal, self.backward_impl)
        params.deterministic = int(self.deterministic)
        bwd, a, p = self.lib.ioattn_backward, ctypes.byref(args), ctypes.byref(params)
        return lambda: self.check(bwd(a, p), "backward")


VARIANT_ENV = "IOATTN_FWD_VARIANT"  # what --variants sets (--variant-env)


def sdpa(backend, q, k, v, causal):
    """q, k, v: [B, S, H, D]; SDPA wants [B, H, S, D] (a transposed view, no copy)."""
    with sdpa_kernel(backend):
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return o.transpose(1, 2)


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def run_point(lib, dim, seqlen, causal, args):
    total_tokens, hidden = 16384, 2048
    batch, heads = total_tokens // seqlen, hidden // dim
    gen = torch.Generator(device="cuda").manual_seed(seqlen * 1000 + dim + int(causal))
    shape = (batch, seqlen, heads, dim)
    q, k, v, dout = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(4))
    out = torch.full(shape, float("nan"), device="cuda", dtype=torch.bfloat16)
    lse = torch.full((batch, heads, seqlen), float("nan"), device="cuda", dtype=torch.float32)
    flops_fwd = 4.0 * batch * heads * seqlen * seqlen * dim * (0.5 if causal else 1.0)
    row = {"dim": dim, "seqlen": seqlen, "batch": batch, "heads": heads, "causal": causal}

    fwd = lib.forward_fn(q, k, v, out, lse, causal)
    fwd()
    torch.cuda.synchronize()
    o_flash = sdpa(SDPBackend.FLASH_ATTENTION, q, k, v, causal)
    o_cudnn = sdpa(SDPBackend.CUDNN_ATTENTION, q, k, v, causal)
    row["fwd_err_vs_flash"] = max_diff(out, o_flash)
    row["fwd_flash_vs_cudnn"] = max_diff(o_flash, o_cudnn)
    row["fwd_nonfinite"] = int((~torch.isfinite(out)).sum().item())
    # Two correct bf16 kernels differ by a few bf16 ulps of |out| <= max|v|; allow 2x what flash and cuDNN differ by.
    row["fwd_ok"] = row["fwd_nonfinite"] == 0 and row["fwd_err_vs_flash"] <= max(2 * row["fwd_flash_vs_cudnn"], 2e-2)

    for name, fn in (("ioattn", fwd), ("flash", lambda: sdpa(SDPBackend.FLASH_ATTENTION, q, k, v, causal)),
                     ("cudnn", lambda: sdpa(SDPBackend.CUDNN_ATTENTION, q, k, v, causal))):
        ms = time_ms(fn, args.warmup, args.repeat)
        row[f"fwd_{name}_ms"] = ms
        row[f"fwd_{name}_tflops"] = flops_fwd / ms / 1e9

    for var in args.variants:
        os.environ[VARIANT_ENV] = str(var)
        out.fill_(float("nan"))
        fwd()
        torch.cuda.synchronize()
        err = max_diff(out, o_flash)
        row[f"fwd_v{var}_ok"] = int((~torch.isfinite(out)).sum().item()) == 0 and \
            err <= max(2 * row["fwd_flash_vs_cudnn"], 2e-2)
        row[f"fwd_v{var}_err"] = err
    if args.variants:
        # Rounds over flash and every variant in turn, so that a drifting clock touches all of them alike; the
        # median over rounds of each one's median.
        samples = {name: [] for name in ["flash"] + args.variants}
        for _ in range(args.rounds):
            for name in samples:
                if name == "flash":
                    samples[name].append(time_ms(lambda: sdpa(SDPBackend.FLASH_ATTENTION, q, k, v, causal), 2,
                                                 args.repeat))
                else:
                    os.environ[VARIANT_ENV] = str(name)
                    samples[name].append(time_ms(fwd, 2, args.repeat))
        row["fwd_rounds_flash_tflops"] = flops_fwd / statistics.median(samples["flash"]) / 1e9
        for var in args.variants:
            row[f"fwd_v{var}_tflops"] = flops_fwd / statistics.median(samples[var]) / 1e9
            row[f"fwd_v{var}_spread"] = (max(samples[var]) - min(samples[var])) / statistics.median(samples[var])
    os.environ.pop(VARIANT_ENV, None)

    if args.backward:
        flops_bwd = 2.5 * flops_fwd
        dq, dk, dv = (torch.full_like(t, float("nan")) for t in (q, k, v))
        try:
            bwd = lib.backward_fn(q, k, v, out, dout, lse, dq, dk, dv, causal)
            bwd()
            torch.cuda.synchronize()
            row["bwd_ioattn_ms"] = time_ms(bwd, args.warmup, args.repeat)
            row["bwd_ioattn_tflops"] = flops_bwd / row["bwd_ioattn_ms"] / 1e9
        except RuntimeError as e:
            row["bwd_ioattn_error"] = str(e)
        flash_grads = None
        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
            o = sdpa(backend, qg, kg, vg, causal)
            grads = torch.autograd.grad(o, (qg, kg, vg), dout, retain_graph=True)
            if name == "flash" and "bwd_ioattn_ms" in row:
                row["bwd_err_vs_flash"] = max(max_diff(a, b) for a, b in zip((dq, dk, dv), grads))
            if name == "cudnn" and "bwd_err_vs_flash" in row:
                row["bwd_flash_vs_cudnn"] = max(max_diff(a, b) for a, b in zip(flash_grads, grads))
                row["bwd_ok"] = row["bwd_err_vs_flash"] <= max(2 * row["bwd_flash_vs_cudnn"], 5e-2)
            flash_grads = grads
            ms = time_ms(lambda: torch.autograd.grad(o, (qg, kg, vg), dout, retain_graph=True), args.warmup,
                         args.repeat)
            row[f"bwd_{name}_ms"] = ms
            row[f"bwd_{name}_tflops"] = flops_bwd / ms / 1e9
    return row


def fmt(x, spec=".0f"):
    return "-" if x is None else format(x, spec)


def print_table(rows, env):
    print(f"\n{env['date']}  {env['gpu']}  driver {env['driver']}  torch {env['torch']}  CUDA {env['cuda']}  "
          f"cuDNN {env['cudnn']}  bf16, TFLOP/s (CUDA-event medians)\n")
    head = ("| D | seqlen | causal | fwd ioattn | fwd flash | fwd cuDNN | /flash | /cuDNN | out ok |"
            " bwd ioattn | bwd flash | bwd cuDNN | /flash | /cuDNN | grads ok |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        fi, ff, fc = r["fwd_ioattn_tflops"], r["fwd_flash_tflops"], r["fwd_cudnn_tflops"]
        bi, bf, bc = r.get("bwd_ioattn_tflops"), r.get("bwd_flash_tflops"), r.get("bwd_cudnn_tflops")
        print(f"| {r['dim']} | {r['seqlen']} | {'yes' if r['causal'] else 'no'} | {fmt(fi)} | {fmt(ff)} | {fmt(fc)} | "
              f"{fi / ff:.2f} | {fi / fc:.2f} | {'yes' if r['fwd_ok'] else 'NO'} | {fmt(bi)} | {fmt(bf)} | {fmt(bc)} | "
              f"{fmt(bi / bf if bi else None, '.2f')} | {fmt(bi / bc if bi else None, '.2f')} | "
              f"{ {True: 'yes', False: 'NO', None: '-'}[r.get('bwd_ok')] } |")


def print_variant_table(rows, variants):
    print(f"\nforward variants ({VARIANT_ENV}), timed in rounds with flash: TFLOP/s and x flash;"
          " * = output off from flash")
    print("| D | seqlen | causal | flash | " + " | ".join(f"v{v}" for v in variants) + " |")
    print("|" + "---|" * (4 + len(variants)))
    for r in rows:
        ff = r["fwd_rounds_flash_tflops"]
        cells = [f"{r[f'fwd_v{v}_tflops']:.0f} ({r[f'fwd_v{v}_tflops'] / ff:.2f}){'' if r[f'fwd_v{v}_ok'] else '*'}"
                 for v in variants]
        print(f"| {r['dim']} | {r['seqlen']} | {'yes' if r['causal'] else 'no'} | {ff:.0f} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", required=True, help="path to libioattn.so (built with CUDA)")
    ap.add_argument("--json", help="write every measured row here")
    ap.add_argument("--dims", default="64,128,256")
    ap.add_argument("--seqlens", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--no-backward", dest="backward", action="store_false")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the interleaved variant timings")
    ap.add_argument("--variants", default="", help="comma-separated IOATTN_FWD_VARIANT values to time as well")
    ap.add_argument("--variant-env", default="IOATTN_FWD_VARIANT",
                    help="the variable --variants sets (IOATTN_SM90_FWD_VARIANT for the cuda_sm90 forward)")
    ap.add_argument("--impl", default="cuda", help="ioattn backend (e.g. cuda_sm90, auto) for forward and backward")
    ap.add_argument("--bwd-impl", help="ioattn backend for the backward when it differs from --impl")
    ap.add_argument("--deterministic", action="store_true", help="ioattn's backward in its deterministic order")
    args = ap.parse_args()
    global VARIANT_ENV
    VARIANT_ENV = args.variant_env
    args.variants = [int(v) for v in args.variants.split(",") if v != ""]

    lib = IoAttn(args.lib, args.impl, args.bwd_impl or args.impl, args.deterministic)
    env = environment()
    env["ioattn"] = lib.lib.ioattn_version().decode()
    print(f"ioattn {env['ioattn']} backends: {lib.lib.ioattn_backends().decode()}", flush=True)
    rows = []
    for dim in (int(d) for d in args.dims.split(",")):
        for seqlen in (int(s) for s in args.seqlens.split(",")):
            for causal in (False, True):
                try:
                    row = run_point(lib, dim, seqlen, causal, args)
                except Exception as e:  # noqa: BLE001 - one failing point must not hide the rest of the grid
                    print(f"D={dim} S={seqlen} causal={causal}: FAILED: {e}", flush=True)
                    continue
                rows.append(row)
                print(json.dumps(row), flush=True)
                torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=1)
    print_table(rows, env)
    if args.variants:
        print_variant_table(rows, args.variants)
    bad = [r for r in rows if not r["fwd_ok"] or r.get("bwd_ok") is False or
           any(not r[f"fwd_v{v}_ok"] for v in args.variants)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
