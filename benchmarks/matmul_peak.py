"""Measured matmul peak of this machine: a torch matmul loop, fp32, bf16 and int8 (int32 accumulation), in FLOP/s.

    python -m benchmarks.matmul_peak [--size 2048] [--threads 2] [--seconds 3]

The achieved FLOP/s of the training and inference benchmarks are compared against this number (a measured ceiling
for dense GEMM, not the vendor's peak).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from .common import log, markdown_table, write_results


def matmul_flops(size: int = 2048, dtype: str = "float32", threads: int | None = 2, seconds: float = 3.0,
                 device: str = "cpu") -> dict:
    """Best-of-repeats FLOP/s of ``a @ b`` for square ``size`` matrices (2 * size**3 FLOPs per product)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    if dtype == "int8":
        return int8_matmul_ops(size, threads, seconds)
    a = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):  # warm-up: thread pool, caches, kernel selection
        a @ b
    sync()
    best, runs, end = float("inf"), 0, time.perf_counter() + seconds
    while time.perf_counter() < end or runs < 3:
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
        runs += 1
    flops = 2 * size**3 / best
    return {"dtype": dtype, "size": size, "threads": torch.get_num_threads(), "runs": runs,
            "best_s": round(best, 5), "flops": flops, "gflops": round(flops / 1e9, 1)}


def int8_matmul_ops(size: int, threads: int | None, seconds: float) -> dict:
    """Best-of-repeats int8 GEMM ops/s on the CPU (int8 x int8 -> int32, 2 * size**3 per product), the better of
    torch's ``_int_mm`` and fbgemm's int8 linear (the VNNI kernels weight-only int8 engines such as CTranslate2's
    reach for); the dynamic linear's activation quantization is part of what it costs."""
    import torch

    a = torch.randint(-127, 127, (size, size), dtype=torch.int8)
    b = torch.randint(-127, 127, (size, size), dtype=torch.int8)
    kernels = {"torch._int_mm": lambda: torch._int_mm(a, b)}
    try:
        with warnings.catch_warnings():  # torch deprecates its quantized tensors; the kernel is what is measured
            warnings.simplefilter("ignore")
            linear = torch.ao.nn.quantized.dynamic.Linear(size, size)
        x = torch.randn(size, size)
        linear(x)
        kernels["fbgemm dynamic int8 linear"] = lambda: linear(x)
    except (RuntimeError, AttributeError):  # no fbgemm in this torch build
        pass
    best_rows = []
    for name, run in kernels.items():
        for _ in range(2):
            run()
        best, runs, end = float("inf"), 0, time.perf_counter() + seconds / len(kernels)
        while time.perf_counter() < end or runs < 3:
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
            runs += 1
        best_rows.append((best, runs, name))
    best, runs, name = min(best_rows)
    ops = 2 * size**3 / best
    return {"dtype": "int8", "kernel": name, "size": size, "threads": torch.get_num_threads(), "runs": runs,
            "best_s": round(best, 5), "flops": ops, "gflops": round(ops / 1e9, 1)}


def measure(size: int = 2048, threads: int | None = 2, seconds: float = 3.0) -> dict[str, float]:
    """{dtype: FLOP/s} for fp32 and bf16, for the other benchmarks to divide by."""
    return {d: matmul_flops(size, d, threads, seconds)["flops"] for d in ("float32", "bfloat16")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per dtype (best of the repeats)")
    parser.add_argument("--out-name", default="matmul_peak")
    args = parser.parse_args(argv)
    rows = []
    for dtype in ("float32", "bfloat16", "int8"):
        r = matmul_flops(args.size, dtype, args.threads, args.seconds)
        log(f"{dtype}: {r['gflops']} GFLOP/s ({r['runs']} runs)")
        rows.append(r)
    md = "## Matmul peak (torch, square matmul, best of repeats)\n\n" + markdown_table(
        rows, ["dtype", "size", "threads", "runs", "best_s", "gflops"])
    write_results(args.out_name, {"benchmark": "matmul_peak", "rows": rows}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
