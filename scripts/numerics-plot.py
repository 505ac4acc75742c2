#!/usr/bin/env python3
"""Plot error against sequence length from `ioattn check --json` lines (and scripts/numerics-torch.py's).

One column per dtype, one row per tensor; one line per implementation and head dim, log-log. The naive
same-precision program is drawn dashed: an implementation below it is more accurate than plain PyTorch code in
that dtype, the test suite's bound is twice it.

  python3 scripts/numerics-plot.py check.jsonl [torch.jsonl ...] --out numerics.png
"""
import argparse
import json
import sys
from collections import defaultdict


def load(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"numerics-plot: {path}:{n}: not JSON ({e})")
    return rows


def series_label(row):
    label = row["impl"]
    if row.get("source", "ioattn") != "ioattn" and not label.startswith(row["source"]):
        label = f'{row["source"]} {label}'
    if row.get("tiles") not in (None, "", "default"):
        label += f' {row["tiles"]}'
    return f'{label} d{row["head_dim"]}'


def print_markdown(rows):
    """One line per (case, implementation): max_abs per tensor with its ratio to the naive program's max_abs."""
    rows = [r for r in rows if "tensor" in r and r.get("tiles") in (None, "", "default")]
    tensors = [t for t in ("out", "lse", "dq", "dk", "dv") if any(r["tensor"] == t for r in rows)]
    table = defaultdict(dict)
    for r in rows:
        key = (r["input"], r["dtype"], r["seqlen_q"], r["seqlen_k"], r["head_dim"], r.get("source", "ioattn"), r["impl"])
        table[key][r["tensor"]] = r
    print("| input | dtype | seqlen q x k | dim | impl | " + " | ".join(f"{t} max_abs (x naive)" for t in tensors) + " |")
    print("|---" * (5 + len(tensors)) + "|")
    for key in table:
        inp, dtype, sq, sk, d, source, impl = key
        cells = []
        for t in tensors:
            r = table[key].get(t)
            if r is None:
                cells.append("")
            elif impl == "naive":
                cells.append(f"{r['max_abs']:.2e}")
            else:
                ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}"
                cells.append(f"{r['max_abs']:.2e} ({ratio})" + ("" if r["pass"] else " FAIL"))
        name = impl if source == "ioattn" or impl == "naive" else f"{source} {impl}"
        print(f"| {inp} | {dtype} | {sq} x {sk} | {d} | {name} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", nargs="+", help="JSON lines from ioattn check --json / numerics-torch.py --json")
    ap.add_argument("--out", help="PNG file to write")
    ap.add_argument("--markdown", action="store_true",
                    help="print a Markdown table (every input kind, default tiles) instead of / besides the plot")
    ap.add_argument("--input", default="random", help="input kind to plot (default: random)")
    ap.add_argument("--tensors", default="out,dq", help="comma-separated tensors, one row each (default: out,dq)")
    ap.add_argument("--metric", default="max_abs", choices=["max_abs", "mean_abs", "max_rel", "mean_rel"])
    ap.add_argument("--all-tiles", action="store_true", help="one line per tile size (default: default tiles only)")
    args = ap.parse_args()

    if args.markdown:
        print_markdown(load(args.jsonl))
    if not args.out:
        if not args.markdown:
            sys.exit("numerics-plot: give --out FILE.png, or --markdown")
        return

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in load(args.jsonl) if "tensor" in r and r.get("input") == args.input]
    if not args.all_tiles:
        rows = [r for r in rows if r.get("tiles") in (None, "", "default")]
    if not rows:
        sys.exit(f"numerics-plot: no rows with input '{args.input}' in {', '.join(args.jsonl)}")
    tensors = [t for t in args.tensors.split(",") if t]
    dtypes = [d for d in ("fp32", "fp16", "bf16") if any(r["dtype"] == d for r in rows)]

    fig, axes = plt.subplots(len(tensors), len(dtypes), figsize=(5 * len(dtypes), 3.6 * len(tensors)),
                             squeeze=False)
    for ti, tensor in enumerate(tensors):
        for di, dtype in enumerate(dtypes):
            ax = axes[ti][di]
            # (label) -> seqlen -> worst value over repeated cases (seeds, masks) at that length
            series = defaultdict(dict)
            for r in rows:
                if r["tensor"] != tensor or r["dtype"] != dtype or r.get(args.metric) is None:
                    continue
                points = series[series_label(r)]
                s = r["seqlen_q"]
                points[s] = max(points.get(s, 0.0), r[args.metric])
            for label in sorted(series):
                xs = sorted(series[label])
                ys = [max(series[label][x], 1e-12) for x in xs]
                style = "--" if label.startswith("naive") or " math" in label else "-"
                ax.plot(xs, ys, style, marker="o", markersize=3, label=label)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{tensor}, {dtype}")
            ax.set_xlabel("sequence length")
            ax.set_ylabel(f"{args.metric} vs fp64")
            ax.grid(True, which="both", alpha=0.3)
            if series:
                ax.legend(fontsize=7)
    fig.suptitle(f"error against the fp64 reference, input: {args.input}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"numerics-plot: wrote {args.out}")


if __name__ == "__main__":
    main()
