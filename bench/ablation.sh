#!/usr/bin/env bash
# The ablation: SmolLM2-135M-Instruct teaching the default 6-block inherited student, every row over
# several seeds (the seed sets the data order), at a budget where the effects exceed the spread:
# 200 steps of 4 x 128 tokens on one folder of the corpus (`roman`: 1417 training windows, so no
# window is seen twice), held-out perplexity on all 74 of its validation windows after the last step.
#
# Rows: CE only; live KD (fkl + 0.1 CE) at T = 1 and T = 2; cached targets at T = 1 (top-32 with
# each tail rule, 50 independent draws, 50 systematic draws and systematicN for any N (listed: 200;
# its cache built into OUT/cache-systematicN), the 50-draw caches with the
# bucket tail of Good-Turing's unseen mass; T = 2 is far worse for sparse
# targets, see the README); the feature losses on top of live KD at T = 1 with the
# embedding's learning rate at 4x (row kd-t1-emb4; make train adds hints to it); live KD at
# T = 1 with the student in mixed precision (`--precision bf16`: its perplexity against the fp32
# row's spread); live KD and the 50-draw caches with the embedding's learning rate at 0.1x, 2x, 4x
# and 8x (`--embedding-lr-scale`: where the caches' gap lies, docs/ablation.md); the 50-draw caches with the
# prior tail (`--sparse-tail prior`) and with exact labels (`--exact-label true`); the live teacher's
# targets made sparse at every step as a systematic:N cache would keep them (`--sparsify-teacher`),
# sparsifiedN for any N (listed: 50, the cache's steps; 200; 500 and 5000, past what a cache counts).
#
#   bench/ablation.sh [OUT]                  runs into OUT (default runs/ablation), prints a markdown table
#   KDGPU=/path/to/kdgpu bench/ablation.sh   the same with a given binary (no build)
#   SEEDS="0 1 2" STEPS=200 DATA=cache/corpus/plays/roman bench/ablation.sh   (the defaults)
#   ROWS="ce kd-t1 sampled" bench/ablation.sh   some rows only (names below)
#   TABLE_ONLY=1 bench/ablation.sh           print the table of the runs finished so far, run nothing
#   TRAIN_FLAGS="--teacher-precision bf16"   more flags for every training run
#   CACHE_FLAGS="--teacher-precision bf16 --device cpu"   more flags for the cache builds
#   EVAL_WINDOWS=300                         validation windows (default 1000: all of them on one folder)
#
# The whole corpus (docs/ablation.md, "On the whole corpus"): DATA=cache/corpus/plays EVAL_WINDOWS=300
#   TRAIN_FLAGS="--teacher-precision bf16" CACHE_FLAGS="--teacher-precision bf16 --device cpu --batch-size 8"
#   ROWS="ce kd-t1 sampled kd-t2" bench/ablation.sh runs/ablation-full
#
# Finished runs are not run again (delete OUT/NAME-sSEED.txt to redo one); the caches are built
# once into OUT (a stopped build continues). Every run is logged to OUT/NAME-sSEED.log. About 8 minutes
# a live-teacher run, 4 a cached or CE-only one, 9 a feature-loss one on a 2-core machine: 2.5-3 hours
# for everything at 3 seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/ablation}
seeds=(${SEEDS:-0 1 2})
steps=${STEPS:-200}
data=${DATA:-cache/corpus/plays/roman}
table_only=${TABLE_ONLY:-}
train_flags=(${TRAIN_FLAGS:-})
cache_flags=(${CACHE_FLAGS:-})
eval_windows=${EVAL_WINDOWS:-1000}
[[ -z $table_only ]] && make -s setup teacher corpus >&2
kdgpu=${KDGPU:-}
if [[ -z $kdgpu && -z $table_only ]]; then
    swift build -c release --product kdgpu >&2
    kdgpu=.build/release/kdgpu
fi
mkdir -p "$out"

topk=$out/cache-topk32
sampled=$out/cache-sampled50
systematic=$out/cache-systematic50
cache() {  # FOLDER SPEC
    if [[ -f $1/manifest.json ]] && grep -q '"complete" : true' "$1/manifest.json"; then return; fi
    echo "ablation: building the $2 cache of $data into $1" >&2
    "$kdgpu" teacher-cache build --data "$data" --targets "$2" --out "$1" "${cache_flags[@]}" >"$1.log" 2>&1
}

