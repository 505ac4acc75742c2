#!/usr/bin/env python3
"""PyTorch SDPA's backends as outside baselines for `ioattn check`: the same JSON line format, the same input
distributions (its own draws: a different random stream from ioattn's), the same fp64 reference and naive yardstick.

  python3 scripts/numerics-torch.py --json $OUT/torch.jsonl          # on the GPU machine
  python3 scripts/numerics-torch.py --dry-run                        # the case list, no torch needed
  python3 scripts/numerics-plot.py check.jsonl $OUT/torch.jsonl --out numerics.png

Backends: flash, efficient, cudnn, math (SDPA's math path in the inputs' dtype). A backend that refuses a case
(unsupported dtype, head dim or mask, or not built) gets a row with "error" and no numbers. What differs from
`ioattn check`, and why:
  - no lse rows: SDPA does not return the log-sum-exp through its public API;
  - softcap_limit is not run: SDPA has no logit softcap;
  - masked_rows needs a boolean mask (SDPA's is_causal aligns top-left, so it never empties a row): flash refuses
    it, and a backend that returns NaN for a row that sees nothing is reported as non-finite, which fails;
  - the bound has no "stored" yardstick (src/numerics/error_bound.hpp): err <= 2 * naive + 2 * eps * max(|ref|, 0.3).
GQA is run by repeating K and V over the query heads, so dK and dV are summed over each group by autograd.
"""
import argparse
import json
import sys

DTYPES = ("fp32", "fp16", "bf16")
INPUTS = ("random", "large_logits", "softcap_limit", "dominant_key", "masked_rows")
BACKENDS = ("flash", "efficient", "cudnn", "math")
EPS = {"fp32": 2.0**-23, "fp16": 2.0**-10, "bf16": 2.0**-7}
NAIVE_FACTOR, ALLOWANCE_ULPS, MAGNITUDE_FLOOR = 2.0, 2.0, 0.3  # src/numerics/error_bound.hpp


def plan(args):
    cases = []
    for inp in args.inputs.split(","):
        if inp not in INPUTS:
            sys.exit(f"numerics-torch: --inputs: unknown '{inp}' (expected {', '.join(INPUTS)})")
        for dtype in args.dtypes.split(","):
            if dtype not in DTYPES:
                sys.exit(f"numerics-torch: --dtypes: unknown '{dtype}'")
            lengths = [int(s) for s in args.seqlens.split(",")] if inp == "random" else [args.adversarial_seqlen]
            dims = [int(d) for d in args.head_dims.split(",")]
            dims = dims if inp == "random" else dims[:1]
            for s in lengths:
                for d in dims:
                    cases.append({"input": inp, "dtype": dtype, "seqlen": s, "dim": d})
    return cases


