"""CUDA-event timing shared by the GPU benchmarks (sdpa_compare.py, fp8_forward.py)."""
import statistics

import torch


def time_ms(fn, warmup, repeat):
    """Median of `repeat` CUDA-event timings, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))
