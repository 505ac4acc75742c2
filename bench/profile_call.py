#!/usr/bin/env python3
"""One ioattn call at one point of the grid, repeated, for a profiler (scripts/device-profile) to pick a launch.

bf16, 16k total tokens, hidden 2048 (heads = 2048 / D), as bench/sdpa_compare.py. The forward runs once to give the
backward its out and lse; then the chosen call runs --calls times, synchronized after each.

--kernel-times runs the calls under torch.profiler instead and prints each kernel's mean duration per call: where
a call's time goes between its kernels (the backward's preprocessing, main kernel and dQ conversion), without an
external profiler.

Usage: python3 bench/profile_call.py --lib build/libioattn.so --op backward --dim 64 --seqlen 512 [--causal]
       [--impl cuda_sm90] [--calls 4] [--kernel-times]
"""
import argparse
import ctypes

import torch

from ioattn_abi import BackwardArgs, ForwardArgs, Tensor, check, load, params, view


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--op", choices=("forward", "backward"), default="backward")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=4096)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--impl", default="cuda_sm90")
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--kernel-times", action="store_true", help="print each kernel's mean time per call")
    args = ap.parse_args()
    lib = load(args.lib)
    batch, heads = 16384 // args.seqlen, 2048 // args.dim
    shape = (batch, args.seqlen, heads, args.dim)
    q, k, v, dout = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    out = torch.empty_like(q)
    lse = torch.empty((batch, heads, args.seqlen), device="cuda", dtype=torch.float32)
    dq, dk, dv = (torch.empty_like(t) for t in (q, k, v))
    p = params(lib)
    p.impl = args.impl.encode()
    if args.causal:
        p.mask.window_left, p.mask.window_right = -1, 0
    p.stream = torch.cuda.current_stream().cuda_stream
    fwd = ForwardArgs(view(q), view(k), view(v), view(out), view(lse), None)
    bwd = BackwardArgs(view(q), view(k), view(v), view(out), view(dout), view(lse), view(dq), view(dk), view(dv),
                       Tensor(), None)
    check(lib, lib.ioattn_forward(ctypes.byref(fwd), ctypes.byref(p)), "forward")
    def calls():
        for _ in range(args.calls):
            if args.op == "forward":
                check(lib, lib.ioattn_forward(ctypes.byref(fwd), ctypes.byref(p)), "forward")
            else:
                check(lib, lib.ioattn_backward(ctypes.byref(bwd), ctypes.byref(p)), "backward")
            torch.cuda.synchronize()

    if args.kernel_times:
        calls()  # warm-up: first-launch costs stay out of the profile
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            calls()
        per_kernel = {}
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                per_kernel.setdefault(e.name, []).append(e.device_time)
        total = sum(sum(t) for t in per_kernel.values()) / args.calls
        for name, times in sorted(per_kernel.items(), key=lambda kv: -sum(kv[1])):
            us = sum(times) / args.calls
            print(f"{us:9.1f} us {100 * us / total:5.1f}%  x{len(times) // args.calls}  {name[:110]}")
        print(f"{total:9.1f} us per call in all")
    else:
        calls()
    print(f"{args.op} D {args.dim} seqlen {args.seqlen} causal {args.causal}: {args.calls} calls, finite:",
          bool(torch.isfinite(out).all() and (args.op == "forward" or torch.isfinite(dq).all())))


if __name__ == "__main__":
    main()