def problem_of(case, causal):
    """seqlen_k, mask and softcap for an input kind: the same rules as tools/ioattn/audit_run.cpp."""
    s, inp = case["seqlen"], case["input"]
    if inp == "masked_rows":
        return s, max(s // 2, 1), "causal", 0.0
    if inp == "softcap_limit":
        return s, s, "causal", 5.0
    if inp == "dominant_key":
        return s, s, "none", 0.0
    return s, s, "causal" if causal else "none", 0.0


def run(args):
    try:
        import torch
    except ImportError:
        sys.exit("numerics-torch: needs PyTorch (the GPU machine's python3 has it); --dry-run works without")
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device(args.device)
    tdtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    backend_enum = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": getattr(SDPBackend, "CUDNN_ATTENTION", None),
        "math": SDPBackend.MATH,
    }
    backends = [b for b in args.backends.split(",") if b]
    seed = args.seed if args.seed is not None else torch.seed() % (2**62)
    B, Hq, Hk = args.batch, args.heads, args.kv_heads
    group = Hq // Hk

    def visible(sq, sk, mask):
        """Bottom-right causal, as ioattn: query i sees key j iff j <= i + sk - sq."""
        if mask == "none":
            return None
        i = torch.arange(sq, device=dev).unsqueeze(1)
        j = torch.arange(sk, device=dev).unsqueeze(0)
        return j <= i + (sk - sq)

    def draw(case, sq, sk, gen_seed):
        g = torch.Generator().manual_seed(gen_seed)
        d = case["dim"]
        q = torch.randn(B, Hq, sq, d, generator=g, dtype=torch.float64)
        k = torch.randn(B, Hk, sk, d, generator=g, dtype=torch.float64)
        v = torch.randn(B, Hk, sk, d, generator=g, dtype=torch.float64)
        do = torch.randn(B, Hq, sq, d, generator=g, dtype=torch.float64)
        if case["input"] == "large_logits":
            q, k = q * 5, k * 5
        elif case["input"] == "softcap_limit":
            q, k = q * 8, k * 8
        elif case["input"] == "dominant_key":
            # One shared direction u per (batch, kv head) in every query, one key a*u with a logit near 12.
            for b in range(B):
                for hk in range(Hk):
                    u = q[b, hk * group, 0].clone()
                    heads = slice(hk * group, (hk + 1) * group)
                    q[b, heads] = u + 0.3 * q[b, heads]
                    q[b, hk * group, 0] = u
                    a = 12.0 * d**0.5 / max(float(u @ u), 1e-6)
                    k[b, hk, (b * 7919 + hk * 104729 + 13) % sk] = a * u
        dt = tdtype[case["dtype"]]
        # Round to the dtype once: every implementation and the fp64 reference see the same representable inputs.
        return [t.to(dt).to(dev) for t in (q, k, v, do)]

    def expand(t):
        return t.repeat_interleave(group, dim=1) if group > 1 else t

    def reference(q, k, v, do, mask, softcap):
        """fp64, materialized; a row that sees nothing gives out = 0 and zero gradients (ioattn's convention)."""
        q, k, v = (t.double().detach().requires_grad_(True) for t in (q, k, v))
        s = (q @ expand(k).transpose(-1, -2)) * q.shape[-1] ** -0.5
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        m = s.amax(-1, keepdim=True).clamp_min(-1e300).detach()  # softmax is shift-invariant: no gradient
        p = torch.exp(s - m)
        p = p / p.sum(-1, keepdim=True).clamp_min(1e-300)
        out = p @ expand(v)
        out.backward(do.double())
        return out.detach(), q.grad, k.grad, v.grad

    def naive(q, k, v, do, mask, softcap):
        """The same-precision program of src/cpu/naive.cpp: products in the dtype, softmax in fp32, P in dtype."""
        q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
        s = (q * q.shape[-1] ** -0.5) @ expand(k).transpose(-1, -2)
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        p = torch.softmax(s.float(), dim=-1).nan_to_num(0.0).to(q.dtype)
        out = p @ expand(v)
        out.backward(do)
        return out.detach(), q.grad, k.grad, v.grad

    def sdpa(backend, q, k, v, do, mask):
        q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
        with sdpa_kernel([backend_enum[backend]]):
            if mask is None:
                out = F.scaled_dot_product_attention(q, expand(k), expand(v))
            elif mask.shape[0] == mask.shape[1]:
                out = F.scaled_dot_product_attention(q, expand(k), expand(v), is_causal=True)  # top-left = br here
            else:
                out = F.scaled_dot_product_attention(q, expand(k), expand(v), attn_mask=mask)
            out.backward(do)
        return out.detach(), q.grad, k.grad, v.grad

    def stats(name, got, ref, nv, eps):
        got, ref, nv = got.double().flatten(), ref.double().flatten(), nv.double().flatten()
        finite = torch.isfinite(got)
        nonfinite = int((~finite).sum())
        err = (got - ref).abs()[finite]
        nerr = (nv - ref).abs()
        ref_max = float(ref.abs().max()) if ref.numel() else 0.0
        max_abs = float(err.max()) if err.numel() else 0.0
        naive_max = float(nerr.max()) if nerr.numel() else 0.0
        bound = NAIVE_FACTOR * naive_max + ALLOWANCE_ULPS * eps * max(ref_max, MAGNITUDE_FLOOR)
        sum_ref = float(ref.abs()[finite].sum())
        return {
            "tensor": name, "count": ref.numel(),
            "max_abs": max_abs, "mean_abs": float(err.mean()) if err.numel() else 0.0,
            "max_rel": max_abs / ref_max if ref_max > 0 else 0.0,
            "mean_rel": float(err.sum()) / sum_ref if sum_ref > 0 else 0.0,
            "naive_max_abs": naive_max, "naive_mean_abs": float(nerr.mean()) if nerr.numel() else 0.0,
            "ratio": max_abs / naive_max if naive_max > 0 else (None if max_abs > 0 else 1.0),
            "bound": bound, "nonfinite": nonfinite, "pass": nonfinite == 0 and max_abs <= bound,
        }

    out_file = open(args.json, "w") if args.json else sys.stdout
    failed = 0
    for n, case in enumerate(plan(args)):
        sq, sk, mask_kind, softcap = problem_of(case, not args.no_mask)
        head = {"source": "torch", "impl": "", "tiles": "", "input": case["input"], "dtype": case["dtype"],
                "batch": B, "heads": Hq, "kv_heads": Hk, "seqlen_q": sq, "seqlen_k": sk, "head_dim": case["dim"],
                "mask": mask_kind, "softcap": softcap, "seed": seed + 1000003 * (n + 1),
                "torch": torch.__version__, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
        q, k, v, do = draw(case, sq, sk, head["seed"])
        mask = visible(sq, sk, mask_kind)
        ref = reference(q, k, v, do, mask, softcap)
        nv = naive(q, k, v, do, mask, softcap)
        eps = EPS[case["dtype"]]
        names = ("out", "dq", "dk", "dv")

        def emit(impl, got):
            nonlocal failed
            for name, g, r, x in zip(names, got, ref, nv):
                row = dict(head, impl=impl, **stats(name, g, r, x, eps))
                failed += impl != "naive" and not row["pass"]
                out_file.write(json.dumps(row) + "\n")

        emit("naive", nv)
        for backend in backends:
            impl = f"sdpa-{backend}"
            why = None
            if softcap > 0:
                why = "SDPA has no logit softcap"
            elif backend_enum.get(backend) is None:
                why = f"this torch has no {backend} backend"
            if why is None:
                try:
                    got = sdpa(backend, q, k, v, do, mask)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    emit(impl, got)
                    continue
                except RuntimeError as e:
                    why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            out_file.write(json.dumps(dict(head, impl=impl, error=why)) + "\n")
        out_file.flush()
        print(f"numerics-torch: {case['input']} {case['dtype']} seqlen {sq} dim {case['dim']} done", file=sys.stderr)
    if out_file is not sys.stdout:
        out_file.close()
    print(f"numerics-torch: {failed} (backend, tensor) rows over 2x naive + allowance", file=sys.stderr)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write JSON lines here (default: stdout)")
    ap.add_argument("--dtypes", default="fp16,bf16", help="default fp16,bf16 (SDPA's flash has no fp32)")
    ap.add_argument("--seqlens", default="128,512,2048,8192")
    ap.add_argument("--head-dims", default="64,128")
    ap.add_argument("--inputs", default="random,large_logits,dominant_key,masked_rows")
    ap.add_argument("--adversarial-seqlen", type=int, default=2048)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--kv-heads", type=int, default=1)
    ap.add_argument("--no-mask", action="store_true", help="random and large_logits without the causal mask")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--device", default="cuda", help="torch device (cuda; cpu runs the math backend only)")
    ap.add_argument("--dry-run", action="store_true", help="print the cases and exit (does not import torch)")
    args = ap.parse_args()
    if args.heads % args.kv_heads:
        sys.exit("numerics-torch: --heads must be a multiple of --kv-heads")
    if args.dry_run:
        for case in plan(args):
            sq, sk, mask, softcap = problem_of(case, not args.no_mask)
            print(f"{case['input']:14s} {case['dtype']:5s} {sq:6d}x{sk:<6d} dim {case['dim']:4d} mask {mask:6s} "
                  f"softcap {softcap:g}  backends {args.backends}")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
