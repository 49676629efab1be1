#!/usr/bin/env bash
# The CPU GEMM engines side by side on this machine, in one session: kdgpu's oneDNN and its OpenBLAS
# under each kernel set the CPU can run (OPENBLAS_CORETYPE, which kdgpu honours when set), then
# PyTorch's and numpy's matmul. Prints the Markdown table the README's "CPU GEMM engines" shows.
# Usage: bench/gemm_engines.sh [--runs N]   (after `make build`; PyTorch and numpy rows when installed)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
kdgpu=.build/release/kdgpu
flags=$(grep -m1 '^flags' /proc/cpuinfo)
cores=(Prescott)
[[ $flags == *" avx2 "* && $flags == *" fma "* ]] && cores+=(Haswell Zen)
[[ $flags == *" avx512f "* && $flags == *" avx512bw "* && $flags == *" avx512vl "* && $flags == *" avx512dq "* ]] && cores+=(SkylakeX)
[[ $flags == *" avx512_bf16 "* ]] && cores+=(Cooperlake)
env -u OPENBLAS_CORETYPE $kdgpu bench gemm --device cpu --runs "$runs" --json-out "$work/chosen.json" >/dev/null 2>&1
for core in "${cores[@]}"; do
    OPENBLAS_CORETYPE=$core $kdgpu bench gemm --device cpu --runs "$runs" --json-out "$work/$core.json" >/dev/null 2>&1
done
if python3 -c "import torch" 2>/dev/null; then python3 bench/torch_gemm.py --runs "$runs" --json > "$work/torch.json"; fi
python3 - "$work" "$runs" "${cores[@]}" <<'PY'
import json, os, sys, time
work, runs, cores = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
square, head = "M=2048 K=2048 N=2048", "M=2048 K=576 N=49152 (B transposed)"
def figures(records, engine):
    pick = lambda shape: next(r for r in records if r["kernel"].endswith(f"({engine})") and r["shape"] == shape)
    return pick(square), pick(head)
rows = []
chosen = json.load(open(f"{work}/chosen.json"))
s, h = figures(chosen, "onednn")
rows.append((s["note"].removeprefix("in use: "), s["gflop_per_s"], h["gflop_per_s"], "kdgpu's default"))
s, h = figures(chosen, "openblas")
rows.append((s["note"].removeprefix("the reference: ").split(";")[0], s["gflop_per_s"], h["gflop_per_s"], "kdgpu's choice for OpenBLAS"))
for core in cores:
    s, h = figures(json.load(open(f"{work}/{core}.json")), "openblas")
    rows.append((f"OpenBLAS, OPENBLAS_CORETYPE={core}", s["gflop_per_s"], h["gflop_per_s"], ""))
if os.path.exists(f"{work}/torch.json"):
    t = {r["shape"]: r for r in json.load(open(f"{work}/torch.json"))}
    rows.append((f"PyTorch {t[square]['torch']} matmul", t[square]["gflop_per_s"], t[head]["gflop_per_s"], "independent"))
try:
    import numpy as np
    a, b = np.random.rand(2048, 2048).astype(np.float32), np.random.rand(2048, 2048).astype(np.float32)
    x, w = np.random.rand(2048, 576).astype(np.float32), np.random.rand(49152, 576).astype(np.float32)
    def best(f):
        f(); times = []
        for _ in range(runs):
            start = time.perf_counter(); f(); times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]
    rows.append((f"numpy {np.__version__} matmul (its own OpenBLAS)", 2 * 2048**3 / best(lambda: a @ b) / 1e9,
                 2 * 2048 * 576 * 49152 / best(lambda: x @ w.T) / 1e9, "independent"))
except ImportError:
    pass
cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":")[1].strip()
print(f"2 threads, fp32, GFLOP/s, one session on {cpu} (`bench/gemm_engines.sh`):\n")
print("| engine | 2048^3 | LM head 2048x576x49152 | |\n|---|---:|---:|---|")
for name, a, b, remark in rows:
    print(f"| {name} | {a:.0f} | {b:.0f} | {remark} |")
PY
