#!/usr/bin/env bash
# Mixed-precision fidelity: the default set-up's first 8 steps with the student in fp32 and in bf16
# (the compute copy rounded stochastically, the default, and to nearest even), on the CPU backend,
# for several seeds; each bf16 run's loss against the fp32 run's of the same seed, step by step.
# The noise floor beside them: the fp32 run on the OpenCL device (other GEMM and reduction engines,
# the same math), against the same fp32 run. The teacher is the same in every run (bf16 where the
# device's GEMMs run on bf16 instructions: `--teacher-precision auto`).
#
#   bench/fidelity.sh [OUT]                 runs into OUT (default runs/fidelity), prints a markdown table
#   KDGPU=/path/to/kdgpu bench/fidelity.sh  the same with a given binary (no build)
#   SEEDS="0 1 2 3 4" STEPS=8 bench/fidelity.sh   (the defaults)
#   TRAIN_FLAGS="--warmup-steps 20" bench/fidelity.sh runs/fidelity-w20   more flags for every run
#
# About 25 s a run on a 2-core machine (4 runs a seed). Finished runs are not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/fidelity}
seeds=(${SEEDS:-0 1 2 3 4})
steps=${STEPS:-8}
train_flags=(${TRAIN_FLAGS:-})
make -s setup teacher corpus >&2
kdgpu=${KDGPU:-}
if [[ -z $kdgpu ]]; then
    swift build -c release --product kdgpu >&2
    kdgpu=.build/release/kdgpu
fi
mkdir -p "$out"

# NAME -> flags
runs=(fp32 fp32-opencl bf16-stochastic bf16-nearest)
flags() {
    case $1 in
        fp32) echo "--device cpu --precision fp32" ;;
        fp32-opencl) echo "--device opencl --precision fp32" ;;
        bf16-stochastic) echo "--device cpu --precision bf16 --compute-rounding stochastic" ;;
        bf16-nearest) echo "--device cpu --precision bf16 --compute-rounding nearest" ;;
    esac
}
for seed in "${seeds[@]}"; do
    for name in "${runs[@]}"; do
        metrics="$out/$name-s$seed.jsonl"
        [[ -f $metrics ]] && continue
        echo "fidelity: $name seed $seed" >&2
        # shellcheck disable=SC2046  # the flags are words
        "$kdgpu" train --seed "$seed" --steps "$steps" --eval-every "$steps" --eval-windows 16 --checkpoint-every "$steps" \
            --export-gguf none --out "$out/$name-s$seed" $(flags "$name") "${train_flags[@]}" >"$out/$name-s$seed.log" 2>&1
        mv "$out/$name-s$seed/metrics.jsonl" "$metrics"
        rm -rf "$out/$name-s$seed"
    done
done

python3 - "$out" "${seeds[@]}" <<'PY'
import json, sys
out, seeds = sys.argv[1], sys.argv[2:]
def losses(name, seed):
    return [r["loss"] for r in map(json.loads, open(f"{out}/{name}-s{seed}.jsonl")) if "loss" in r]
compared = [("fp32-opencl", "fp32 on the OpenCL device (the noise floor)"), ("bf16-stochastic", "bf16, stochastic rounding (default)"),
            ("bf16-nearest", "bf16, rounding to nearest even")]
# diffs[name][seed][step]: the run's loss against the fp32 run of the same seed, in percent.
diffs = {name: {seed: [abs(y - x) / x * 100 for x, y in zip(losses("fp32", seed), losses(name, seed))] for seed in seeds}
         for name, _ in compared}
print("| run against the fp32 run (CPU backend) | " + " | ".join(f"seed {s}: largest (step)" for s in seeds) + " | per step, seed " + seeds[0] + " |")
print("|---|" + "---:|" * len(seeds) + "---|")
for name, title in compared:
    cells = []
    for seed in seeds:
        worst = max(range(len(diffs[name][seed])), key=diffs[name][seed].__getitem__)
        cells.append(f"{diffs[name][seed][worst]:.2f}% ({worst + 1})")
    print(f"| {title} | " + " | ".join(cells) + " | " + " ".join(f"{d:.2f}" for d in diffs[name][seeds[0]]) + " |")
print()
steps = len(diffs[compared[0][0]][seeds[0]])
print("| mean over the seeds, by step | " + " | ".join(str(i + 1) for i in range(steps)) + " |")
print("|---|" + "---:|" * steps)
for name, _ in compared:
    print(f"| {name} | " + " | ".join(f"{sum(diffs[name][seed][i] for seed in seeds) / len(seeds):.2f}%" for i in range(steps)) + " |")
print()
print("Relative difference of each step's training loss from the fp32 run of the same seed, in percent.")
PY
