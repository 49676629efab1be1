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
if python3 -c "import torch, gguf" 2>/dev/null; then
    python3 bench/torch_loss.py --vocab 49152 --json > "$work/torch_loss.json"
    python3 bench/torch_train_step.py --json > "$work/torch_train.json"
fi
python3 - "$work" "$*" <<'PY'
import json, os, sys
work, suites = sys.argv[1], sys.argv[2]
cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":")[1].strip()
records = json.load(open(f"{work}/kdgpu.json"))
text = f"Measured on {os.cpu_count()} cores ({cpu}) with `kdgpu bench {suites}`:\n\n```\n{open(f'{work}/table.txt').read().rstrip()}\n```\n"
side = []
def find(suite, kernel, shape_part):
    return [r for r in records if r["suite"] == suite and r["kernel"] == kernel and shape_part in r["shape"]]
if os.path.exists(f"{work}/torch_loss.json"):
    torch_loss = json.load(open(f"{work}/torch_loss.json"))
    torch_fb = [r for r in torch_loss if "backward" in r["kernel"]]
    for r in find("loss", "distill_loss_rows fkl forward+grad", "V=49152"):
        if torch_fb:
            side.append(f"- fused loss forward + gradient, 2048 x 49152, {r['backend']}: {r['median_seconds'] * 1000:.0f} ms, "
                        f"{torch_fb[0]['median_seconds'] / r['median_seconds']:.1f}x PyTorch {torch_fb[0]['median_seconds'] * 1000:.0f} ms "
                        f"({r['fraction_of_copy_bandwidth']:.0%} of this run's copy bandwidth)")
if os.path.exists(f"{work}/torch_train.json"):
    torch_train = json.loads(open(f"{work}/torch_train.json").read())
    for r in find("train", "distillation_step", "tokens"):
        side.append(f"- distillation step, 4 x 128 tokens, {r['backend']}: {r['median_seconds'] * 1000:.0f} ms ({r['tokens_per_s']:.0f} tokens/s), "
                    f"{torch_train['median_seconds'] / r['median_seconds']:.2f}x PyTorch {torch_train['torch']} "
                    f"({torch_train['median_seconds'] * 1000:.0f} ms, {torch_train['tokens_per_s']:.0f} tokens/s)")
if side:
    text += "\nSide by side with PyTorch CPU (2 threads) doing the same work right after, in the same session "
    text += "(`bench/torch_loss.py`, `bench/torch_train_step.py`):\n\n" + "\n".join(side) + "\n"
readme = open("README.md").read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
if begin not in readme or end not in readme:
    sys.exit("README.md lacks the <!-- bench:begin --> / <!-- bench:end --> markers")
head, rest = readme.split(begin, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(head + begin + "\n" + text + end + tail)
print("README.md: benchmark tables updated")
PY
