#!/usr/bin/env python3
"""PyTorch's side of examples/conv_timing.rs: the same convolution (3x3,
128 -> 128, (64, 128, 14, 14), f32, padding 1, no bias), the same four calls
as the PyTorch reference harness (`torch_film.py --micro-ops conv`, kept outside this
repository), each reported with its
wall-time median and minimum and the process CPU time per call (cpu_ms).

With --threads 1, cpu_ms is the single-core cost of a call, which other
processes on a shared machine inflate much less than wall time (with more
threads it also counts OpenMP's spin-waiting, so compare at 1 thread).

    ~/.cache/torchenv/bin/python crates/film-conv/scripts/torch_conv_cpu_time.py --threads 1
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

WARMUP = 3


def timed(fn, iterations):
    for _ in range(WARMUP):
        fn()
    wall = []
    cpu_start = time.process_time()
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        wall.append((time.perf_counter() - start) * 1e3)
    cpu_ms = (time.process_time() - cpu_start) * 1e3 / iterations
    return wall, cpu_ms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(64, 128, 14, 14)
    wt = torch.randn(128, 128, 3, 3) / math.sqrt(128 * 9)
    gy = torch.randn(64, 128, 14, 14)
    xg = x.clone().requires_grad_(True)
    wg = wt.clone().requires_grad_(True)

    def fwd_bwd():
        xg.grad = None
        wg.grad = None
        F.conv2d(xg, wg, padding=1).sum().backward()

    cases = [
        ("conv2d_fwd", lambda: F.conv2d(x, wt, padding=1), True),
        ("conv2d_fwd_bwd", fwd_bwd, False),
        ("conv2d_bwd_input", lambda: F.conv_transpose2d(gy, wt, padding=1), True),
        ("conv2d_bwd_weight", lambda: torch.nn.grad.conv2d_weight(x, wt.shape, gy, padding=1), False),
    ]
    for what, fn, no_grad in cases:
        if no_grad:
            with torch.no_grad():
                wall, cpu_ms = timed(fn, args.iterations)
        else:
            wall, cpu_ms = timed(fn, args.iterations)
        print(json.dumps(dict(impl="torch", torch=torch.__version__, threads=args.threads, what=what,
                              shape="64x128x14x14_k3x3_128to128_pad1",
                              median_ms=round(statistics.median(wall), 4), min_ms=round(min(wall), 4),
                              cpu_ms=round(cpu_ms, 1), n=len(wall))))


if __name__ == "__main__":
    main()
