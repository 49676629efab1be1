#!/usr/bin/env bash
# Runs `kdgpu bench` and the PyTorch scripts doing the same work right after it, and writes the
# tables and the side-by-side ratios into README.md between the bench markers
# (scripts/readme_tables.py), so the README's figures are what the code prints.
# Usage: scripts/readme-bench.sh [SUITE...]   (with suites: the tables are printed and the README,
# whose block holds every suite of one run, is left as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
# Without PyTorch the tables would lose their side-by-side lines: refuse before the long run.
python3 -c "import torch, gguf" 2>/dev/null || {
    echo "readme-bench: needs torch and gguf for the side-by-side lines: pip install torch==2.13.0+cpu gguf" >&2; exit 2; }
make -s build >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.build/release/kdgpu bench "$@" --json-out "$work/kdgpu.json" > "$work/table.txt" 2>/dev/null
# The larger training step (8 x 256) when the train suite runs: its own bench run, then PyTorch's.
if [ $# -eq 0 ] || [[ " $* " == *" train "* ]]; then
    .build/release/kdgpu bench train --batch-size 8 --seq-len 256 --runs 3 --json-out "$work/kdgpu_large.json" > "$work/table_large.txt" 2>/dev/null
fi
python3 bench/torch_gemm.py --json > "$work/torch_gemm.json"
python3 bench/torch_loss.py --vocab 49152 --json > "$work/torch_loss.json"
# PyTorch's step in fp32, with the teacher under bf16 autocast, and with teacher and student under it.
for autocast in none teacher all; do
    python3 bench/torch_train_step.py --autocast $autocast --json > "$work/torch_train_$autocast.json"
    if [ -f "$work/kdgpu_large.json" ]; then
        python3 bench/torch_train_step.py --batch-size 8 --seq-len 256 --autocast $autocast --json > "$work/torch_train_large_$autocast.json"
    fi
done
python3 scripts/readme_tables.py cpu "$work" "$*"
