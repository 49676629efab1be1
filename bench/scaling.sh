#!/usr/bin/env bash
# Data-parallel scaling on one machine: the same optimizer steps taken by one process with every core
# (`--batch-size B --gradient-accumulation 2`) and by `mpirun -np 2` with half the cores each
# (`--batch-size B` per rank: micro-batch i of a step on rank i). Both print the aggregate tokens/s of
# every step to metrics.jsonl; the table gives the median over the steps after the first two (the
# kernel compile and first-touch warm-up) of each run, runs alternating so the machine's drift hits
# both alike, and the ratio 2 ranks / 1 process (the issue's target: >= 0.9 on this 2-core machine).
#
# ONE=half gives the one process half the cores instead, the share each rank gets: two devices
# against one (each rank's half of the cores being its device; the target there is >= 1.8).
#
#   bench/scaling.sh                      live teacher, the default student, 4 x 128 a micro-batch, 10 steps, 2 rounds
#   STEPS=10 ROUNDS=2 BATCH=4 bench/scaling.sh
#   CACHE=runs/ablation/cache-sampled50 DATA=cache/corpus/plays/roman bench/scaling.sh   from a teacher cache instead
#   KDGPU=/path/to/kdgpu DEVICE=cpu bench/scaling.sh
#   ONE=half bench/scaling.sh             the one process on half the cores (two devices against one)
#   OVERLAP=both bench/scaling.sh         a third row: the 2 ranks with the all-reduce overlapped with the backward
#                                         (--overlap-allreduce on; the other rows take it off)
#   WIRE=bf16 bench/scaling.sh            the ranks' gradients as bf16 between them (--allreduce-dtype bf16)
#   TEACHER=FILE.gguf                     another teacher file (default: make teacher's)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-10}
rounds=${ROUNDS:-2}
batch=${BATCH:-4}
device=${DEVICE:-cpu}
data=${DATA:-cache/corpus/plays}
out=${OUT:-runs/scaling}
one_cores=${ONE:-all}
overlap=${OVERLAP:-off}
[[ $overlap == off || $overlap == both ]] || { echo "scaling: OVERLAP=$overlap: use off or both" >&2; exit 2; }
kdgpu=${KDGPU:-}
if [[ -z $kdgpu ]]; then
    make -s setup teacher corpus >&2
    swift build -c release --product kdgpu >&2
    kdgpu=.build/release/kdgpu
fi
command -v mpirun >/dev/null || { echo "scaling: no mpirun; install Open MPI (make setup does)" >&2; exit 2; }
root=(); [[ $(id -u) == 0 ]] && root=(--allow-run-as-root)
extra=(); [[ -n ${CACHE:-} ]] && extra=(--teacher-cache "$CACHE" --temperature 1)
[[ -n ${TEACHER:-} ]] && extra+=(--teacher "$TEACHER")
# (one process reduces nothing: the setting changes only the ranks' rows)
[[ -n ${WIRE:-} ]] && extra+=(--allreduce-dtype "$WIRE")
common=(--data "$data" --steps "$steps" --seq-len 128 --eval-every 100000 --eval-windows 1 --checkpoint-every 100000
        --export-gguf none --device "$device" "${extra[@]}")
cores=$(nproc)
case $one_cores in
    all) one_threads=$cores ;;
    half) one_threads=$((cores / 2)) ;;
    *) echo "scaling: ONE=$one_cores: use all or half" >&2; exit 2 ;;
esac
mkdir -p "$out"

median_rate() {  # metrics.jsonl -> the median tokens/s of the steps after the first two
    python3 - "$1" <<'EOF'
import json, statistics, sys
rates = [r["tokens_per_s"] for r in map(json.loads, open(sys.argv[1])) if "tokens_per_s" in r and r["step"] > 2]
print(f"{statistics.median(rates):.1f}")
EOF
}

median_share() {  # metrics.jsonl -> the median share of a step spent waiting for the all-reduce, steps after the first two
    python3 - "$1" <<'EOF'
import json, statistics, sys
shares = [r["allreduce_share"] for r in map(json.loads, open(sys.argv[1])) if "allreduce_share" in r and r["step"] > 2]
print(f"{statistics.median(shares):.3f}" if shares else "-")
EOF
}

one=() two=() three=() two_share=() three_share=()
for round in $(seq 1 "$rounds"); do
    rm -rf "$out/one" "$out/two"
    echo "scaling: round $round: 1 process, $one_threads thread(s), batch $batch x 2 micro-batches" >&2
    KDGPU_THREADS=$one_threads OMP_NUM_THREADS=$one_threads POCL_MAX_PTHREAD_COUNT=$one_threads "$kdgpu" train --out "$out/one" --batch-size "$batch" --gradient-accumulation 2 "${common[@]}" >/dev/null 2>"$out/one.log"
    one+=("$(median_rate "$out/one/metrics.jsonl")")
    echo "scaling: round $round: mpirun -np 2, $((cores / 2)) thread(s) each, batch $batch per rank" >&2
    mpirun "${root[@]}" --oversubscribe -np 2 "$kdgpu" train --out "$out/two" --batch-size "$batch" "${common[@]}" --overlap-allreduce off >/dev/null 2>"$out/two.log"
    two+=("$(median_rate "$out/two/metrics.jsonl")")
    two_share+=("$(median_share "$out/two/metrics.jsonl")")
    if [[ $overlap == both ]]; then
        rm -rf "$out/three"
        echo "scaling: round $round: mpirun -np 2, $((cores / 2)) thread(s) each, batch $batch per rank, all-reduce overlapped" >&2
        mpirun "${root[@]}" --oversubscribe -np 2 "$kdgpu" train --out "$out/three" --batch-size "$batch" "${common[@]}" --overlap-allreduce on >/dev/null 2>"$out/three.log"
        three+=("$(median_rate "$out/three/metrics.jsonl")")
        three_share+=("$(median_share "$out/three/metrics.jsonl")")
    fi
done

echo "| set-up | aggregate tokens/s, median of steps 3-$steps (per round) | vs 1 process | all-reduce wait, median share of a step (per round) |"
echo "|---|---|---:|---|"
best() { printf '%s\n' "$@" | sort -g | tail -1; }
echo "| 1 process, $one_threads thread(s), --gradient-accumulation 2 | ${one[*]} | 1.00 | - |"
echo "| mpirun -np 2, $((cores / 2)) thread(s) each | ${two[*]} | $(awk -v a="$(best "${two[@]}")" -v b="$(best "${one[@]}")" 'BEGIN { printf "%.2f", a / b }') | ${two_share[*]} |"
if [[ $overlap == both ]]; then
    echo "| mpirun -np 2, $((cores / 2)) thread(s) each, --overlap-allreduce on | ${three[*]} | $(awk -v a="$(best "${three[@]}")" -v b="$(best "${one[@]}")" 'BEGIN { printf "%.2f", a / b }') | ${three_share[*]} |"
fi
echo
echo "$(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2 }'), $cores cores; device $device; micro-batch $batch x 128 tokens; the ratio takes each set-up's best round."
