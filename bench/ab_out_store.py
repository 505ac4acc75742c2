#!/usr/bin/env python3
"""The Hopper forwards' epilogue, O by TMA stores against O straight from registers, in one process.

IOATTN_SM90_FWD_OUT_STORE is read at every launch (src/cuda/sm90/out_store.cuh), so the two are timed in turns on
the same inputs and clocks: the FP8 forward (e4m3 codes, one descale per batch and head) and the bf16 one, grid as
bench/sdpa_compare.py (16k total tokens, hidden 2048, heads = 2048 / D, causal and not). TFLOP/s count
4*B*H*S*S*D (halved when causal).

Usage: python3 bench/ab_out_store.py --lib build/libioattn.so [--dims 128,256] [--seqlens 1024,4096,16384]
"""
import argparse
import ctypes
import os
import sys

import torch

from cuda_timing import time_interleaved
from fp8_forward import quantize
from ioattn_abi import Fp8ForwardArgs, Fp8Scales, ForwardArgs, Tensor, check, environment, load, params, view


def forward_call(lib, kind, shape, causal):
    """A closure that runs one forward of `kind` (fp8 or bf16) on fresh N(0, 1) inputs of `shape`."""
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = torch.empty(shape, device="cuda", dtype=torch.bfloat16)
    p = params(lib)
    p.impl = b"cuda_sm90"
    if causal:
        p.mask.window_left, p.mask.window_right = -1, 0
    p.stream = torch.cuda.current_stream().cuda_stream
    if kind == "fp8":
        (q8, qd), (k8, kd), (v8, vd) = quantize(q), quantize(k), quantize(v)
        keep = (q8, k8, v8, qd, kd, vd)
        a = Fp8ForwardArgs(view(q8), view(k8), view(v8), Fp8Scales(view(qd), view(kd), view(vd), 0), view(out),
                           Tensor())
        entry = lib.ioattn_forward_fp8
    else:
        keep = (q, k, v)
        a = ForwardArgs(view(q), view(k), view(v), view(out), Tensor(), None)
        entry = lib.ioattn_forward
    return lambda keep=keep: check(lib, entry(ctypes.byref(a), ctypes.byref(p)), f"{kind} forward")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--dims", default="128,256")
    ap.add_argument("--seqlens", default="1024,4096,16384")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible to torch: skipped")
        return 0
    lib = load(args.lib)
    env = environment()
    print(f"{env['date']}  {env['gpu']}  driver {env['driver']}  torch {env['torch']}  CUDA {env['cuda']}\n")
    print("| forward | D | seqlen | causal | TMA stores | register stores | TMA / registers |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("fp8", "bf16"):
        for dim in (int(d) for d in args.dims.split(",")):
            for seqlen in (int(s) for s in args.seqlens.split(",")):
                for causal in (False, True):
                    batch, heads = 16384 // seqlen, 2048 // dim
                    call = forward_call(lib, kind, (batch, seqlen, heads, dim), causal)

                    def with_store(value, call=call):
                        def run():
                            os.environ["IOATTN_SM90_FWD_OUT_STORE"] = value
                            call()
                        return run

                    ms = time_interleaved({"tma": with_store("0"), "registers": with_store("1")}, 3, args.repeat,
                                          args.rounds)
                    flops = 4.0 * batch * heads * seqlen * seqlen * dim * (0.5 if causal else 1.0)
                    tma, registers = flops / ms["tma"] / 1e9, flops / ms["registers"] / 1e9
                    print(f"| {kind} | {dim} | {seqlen} | {'yes' if causal else 'no'} | {tma:.0f} | {registers:.0f} "
                          f"| {tma / registers:.3f} |", flush=True)
    os.environ.pop("IOATTN_SM90_FWD_OUT_STORE", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
