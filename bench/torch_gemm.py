#!/usr/bin/env python3
"""PyTorch matmul on the shapes of `kdgpu bench gemm` (fp32, and bf16 inputs; on the CPU with 2 threads,
or on a CUDA GPU with --device cuda), so the README can set kdgpu's GEMM engines beside an independent
one measured in the same session.

    pip install torch==2.13.0+cpu
    python3 bench/torch_gemm.py [--runs 5] [--device cpu|cuda] [--json]
"""
import argparse
import json
import statistics
import time

import torch

SHAPES = [(512, 512, 512, False), (1024, 1024, 1024, False), (2048, 2048, 2048, False), (2048, 576, 49152, True)]


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = torch.device(args.device)
    # fp32 matmuls in fp32 on a GPU too (no TF32: kdgpu's fp32 GEMMs round nothing).
    torch.backends.cuda.matmul.allow_tf32 = False
    backend = "pytorch-cpu-2-threads" if args.device == "cpu" else f"pytorch-cuda-{torch.cuda.get_device_name()}"
    generator = torch.Generator().manual_seed(3)
    records = []
    for m, k, n, transpose_b in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            a = (torch.rand(m, k, generator=generator) * 2 - 1).to(dtype).to(device)
            b = (torch.rand(n, k, generator=generator) * 2 - 1 if transpose_b else torch.rand(k, n, generator=generator) * 2 - 1).to(dtype).to(device)
            out = torch.empty(m, n, dtype=dtype, device=device)
            times = []
            for run in range(args.runs + 1):
                synchronize(device)
                start = time.perf_counter()
                torch.matmul(a, b.t() if transpose_b else b, out=out)
                synchronize(device)
                if run > 0:  # the first run is a warm-up
                    times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            shape = f"M={m} K={k} N={n}" + (" (B transposed)" if transpose_b else "")
            records.append({"suite": "gemm-torch", "kernel": "matmul" if dtype == torch.float32 else "matmul bf16",
                            "dtype": "f32" if dtype == torch.float32 else "bf16", "backend": backend, "shape": shape,
                            "median_seconds": seconds, "gflop_per_s": 2.0 * m * n * k / seconds / 1e9, "torch": torch.__version__})
    if args.json:
        print(json.dumps(records))
    else:
        for r in records:
            print(f"{r['kernel']:<12} {r['shape']:<36} {r['median_seconds'] * 1000:9.3f} ms {r['gflop_per_s']:7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
