#!/usr/bin/env python3
"""Summarizes a paged-forward timeline written by a trace build (src/cuda/paged/trace.cuh): when the decode CTAs
start, how long until their first tile lands, how long their key loops and epilogues take, how the grid drains, and
when the combine runs. All times in microseconds from the first CTA's start.

Usage: python3 tools/paged_trace.py TRACE_FILE [TRACE_FILE ...]
"""
import statistics
import sys


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))] if values else float("nan")


def row(name, values):
    if not values:
        return f"  {name:<28} (none)"
    return (f"  {name:<28} min {min(values):7.2f}  p10 {pct(values, .1):7.2f}  p50 {pct(values, .5):7.2f}  "
            f"p90 {pct(values, .9):7.2f}  max {max(values):7.2f}")


def summarize(path):
    decode, combine = [], []
    with open(path) as f:
        next(f)
        for line in f:
            kind, cta, sm, *times = line.split()
            (decode if kind == "decode" else combine).append((int(cta), int(sm), [int(t) for t in times]))
    t0 = min(t[0] for _, _, t in decode)
    us = lambda t: (t - t0) / 1000.0  # noqa: E731
    print(f"== {path}: {len(decode)} decode CTAs on {len({sm for _, sm, _ in decode})} SMs, {len(combine)} combine CTAs")
    full = [t for _, _, t in decode if all(t)]
    print(row("decode start", [us(t[0]) for _, _, t in decode]))
    print(row("first tile - start", [(t[1] - t[0]) / 1000 for t in full]))
    print(row("key loop (first..end)", [(t[2] - t[1]) / 1000 for t in full]))
    print(row("epilogue (loop end..end)", [(t[3] - t[2]) / 1000 for t in full]))
    print(row("decode end", [us(t[3]) for t in full]))
    if combine:
        print(row("combine start", [us(t[0]) for _, _, t in combine]))
        print(row("combine released (wait)", [us(t[1]) for _, _, t in combine if t[1]]))
        print(row("combine end", [us(t[3]) for _, _, t in combine if t[3]]))
    end = max([us(t[3]) for t in full] + [us(t[3]) for _, _, t in combine if t[3]])
    # Busy SMs over time (an SM counts while any of its decode CTAs runs), in 1 us steps.
    spans = {}
    for _, sm, t in decode:
        if t[3]:
            spans.setdefault(sm, []).append((us(t[0]), us(t[3])))
    steps = int(end) + 1
    busy = []
    for s in range(steps):
        busy.append(sum(1 for iv in spans.values() if any(a <= s + 0.5 < b for a, b in iv)))
    print(f"  last event at {end:.2f} us; SMs busy with decode per microsecond:")
    print("   " + " ".join(str(b) for b in busy))
    # Per SM, the time any of its decode CTAs ran (the union of their spans).
    busy_us = 0.0
    for intervals in spans.values():
        covered_to = float("-inf")
        for a, e in sorted(intervals):
            busy_us += max(0.0, e - max(a, covered_to))
            covered_to = max(covered_to, e)
    print(f"  SMs busy with decode {busy_us:.0f} SM-us of {len(spans)} SMs x {end:.1f} us "
          f"= {100 * busy_us / (len(spans) * end):.0f}%")

for p in sys.argv[1:]:
    summarize(p)
