#!/usr/bin/env python3
"""PyTorch timing (CPU; a CUDA GPU with --device cuda) of the work `kdgpu bench loss` does, on the same shapes, for the README ratio.

Forward KL at T = 2 with the T^2 factor, mean over rows, as a framework writes it:
    loss = kl_div(log_softmax(z_s / T), log_softmax(z_t / T), log_target=True, reduction="batchmean") * T^2
    loss.backward()            # d loss / d z_s
Timed: forward alone, and forward + backward. Bytes counted as in kdgpu (compulsory traffic: read z_s
and z_t, and write dz with the gradient), so GB/s compares directly.

    pip install torch==2.13.0+cpu
    python3 bench/torch_loss.py                     # 2 threads, N = 2048, V = 32000 / 49152 / 128256
    python3 bench/torch_loss.py --vocab 49152 --json
    python3 bench/torch_loss.py --device cuda       # on a CUDA GPU

Prints one JSON record per shape with --json (suite "loss-torch"), else a table.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def fused_like(zs, zt, temperature, backward):
    zs = zs.detach().requires_grad_(backward)
    log_q = F.log_softmax(zs / temperature, dim=-1)
    log_p = F.log_softmax(zt / temperature, dim=-1)
    loss = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * temperature**2
    if backward:
        loss.backward()
        return loss.item(), zs.grad
    return loss.item(), None


def median_time(fn, runs, device):
    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()
    fn()  # warm-up
    times = []
    for _ in range(runs):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--vocab", type=int, nargs="*", default=[32000, 49152, 128256])
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backend = f"torch {torch.__version__} cpu, {args.threads} threads" if args.device == "cpu" else f"torch {torch.__version__} cuda {torch.cuda.get_device_name()}"
    generator = torch.Generator().manual_seed(0)
    records = []
    for vocab in args.vocab:
        zs = (torch.randn(args.rows, vocab, generator=generator) * 10).to(device)
        zt = (torch.randn(args.rows, vocab, generator=generator) * 10).to(device)
        elements = args.rows * vocab
        forward = median_time(lambda: fused_like(zs, zt, args.temperature, False), args.runs, device)
        forward_backward = median_time(lambda: fused_like(zs, zt, args.temperature, True), args.runs, device)
        for kernel, seconds, floats in (("torch log_softmax+kl_div forward", forward, 2),
                                        ("torch log_softmax+kl_div forward+backward", forward_backward, 3)):
            records.append({
                "suite": "loss-torch", "kernel": kernel, "backend": backend,
                "shape": f"N={args.rows} V={vocab} T={args.temperature}", "median_seconds": seconds,
                "gb_per_s": floats * 4 * elements / seconds / 1e9,
            })
        del zs, zt
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for r in records:
            print(f"{r['kernel']:45s} {r['shape']:24s} {r['median_seconds'] * 1e3:9.1f} ms {r['gb_per_s']:6.2f} GB/s")


if __name__ == "__main__":
    main()
