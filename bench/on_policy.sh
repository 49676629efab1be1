#!/usr/bin/env bash
# On-policy and sequence-level distillation against corpus KD: SmolLM2-135M-Instruct teaching the
# default 6-block inherited student, every row over several seeds, at the same token budget: each
# step is 4 sequences of 96 tokens (a corpus window of 96, or a 32-token prompt from one and 64
# sampled tokens), fkl at T = 1 (+ 0.1 CE) for every row, rollouts at temperature 1.
#
# Judged on held-out perplexity (all validation windows of the folder) and on the on-policy measure:
# the teacher's reverse KL, KL(q || p), on the continuations the student samples from 16 held-out
# prompts (`--eval-rollouts 16`, the same seed for every run), before and after training; with what
# each costs in time (the steps' own time, sampling included, beside corpus KD's).
#
#   bench/on_policy.sh [OUT]                runs into OUT (default runs/on-policy), prints a markdown table
#   KDGPU=/path/to/kdgpu bench/on_policy.sh  a given binary (no build)
#   SEEDS="0 1 2" STEPS=100 DATA=cache/corpus/plays/roman bench/on_policy.sh   (the defaults)
#   ROWS="kd onpolicy1" bench/on_policy.sh   some rows only (kd onpolicy05 onpolicy1 seqkd)
#   TABLE_ONLY=1 bench/on_policy.sh          the table of the runs finished so far
#
# Finished runs are not run again (delete OUT/NAME-sSEED.txt to redo one). Each run leaves
# OUT/NAME-sSEED.{txt,log,metrics.jsonl,rollouts.jsonl}. On a 2-core machine (CPU backend): about 2
# minutes a corpus KD run, 5 an on-policy one, 9 a sequence-level one; an hour for all at 3 seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/on-policy}
seeds=(${SEEDS:-0 1 2})
steps=${STEPS:-100}
data=${DATA:-cache/corpus/plays/roman}
table_only=${TABLE_ONLY:-}
[[ -z $table_only ]] && make -s setup teacher corpus >&2
kdgpu=${KDGPU:-}
if [[ -z $kdgpu && -z $table_only ]]; then
    swift build -c release --product kdgpu >&2
    kdgpu=.build/release/kdgpu
fi
mkdir -p "$out"

all_rows=(kd onpolicy05 onpolicy1 seqkd)
rows=(${ROWS:-${all_rows[*]}})
setting() {  # NAME -> "title|flags"
    case $1 in
        kd) echo "corpus KD|" ;;
        onpolicy05) echo "on-policy 0.5 (GKD lmbda 0.5)|--on-policy-fraction 0.5" ;;
        onpolicy1) echo "on-policy 1 (student samples only)|--on-policy-fraction 1" ;;
        seqkd) echo "sequence-level KD (teacher samples)|--seq-kd true" ;;
        *) echo "on_policy: unknown row '$1'; rows: ${all_rows[*]}" >&2; exit 2 ;;
    esac
}
for name in "${rows[@]}"; do setting "$name" >/dev/null; done

if [[ -z $table_only ]]; then
common=(--data "$data" --steps "$steps" --seq-len 96 --prompt-tokens 32 --rollout-tokens 64 --temperature 1 --device cpu
        --eval-every "$steps" --eval-windows 1000 --eval-rollouts 16 --checkpoint-every "$steps" --export-gguf none)
for seed in "${seeds[@]}"; do
    for name in "${rows[@]}"; do
        summary="$out/$name-s$seed.txt"
        if [[ -f "$summary" ]] && grep -q "student, after" "$summary"; then continue; fi
        flags=$(setting "$name" | cut -d'|' -f2)
        echo "on_policy: $name seed $seed: kdgpu train $flags" >&2
        start=$(date +%s)
        # shellcheck disable=SC2086  # the flags are words
        "$kdgpu" train --out "$out/$name-s$seed" --seed "$seed" "${common[@]}" $flags >"$summary.partial" 2>"$out/$name-s$seed.log"
        echo "wall seconds: $(( $(date +%s) - start ))" >>"$summary.partial"
        cp "$out/$name-s$seed/metrics.jsonl" "$out/$name-s$seed.metrics.jsonl"
        [[ -f "$out/$name-s$seed/rollouts.jsonl" ]] && cp "$out/$name-s$seed/rollouts.jsonl" "$out/$name-s$seed.rollouts.jsonl"
        mv "$summary.partial" "$summary"
        rm -rf "${out:?}/$name-s$seed"  # the checkpoint; the summary, log, metrics and rollouts stay
    done
done
fi

python3 - "$out" "$steps" "$data" "${seeds[*]}" "${rows[@]}" <<'EOF'
import json, os, statistics, sys
out, steps, data, seeds, rows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5:]
titles = {"kd": "corpus KD", "onpolicy05": "on-policy 0.5 (GKD lmbda 0.5)", "onpolicy1": "on-policy 1 (student samples only)",
          "seqkd": "sequence-level KD (teacher samples)"}
def stats(values):
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f} ({len(values)})" if values[0] > 10 else f"{statistics.mean(values):.3f} ± {sd:.3f} ({len(values)})"
print("| objective | held-out perplexity | teacher's reverse KL on student samples | steps by source (a run) | training time, vs corpus KD |")
print("|---|---:|---:|---|---:|")
base_time = None
before = []
lines = []
for name in rows:
    ppl, rkl, times, sources = [], [], [], {}
    for seed in seeds:
        path = os.path.join(out, f"{name}-s{seed}.metrics.jsonl")
        summary = os.path.join(out, f"{name}-s{seed}.txt")
        if not (os.path.exists(path) and os.path.exists(summary)):
            continue
        records = [json.loads(line) for line in open(path)]
        validations = [r for r in records if "val_nll" in r]
        ppl.append(validations[-1]["val_perplexity"])
        rkl.append(validations[-1]["val_on_policy_rkl"])
        before.append(validations[0]["val_on_policy_rkl"])
        for r in records:
            if "batch_source" in r:
                sources[r["batch_source"]] = sources.get(r["batch_source"], 0) + 1
        # The steps' own time (4 sequences of 96 tokens a step), without the loading and validation every run shares.
        times.append(sum(4 * 96 / r["tokens_per_s"] for r in records if "tokens_per_s" in r))
    if not ppl:
        continue
    minutes = statistics.mean(times) / 60
    base_time = base_time or (minutes if name == "kd" else None)
    ratio = f", {minutes / base_time:.2f}x" if base_time else ""
    shown = ", ".join(f"{k} {v / len(ppl):.0f}" for k, v in sorted(sources.items()))
    lines.append(f"| {titles[name]} | {stats(ppl)} | {stats(rkl)} | {shown} | {minutes:.1f} min{ratio} |")
print("\n".join(lines))
print()
print(f"(before training: reverse KL {statistics.mean(before):.3f} on the same prompts.) {steps} steps of 4 x 96 tokens on {data}, "
      f"seeds {' '.join(seeds)}; held-out perplexity on all its validation windows of 96 tokens.")
EOF
