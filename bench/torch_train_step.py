#!/usr/bin/env python3
"""PyTorch timing (CPU, 2 threads; a CUDA GPU with --device cuda) of the distillation step `kdgpu bench train` times, on the same shapes, so the
README can show the two side by side (measured one after the other on the same machine).

The step: teacher (SmolLM2-135M from the GGUF, dequantized to fp32 by the `gguf` package) forward
without gradients; student (the teacher's blocks 0,1,2,27,28,29, tied embeddings) forward and
backward of 0.1 * CE + T^2 * KL(teacher || student) at T = 2 over 4 x 128 tokens (or --batch-size x
--seq-len); AdamW step. `--autocast teacher` runs the teacher's forward under bf16 autocast, `--autocast all`
the student's forward and backward too (PyTorch's mixed precision: fp32 parameters, bf16 matmuls).

    pip install torch==2.13.0+cpu gguf numpy
    python3 bench/torch_train_step.py [--teacher cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf] [--runs 3] [--device cpu|cuda]
        [--batch-size 4] [--seq-len 128] [--autocast none|teacher|all] [--json] [--print-losses]
"""
import argparse
import json
import math
import statistics
import time

import gguf
import numpy as np
import torch
import torch.nn.functional as F


def load_gguf(path):
    reader = gguf.GGUFReader(path)

    def field(key, default=None):
        f = reader.fields.get(key)
        return default if f is None else f.parts[f.data[0]][0].item()

    config = dict(layers=field("llama.block_count"), width=field("llama.embedding_length"), heads=field("llama.attention.head_count"),
                  kv_heads=field("llama.attention.head_count_kv"), base=field("llama.rope.freq_base", 10000.0),
                  eps=field("llama.attention.layer_norm_rms_epsilon"))
    tensors = {t.name: torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
                                        .reshape(list(reversed([int(d) for d in t.shape])))) for t in reader.tensors}
    return config, tensors


def rope_adjacent(x, base):
    """x [B, T, heads, d]: pairs (2i, 2i+1) turn by t * base^(-2i/d) (GGUF's layout)."""
    b, t, h, d = x.shape
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)
    theta = torch.arange(t, dtype=torch.float32, device=x.device)[:, None] * inv[None, :]
    cos, sin = theta.cos()[None, :, None, :], theta.sin()[None, :, None, :]
    a, c = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - c * sin, a * sin + c * cos), dim=-1).flatten(-2)


def forward(config, w, blocks, ids):
    """Final logits [B * T, V] of ids [B, T] through the given blocks."""
    b, t = ids.shape
    c, h, hkv = config["width"], config["heads"], config["kv_heads"]
    hs, eps = c // h, config["eps"]
    x = w["token_embd.weight"][ids]
    for l in blocks:
        p = f"blk.{l}."
        xn = F.rms_norm(x, (c,), w[p + "attn_norm.weight"], eps)
        q = rope_adjacent((xn @ w[p + "attn_q.weight"].T).view(b, t, h, hs), config["base"]).transpose(1, 2)
        k = rope_adjacent((xn @ w[p + "attn_k.weight"].T).view(b, t, hkv, hs), config["base"]).transpose(1, 2)
        v = (xn @ w[p + "attn_v.weight"].T).view(b, t, hkv, hs).transpose(1, 2)
        k, v = k.repeat_interleave(h // hkv, dim=1), v.repeat_interleave(h // hkv, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + out @ w[p + "attn_output.weight"].T
        xn = F.rms_norm(x, (c,), w[p + "ffn_norm.weight"], eps)
        x = x + (F.silu(xn @ w[p + "ffn_gate.weight"].T) * (xn @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
    xn = F.rms_norm(x, (c,), w["output_norm.weight"], eps)
    return (xn @ w.get("output.weight", w["token_embd.weight"]).T).reshape(b * t, -1)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", default="cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--autocast", choices=["none", "teacher", "all"], default="none")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--print-losses", action="store_true", help="print each step's loss (the runs are successive steps)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 is fp32 on a GPU too
    config, teacher = load_gguf(args.teacher)
    teacher = {name: value.to(device) for name, value in teacher.items()}
    student_blocks = [0, 1, 2, 27, 28, 29]
    student = {}
    for name, value in teacher.items():
        if not name.startswith("blk."):
            student[name] = value.clone().requires_grad_(True)
    for i, l in enumerate(student_blocks):
        for name, value in teacher.items():
            if name.startswith(f"blk.{l}."):
                student[f"blk.{i}." + name[len(f"blk.{l}."):]] = value.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW(student.values(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    batch, length, temperature = args.batch_size, args.seq_len, 2.0
    generator = torch.Generator().manual_seed(7)
    times = []
    for run in range(args.runs + 1):
        ids = torch.randint(0, teacher["token_embd.weight"].shape[0], (batch, length), generator=generator).to(device)
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.autocast != "none"):
            teacher_logits = forward(config, teacher, range(config["layers"]), ids).float()
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.autocast == "all"):
            logits = forward(config, student, range(len(student_blocks)), ids).float()
        labels = torch.cat([ids[:, 1:], torch.full((batch, 1), -100, device=device)], dim=1).reshape(-1)
        valid = labels != -100
        kd = F.kl_div(F.log_softmax(logits[valid] / temperature, -1), F.log_softmax(teacher_logits[valid] / temperature, -1),
                      log_target=True, reduction="batchmean") * temperature ** 2
        loss = 0.1 * F.cross_entropy(logits, labels, ignore_index=-100) + kd
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.values(), 1.0)
        optimizer.step()
        synchronize(device)
        if args.print_losses:
            print(f"step {run + 1} loss {loss.item():.6f}")
        if run > 0:  # the first run is a warm-up
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    backend = "pytorch-cpu-2-threads" if args.device == "cpu" else f"pytorch-cuda-{torch.cuda.get_device_name()}"
    record = {"suite": "train-torch", "kernel": "distillation_step", "backend": backend,
              "shape": f"{batch}x{length} tokens, student {len(student_blocks)} of {config['layers']} blocks",
              "autocast": args.autocast, "dtype": "f32" if args.autocast == "none" else "bf16",
              "median_seconds": seconds, "tokens_per_s": batch * length / seconds, "torch": torch.__version__}
    print(json.dumps(record) if args.json else
          f"PyTorch {torch.__version__} {backend}, bf16 autocast {args.autocast}: distillation step {seconds * 1000:.0f} ms, {batch * length / seconds:.1f} tokens/s")


if __name__ == "__main__":
    main()
