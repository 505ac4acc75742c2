#!/usr/bin/env python3
"""Where a kernel's warps wait, from an Nsight Compute source export (scripts/device-profile writes one):

    ncu -i report.ncu-rep --page source --csv --print-source sass > source.csv
    python3 tools/ncu_hot.py source.csv [N]

Prints the stall samples summed by opcode, then the N SASS instructions (default 40) with the most samples, each with
its address, text, samples and the stall-reason columns that are not zero for it. The export's column names vary
between Nsight Compute versions, so columns are found by the words in their names.
"""
import collections
import csv
import sys


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    # ncu may print a line or two before the header: the header is the first line naming the SASS source column.
    start = next((i for i, line in enumerate(lines) if '"Source"' in line or "Source," in line), 0)
    rows = list(csv.DictReader(lines[start:]))
    if not rows:
        print("no rows in", path)
        return
    columns = list(rows[0].keys())
    samples = next((c for c in columns if "Sampling" in c and "All" in c), None) or \
        next((c for c in columns if "Sampling" in c), None)
    if samples is None:
        print("no warp-sampling column; columns:", columns)
        return
    reasons = [c for c in columns if c != samples and ("stall" in c.lower() or "Sampling" in c)]
    total = sum(number(r[samples]) for r in rows) or 1.0
    by_opcode = collections.Counter()
    for r in rows:
        text = r.get("Source", "").strip()
        words = [w for w in text.split() if not w.startswith("@")]
        by_opcode[words[0] if words else "?"] += number(r[samples])
    print(f"{int(total)} samples ({samples}); by opcode:")
    for op, n in by_opcode.most_common(15):
        print(f"  {op:<24} {n / total:6.1%}")
    print(f"\ntop {top} instructions:")
    for r in sorted(rows, key=lambda r: -number(r[samples]))[:top]:
        n = number(r[samples])
        if n == 0:
            break
        extra = ", ".join(f"{c}={int(number(r[c]))}" for c in reasons if number(r[c]) > 0)
        print(f"{r.get('Address', '?'):>8} {n / total:6.1%}  {r.get('Source', '').strip()[:70]:<70}  {extra}")


if __name__ == "__main__":
    main()
