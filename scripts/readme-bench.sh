#!/usr/bin/env bash
# Runs `kdgpu bench` (and, when torch is installed, the PyTorch scripts doing the same work right
# after it) and writes the tables and the side-by-side ratios into README.md between the bench
# markers, so the README's figures are what the code prints. Usage: scripts/readme-bench.sh [SUITE...]
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.build/release/kdgpu bench "$@" --json-out "$work/kdgpu.json" > "$work/table.txt" 2>/dev/null
# The larger training step (8 x 256) when the train suite runs: its own bench run, then PyTorch's.
if [ $# -eq 0 ] || [[ " $* " == *" train "* ]]; then
    .build/release/kdgpu bench train --batch-size 8 --seq-len 256 --runs 3 --json-out "$work/kdgpu_large.json" > "$work/table_large.txt" 2>/dev/null
fi
if python3 -c "import torch, gguf" 2>/dev/null; then
    python3 bench/torch_gemm.py --json > "$work/torch_gemm.json"
    python3 bench/torch_loss.py --vocab 49152 --json > "$work/torch_loss.json"
    # PyTorch's step in fp32, with the teacher under bf16 autocast, and with teacher and student under it.
    for autocast in none teacher all; do
        python3 bench/torch_train_step.py --autocast $autocast --json > "$work/torch_train_$autocast.json"
        if [ -f "$work/kdgpu_large.json" ]; then
            python3 bench/torch_train_step.py --batch-size 8 --seq-len 256 --autocast $autocast --json > "$work/torch_train_large_$autocast.json"
        fi
    done
fi
python3 - "$work" "$*" <<'PY'
import json, os, sys
work, suites = sys.argv[1], sys.argv[2]
cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":")[1].strip()
records = json.load(open(f"{work}/kdgpu.json"))
text = f"Measured on {os.cpu_count()} cores ({cpu}) with `kdgpu bench {suites}`:\n\n```\n{open(f'{work}/table.txt').read().rstrip()}\n```\n"
if os.path.exists(f"{work}/table_large.txt"):
    records += json.load(open(f"{work}/kdgpu_large.json"))
    text += f"\nand `kdgpu bench train --batch-size 8 --seq-len 256`:\n\n```\n{open(f'{work}/table_large.txt').read().rstrip()}\n```\n"
side = []
def find(suite, kernel, shape_part):
    return [r for r in records if r["suite"] == suite and r["kernel"] == kernel and shape_part in r["shape"]]
if os.path.exists(f"{work}/torch_gemm.json"):
    torch_gemm = {(r["shape"], r.get("dtype", "f32")): r for r in json.load(open(f"{work}/torch_gemm.json"))}
    for r in records:
        bf16 = "bf16" in r["kernel"]
        t = torch_gemm.get((r["shape"], "bf16" if bf16 else "f32"))
        if r["suite"] == "gemm" and t and ("in use" in (r.get("note") or "") or bf16) and ("2048 K=2048" in r["shape"] or "49152" in r["shape"]):
            side.append(f"- {r['kernel']}, {r['shape']}, {r['backend']}: {r['gflop_per_s']:.0f} GFLOP/s, "
                        f"{r['gflop_per_s'] / t['gflop_per_s']:.2f}x PyTorch {t['kernel']} ({t['gflop_per_s']:.0f} GFLOP/s)")
if os.path.exists(f"{work}/torch_loss.json"):
    torch_loss = json.load(open(f"{work}/torch_loss.json"))
    torch_fb = [r for r in torch_loss if "backward" in r["kernel"]]
    for r in find("loss", "distill_loss_rows fkl forward+grad", "V=49152"):
        if torch_fb:
            side.append(f"- fused loss forward + gradient, 2048 x 49152, {r['backend']}: {r['median_seconds'] * 1000:.0f} ms, "
                        f"{torch_fb[0]['median_seconds'] / r['median_seconds']:.1f}x PyTorch {torch_fb[0]['median_seconds'] * 1000:.0f} ms "
                        f"({r['fraction_of_copy_bandwidth']:.0%} of this run's copy bandwidth)")
autocast_names = {"none": "fp32", "teacher": "bf16 autocast on the teacher", "all": "bf16 autocast on teacher and student"}
for prefix, shape in [("torch_train", "4x128"), ("torch_train_large", "8x256")]:
    torch_train = {a: json.load(open(f"{work}/{prefix}_{a}.json")) for a in autocast_names if os.path.exists(f"{work}/{prefix}_{a}.json")}
    if not torch_train:
        continue
    # kdgpu fp32 against PyTorch fp32; kdgpu --precision bf16 against both of PyTorch's bf16 autocast set-ups.
    for r in find("train", "distillation_step", shape + " tokens"):
        against = ["none"] if r["dtype"] == "f32" else ["all", "teacher"]
        ratios = ", ".join(f"{torch_train[a]['median_seconds'] / r['median_seconds']:.2f}x PyTorch {torch_train[a]['torch']} {autocast_names[a]} "
                           f"({torch_train[a]['median_seconds'] * 1000:.0f} ms, {torch_train[a]['tokens_per_s']:.0f} tokens/s)"
                           for a in against if a in torch_train)
        side.append(f"- distillation step, {shape.replace('x', ' x ')} tokens, {r['dtype']}, {r['backend']}: {r['median_seconds'] * 1000:.0f} ms "
                    f"({r['tokens_per_s']:.0f} tokens/s, step peak {r['step_peak_mib']:.0f} MiB), {ratios}")
if side:
    text += "\nSide by side with PyTorch CPU (2 threads) doing the same work right after, in the same session "
    text += "(`bench/torch_gemm.py`, `bench/torch_loss.py`, `bench/torch_train_step.py`):\n\n" + "\n".join(side) + "\n"
readme = open("README.md").read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
if begin not in readme or end not in readme:
    sys.exit("README.md lacks the <!-- bench:begin --> / <!-- bench:end --> markers")
head, rest = readme.split(begin, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(head + begin + "\n" + text + end + tail)
print("README.md: benchmark tables updated")
PY
