"""CUDA-event timing shared by the GPU benchmarks (sdpa_compare.py, fp8_forward.py, paged_decode.py,
ab_forward.py)."""
import statistics

import torch


def time_ms(fn, warmup, repeat):
    """Median of `repeat` CUDA-event timings, after `warmup` untimed calls."""
    return time_interleaved({"fn": fn}, warmup, repeat, rounds=1)["fn"]


def time_interleaved(fns, warmup, repeat, rounds=5, before_each=None):
    """{name: median ms} of each fn timed `repeat` times after `warmup` untimed calls; the fns take turns in `rounds`
    rounds, so that a drift of clocks over a measurement touches every fn alike (timed one after another, the same
    kernel measured 39.7 and 42.4 us in two columns of one run, H200 2026-11-21). `before_each`, when given, runs
    untimed before every timed call (e.g. an L2 flush)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    per_round = max(1, repeat // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(per_round)]
            for start, end in events:
                if before_each is not None:
                    before_each()
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize()
            times[name] += [start.elapsed_time(end) for start, end in events]
    return {name: statistics.median(t) for name, t in times.items()}
