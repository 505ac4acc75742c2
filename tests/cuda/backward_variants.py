#!/usr/bin/env python3
"""Tuning aid: the cuda backward's tiling variants (src/cuda/sm80/backward_config.hpp) against PyTorch SDPA flash.

bf16, the issue's grid (16k tokens, hidden 2048, heads = 2048 / D), causal and not. Each variant is picked per call
through IOATTN_SM80_BWD_VARIANT, so the library must be built with -DIOATTN_SM80_BWD_VARIANTS=ON (and the variants
named here in IOATTN_SM80_BWD_TUNING_VARIANTS). Prints backward TFLOP/s (2.5 x 4*B*H*S*S*D, halved when causal;
CUDA-event medians), each variant's largest gradient difference from flash's, and last a summary per variant: the
geometric mean and the lowest of its ratios to flash. Needs PyTorch with CUDA; reuses bench/sdpa_compare.py's
ctypes bindings.

Usage: python3 tests/cuda/backward_variants.py build/libioattn.so 64,128 512,1024,2048,4096,8192,16384 [0,1,6]
"""
import math, os, sys, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'bench'))
from sdpa_compare import IoAttn, time_ms, sdpa, max_diff, SDPBackend
lib = IoAttn(sys.argv[1])
dims = [int(x) for x in sys.argv[2].split(',')]
seqs = [int(x) for x in sys.argv[3].split(',')]
variants = [int(x) for x in sys.argv[4].split(',')] if len(sys.argv) > 4 else [0, 1]
print(f"{'D':>4} {'S':>6} {'cau':>3} {'flashTF':>7} " + " ".join(f"{'v'+str(v)+'TF':>6} {'err':>7}" for v in variants),
      flush=True)
ratios = {(D, v): [] for D in dims for v in variants}
for D in dims:
    for S in seqs:
        for causal in (False, True):
            B, H = 16384 // S, 2048 // D
            shape = (B, S, H, D)
            q, k, v, dout = (torch.randn(shape, device='cuda', dtype=torch.bfloat16) for _ in range(4))
            out = torch.empty_like(q); lse = torch.empty((B, H, S), device='cuda', dtype=torch.float32)
            lib.forward_fn(q, k, v, out, lse, causal)()
            flops = 2.5 * 4.0 * B * H * S * S * D * (0.5 if causal else 1.0)
            qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
            o = sdpa(SDPBackend.FLASH_ATTENTION, qg, kg, vg, causal)
            ref = torch.autograd.grad(o, (qg, kg, vg), dout, retain_graph=True)
            fl = time_ms(lambda: torch.autograd.grad(o, (qg, kg, vg), dout, retain_graph=True), 3, 10)
            cells = []
            for var in variants:
                os.environ['IOATTN_SM80_BWD_VARIANT'] = str(var)
                dq, dk, dv = (torch.full_like(t, float('nan')) for t in (q, k, v))
                bwd = lib.backward_fn(q, k, v, out, dout, lse, dq, dk, dv, causal)
                bwd(); torch.cuda.synchronize()
                err = max(max_diff(a, b) for a, b in zip((dq, dk, dv), ref))
                ms = time_ms(bwd, 3, 10)
                ratios[(D, var)].append(fl / ms)
                cells.append(f"{flops/ms/1e9:6.1f} {err:7.4f}")
            print(f"{D:>4} {S:>6} {int(causal):>3} {flops/fl/1e9:7.1f} " + " ".join(cells), flush=True)
            del q, k, v, dout, out, lse, qg, kg, vg, o, ref
            torch.cuda.empty_cache()
print("\nvariant / flash: geomean, min (D, variant)")
for (D, var), r in ratios.items():
    if r:
        print(f"D{D} v{var}: {math.exp(sum(map(math.log, r)) / len(r)):.3f} {min(r):.3f}")
