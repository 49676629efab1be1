#!/usr/bin/env bash
# The feature-loss ablation: the default `make train` set-up (SmolLM2-135M-Instruct teaching the
# 6-block inherited student on Shakespeare, 100 steps of 4 x 128 tokens, the same data order and
# validation windows) trained six ways, and the held-out perplexity each reaches.
#
#   bench/ablation.sh [OUT]      runs into OUT (default runs/ablation), prints a markdown table
#   KDGPU=/path/to/kdgpu bench/ablation.sh   the same with a given binary (no build)
#
# A finished run is not run again (delete OUT/NAME.txt to redo it). Every run is logged to
# OUT/NAME.log, its summary to OUT/NAME.txt. 35 to 60 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/ablation}
make -s setup teacher corpus >&2
kdgpu=${KDGPU:-}
if [[ -z $kdgpu ]]; then
    swift build -c release --product kdgpu >&2
    kdgpu=.build/release/kdgpu
fi
mkdir -p "$out"

# The feature losses: the lens on the two middle student blocks (3, 4: inherited from teacher
# blocks 27, 28; each lens pair costs four head-sized GEMMs), alignment and hints on every block
# (paired with the teacher block each was inherited from).
lens=(--lens-weight 1 --lens-layers 3:27,4:28)
align=(--attn-align-weight 1)
hints=(--hint-weight 1)

names=(ce kd kd+lens kd+align kd+hints kd+all)
# NAME -> "title|flags"
setting() {
    case $1 in
        ce) echo "CE only (no teacher)|--soft-weight 0 --hard-weight 1" ;;
        kd) echo "KD (fkl, T=2, + 0.1 CE)|" ;;
        kd+lens) echo "KD + logit lens|${lens[*]}" ;;
        kd+align) echo "KD + attention alignment|${align[*]}" ;;
        kd+hints) echo "KD + hidden-state hints|${hints[*]}" ;;
        kd+all) echo "KD + lens + alignment + hints|${lens[*]} ${align[*]} ${hints[*]}" ;;
    esac
}
flags() { setting "$1" | cut -d'|' -f2; }

for name in "${names[@]}"; do
    summary="$out/$name.txt"
    if [[ -f "$summary" ]] && grep -q "student, after" "$summary"; then
        echo "ablation: $name done already ($summary)" >&2
        continue
    fi
    echo "ablation: $name: kdgpu train $(flags "$name")" >&2
    # shellcheck disable=SC2046  # the flags are words
    "$kdgpu" train --out "$out/$name" --export-gguf none $(flags "$name") >"$summary.partial" 2>"$out/$name.log"
    mv "$summary.partial" "$summary"
done

echo "| objective | flags (on top of \`make train\`) | held-out perplexity |"
echo "|---|---|---:|"
for name in "${names[@]}"; do
    summary="$out/$name.txt"
    IFS='|' read -r title flagText <<<"$(setting "$name")"
    perplexity=$(awk '/student, after/ { print $NF }' "$summary")
    echo "| $title | \`${flagText:-(defaults)}\` | $perplexity |"
done
teacher=$(awk '/teacher:/ { print $NF }' "$out/kd.txt")
initial=$(awk '/student, initial:/ { print $NF }' "$out/kd.txt")
echo
echo "Teacher perplexity $teacher; the student before training $initial."