lens=(--lens-weight 1 --lens-layers 3:27,4:28)
align=(--attn-align-weight 1)
hints=(--hint-weight 1)
all_rows=(ce kd-t1 kd-t2 topk-renormalize topk-bucket topk-decoupled sampled systematic systematic200 sampled-bucket systematic-bucket kd+lens kd+align kd+hints kd-t1-bf16
          kd-t1-emb01 systematic-emb01 sampled-emb01 kd-t1-emb2 systematic-emb2 sampled-emb2 kd-t1-emb4 systematic-emb4
          sampled-emb4 kd-t1-emb8 systematic-emb8 sampled-emb8 sampled-prior systematic-prior sampled-exact systematic-exact
          sparsified50 sparsified200 sparsified500 sparsified5000)
rows=(${ROWS:-${all_rows[*]}})
# NAME -> "title|flags"
setting() {
    case $1 in
        ce) echo "CE only (no teacher)|--soft-weight 0 --hard-weight 1" ;;
        kd-t1) echo "live KD, fkl T=1|--temperature 1" ;;
        kd-t2) echo "live KD, fkl T=2 (the default)|" ;;
        topk-renormalize) echo "cached top-32, renormalized, T=1|--temperature 1 --teacher-cache $topk --sparse-tail renormalize" ;;
        topk-bucket) echo "cached top-32, bucket tail, T=1|--temperature 1 --teacher-cache $topk --sparse-tail bucket" ;;
        topk-decoupled) echo "cached top-32, decoupled (LFM2), T=1|--temperature 1 --teacher-cache $topk --sparse-tail decoupled" ;;
        sampled) echo "cached sampled:50, T=1|--temperature 1 --teacher-cache $sampled" ;;
        systematic) echo "cached systematic:50, T=1|--temperature 1 --teacher-cache $systematic" ;;
        systematic[1-9]*)  # systematicN: a cache of N systematic draws, any N
            [[ ${1#systematic} =~ ^[0-9]+$ ]] || { echo "ablation: unknown row '$1'; systematicN takes a number of draws" >&2; exit 2; }
            echo "cached systematic:${1#systematic}, T=1|--temperature 1 --teacher-cache $out/cache-$1" ;;
        sampled-bucket) echo "cached sampled:50, bucket tail (Good-Turing), T=1|--temperature 1 --teacher-cache $sampled --sparse-tail bucket" ;;
        systematic-bucket) echo "cached systematic:50, bucket tail (Good-Turing), T=1|--temperature 1 --teacher-cache $systematic --sparse-tail bucket" ;;
        kd+lens) echo "live KD, fkl T=1, embedding lr x4 + logit lens|--temperature 1 --embedding-lr-scale 4 ${lens[*]}" ;;
        kd+align) echo "live KD, fkl T=1, embedding lr x4 + attention alignment|--temperature 1 --embedding-lr-scale 4 ${align[*]}" ;;
        kd+hints) echo "live KD, fkl T=1, embedding lr x4 + hidden-state hints|--temperature 1 --embedding-lr-scale 4 ${hints[*]}" ;;
        kd-t1-bf16) echo "live KD, fkl T=1, student in mixed precision (bf16)|--temperature 1 --precision bf16" ;;
        kd-t1-emb01) echo "live KD, fkl T=1, embedding lr x0.1|--temperature 1 --embedding-lr-scale 0.1" ;;
        systematic-emb01) echo "cached systematic:50, T=1, embedding lr x0.1|--temperature 1 --teacher-cache $systematic --embedding-lr-scale 0.1" ;;
        sampled-emb01) echo "cached sampled:50, T=1, embedding lr x0.1|--temperature 1 --teacher-cache $sampled --embedding-lr-scale 0.1" ;;
        kd-t1-emb2) echo "live KD, fkl T=1, embedding lr x2|--temperature 1 --embedding-lr-scale 2" ;;
        systematic-emb2) echo "cached systematic:50, T=1, embedding lr x2|--temperature 1 --teacher-cache $systematic --embedding-lr-scale 2" ;;
        sampled-emb2) echo "cached sampled:50, T=1, embedding lr x2|--temperature 1 --teacher-cache $sampled --embedding-lr-scale 2" ;;
        kd-t1-emb4) echo "live KD, fkl T=1, embedding lr x4|--temperature 1 --embedding-lr-scale 4" ;;
        systematic-emb4) echo "cached systematic:50, T=1, embedding lr x4|--temperature 1 --teacher-cache $systematic --embedding-lr-scale 4" ;;
        sampled-emb4) echo "cached sampled:50, T=1, embedding lr x4|--temperature 1 --teacher-cache $sampled --embedding-lr-scale 4" ;;
        kd-t1-emb8) echo "live KD, fkl T=1, embedding lr x8|--temperature 1 --embedding-lr-scale 8" ;;
        systematic-emb8) echo "cached systematic:50, T=1, embedding lr x8|--temperature 1 --teacher-cache $systematic --embedding-lr-scale 8" ;;
        sampled-emb8) echo "cached sampled:50, T=1, embedding lr x8|--temperature 1 --teacher-cache $sampled --embedding-lr-scale 8" ;;
        sampled-prior) echo "cached sampled:50, prior tail (weight 20), T=1|--temperature 1 --teacher-cache $sampled --sparse-tail prior" ;;
        systematic-prior) echo "cached systematic:50, prior tail (weight 20), T=1|--temperature 1 --teacher-cache $systematic --sparse-tail prior" ;;
        sampled-exact) echo "cached sampled:50, exact labels, T=1|--temperature 1 --teacher-cache $sampled --exact-label true" ;;
        systematic-exact) echo "cached systematic:50, exact labels, T=1|--temperature 1 --teacher-cache $systematic --exact-label true" ;;
        sparsified[1-9]*)  # sparsifiedN: any N, not only the listed ones
            [[ ${1#sparsified} =~ ^[0-9]+$ ]] || { echo "ablation: unknown row '$1'; sparsifiedN takes a number of draws" >&2; exit 2; }
            echo "live teacher made sparse, systematic:${1#sparsified}, T=1|--temperature 1 --sparsify-teacher systematic:${1#sparsified}" ;;
        *) echo "ablation: unknown row '$1'; rows: ${all_rows[*]}" >&2; exit 2 ;;
    esac
}
flags() { setting "$1" | cut -d'|' -f2; }
for name in "${rows[@]}"; do setting "$name" >/dev/null; done

if [[ -z $table_only ]]; then
[[ " ${rows[*]} " == *" topk-"* ]] && cache "$topk" topk:32
[[ " ${rows[*]} " =~ \ sampled(-[a-z0-9]+)?\  ]] && cache "$sampled" sampled:50
[[ " ${rows[*]} " =~ \ systematic(-[a-z0-9]+)?\  ]] && cache "$systematic" systematic:50
for name in "${rows[@]}"; do
    [[ $name =~ ^systematic[0-9]+$ ]] && cache "$out/cache-$name" "systematic:${name#systematic}"
done

common=(--data "$data" --steps "$steps" --eval-every "$steps" --eval-windows "$eval_windows" --checkpoint-every "$steps" --export-gguf none "${train_flags[@]}")
for seed in "${seeds[@]}"; do
    for name in "${rows[@]}"; do
        summary="$out/$name-s$seed.txt"
        if [[ -f "$summary" ]] && grep -q "student, after" "$summary"; then continue; fi
        echo "ablation: $name seed $seed: kdgpu train $(flags "$name")" >&2
        # shellcheck disable=SC2046  # the flags are words
        "$kdgpu" train --out "$out/$name-s$seed" --seed "$seed" "${common[@]}" $(flags "$name") \
            >"$summary.partial" 2>"$out/$name-s$seed.log"
        mv "$summary.partial" "$summary"
        rm -rf "$out/$name-s$seed"  # the run's checkpoint (0.5 GB); its summary and log stay
    done
done
fi

# The table: mean and sample standard deviation over the seeds, each seed's value, and the mean's
# change against CE only.
perplexity() { [[ -f "$out/$1-s$2.txt" ]] && awk '/student, after/ { print $NF }' "$out/$1-s$2.txt" || true; }
echo "| objective | held-out perplexity, mean ± sd (seeds run) | per seed (${seeds[*]}; - not run) | vs CE only |"
echo "|---|---:|---|---:|"
ce_mean=""
for name in "${rows[@]}"; do
    values=() shown=()
    for seed in "${seeds[@]}"; do
        value=$(perplexity "$name" "$seed")
        [[ -n $value ]] && values+=("$value")
        shown+=("${value:--}")
    done
    [[ ${#values[@]} -eq 0 ]] && continue
    read -r mean sd <<<"$(printf '%s\n' "${values[@]}" | awk '{ s += $1; q += $1 * $1; n++ } END { m = s / n; v = n > 1 ? (q - n * m * m) / (n - 1) : 0; printf "%.2f %.2f\n", m, sqrt(v > 0 ? v : 0) }')"
    [[ $name == ce ]] && ce_mean=$mean
    change=$([[ -n $ce_mean && $name != ce ]] && awk -v m="$mean" -v c="$ce_mean" 'BEGIN { printf "%+.1f%%", 100 * (m - c) / c }' || echo "")
    title=$(setting "$name" | cut -d'|' -f1)
    echo "| $title | $mean ± $sd (${#values[@]}) | $(IFS=' '; echo "${shown[*]}") | $change |"
done
teacher=$(cat "$out"/*-s"${seeds[0]}".txt 2>/dev/null | awk '/teacher:/ { print $NF }' | head -1)
echo
echo "$steps steps of 4 x 128 tokens on $data, seeds ${seeds[*]}, held-out perplexity on at most $eval_windows validation windows; teacher perplexity $teacher on the same windows."
