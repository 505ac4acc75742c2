#!/usr/bin/env python3
"""Two builds of ioattn side by side in one process: the forward of library A and of library B on the same inputs,
timed in turns (rounds of CUDA-event timings), so that a change is measured against its baseline under the same
clocks (two processes, or two columns timed one after the other, differ by up to 10% on an H200: docs/PERF.md).

bf16, 16k total tokens, hidden 2048 (heads = 2048 / D), as bench/sdpa_compare.py. Prints TFLOP/s of each, B / A,
and the largest |out_B - out_A| (the outputs of two correct kernels differ by a few bf16 ulps).

Usage: python3 bench/ab_forward.py --lib-a base/libioattn.so --lib-b build/libioattn.so [--dims 64,128]
       [--seqlens 1024,4096] [--impl cuda_sm90] [--repeat 30] [--rounds 5]
"""
import argparse
import ctypes
import sys

import torch

from cuda_timing import time_interleaved
from ioattn_abi import ForwardArgs, Tensor, check, environment, load, params, view


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib-a", required=True, help="the baseline build")
    ap.add_argument("--lib-b", required=True, help="the build under test")
    ap.add_argument("--dims", default="64,128,256")
    ap.add_argument("--seqlens", default="1024,2048,4096,8192,16384")
    ap.add_argument("--impl", default="cuda_sm90")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible to torch: skipped")
        return 0
    libs = {"A": load(args.lib_a), "B": load(args.lib_b)}
    env = environment()
    print(f"{env['date']}  {env['gpu']}  driver {env['driver']}  torch {env['torch']}  CUDA {env['cuda']}\n"
          f"A = {args.lib_a}\nB = {args.lib_b}\n")
    print("| D | seqlen | causal | A TFLOP/s | B TFLOP/s | B / A | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for dim in (int(d) for d in args.dims.split(",")):
        for seqlen in (int(s) for s in args.seqlens.split(",")):
            for causal in (False, True):
                batch, heads = 16384 // seqlen, 2048 // dim
                shape = (batch, seqlen, heads, dim)
                gen = torch.Generator(device="cuda").manual_seed(seqlen * 1000 + dim + int(causal))
                q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(3))
                outs, fns, keep = {}, {}, []
                for name, lib in libs.items():
                    out = torch.full_like(q, float("nan"))
                    p = params(lib)
                    p.impl = args.impl.encode()
                    if causal:
                        p.mask.window_left, p.mask.window_right = -1, 0
                    p.stream = torch.cuda.current_stream().cuda_stream
                    a = ForwardArgs(view(q), view(k), view(v), view(out), Tensor(), None)
                    keep += [p, a]
                    fns[name] = (lambda lib=lib, a=a, p=p, name=name:
                                 check(lib, lib.ioattn_forward(ctypes.byref(a), ctypes.byref(p)), f"forward {name}"))
                    fns[name]()
                    outs[name] = out
                torch.cuda.synchronize()
                diff = (outs["A"].float() - outs["B"].float()).abs().max().item()
                ms = time_interleaved(fns, args.warmup, args.repeat, args.rounds)
                flops = 4.0 * batch * heads * seqlen * seqlen * dim * (0.5 if causal else 1.0)
                ta, tb = flops / ms["A"] / 1e9, flops / ms["B"] / 1e9
                print(f"| {dim} | {seqlen} | {'yes' if causal else 'no'} | {ta:.0f} | {tb:.0f} | {tb / ta:.3f} "
                      f"| {diff:.2e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
