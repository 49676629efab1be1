#!/usr/bin/env bash
# The GPU figures in one run: the parity table and the tests that drive the OpenCL device, on the
# machine's GPU; `kdgpu bench` on that GPU (every suite, and the 8 x 256 training step); and, when
# PyTorch sees a CUDA device, PyTorch on it doing the same work right after (bench/torch_*.py).
#
#     bench/gpu.sh OUT [KDGPU [TESTS [TEACHER]]]
#     QUICK=1 bench/gpu.sh OUT ...      the tests, then only `kdgpu bench gemm train` (a first look)
#
# OUT gets log.txt (every step's output, with its exit status and seconds) and the bench records
# (bench.json, bench-teacher.json, bench-large.json); `python3 scripts/readme_tables.py gpu OUT` puts
# them in the README. KDGPU and TESTS default to this checkout's release build (TESTS needs the
# kdgpu_*.resources folders the build leaves beside it), TEACHER to the default teacher. Each step
# has its own time limit, so one that hangs costs its limit and not the rest.
#
# A build carried from another machine must run on this one's processor: release builds compile for
# the building processor (`-target-cpu native`), so build the binary that travels for a baseline
# every x86-64 server of the last decade has: `KDGPU_TARGET_CPU=haswell swift build -c release
# --build-tests` (AVX2 and FMA). The first step stops the run if the binary cannot start here.
set -uo pipefail
out=$1
kdgpu=${2:-.build/release/kdgpu}
tests=${3:-.build/release/kdgpuPackageTests.xctest}
teacher=${4:-cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf}
mkdir -p "$out"
log=$out/log.txt

step() {  # step NAME SECONDS COMMAND...: runs COMMAND under a time limit, its output appended to the log
    local name=$1 limit=$2 start
    shift 2
    start=$(date +%s)
    echo "=== $name: $*" >> "$log"
    timeout "$limit" "$@" >> "$log" 2>&1
    echo "=== $name: exit $? in $(( $(date +%s) - start )) s" | tee -a "$log"
}

# The classes that run kernels on the default OpenCL device (the first GPU) against the CPU backend.
gpu_tests=BackendParityTests.BackendParityTests,BackendParityTests.ConversionTests,BackendParityTests.HostBytesTests
gpu_tests+=,BackendParityTests.SampleRowsTests,OpenCLRuntimeTests.OpenCLRuntimeTests,LossTests.DivergenceTests
gpu_tests+=,LossTests.FusedLinearTests,LossTests.GradientAndErrorTests,LossTests.HintLossTests
gpu_tests+=,ModelTests.TinyLlamaTests,TrainingTests.DistillationStepTests,TrainingTests.StudentGradientTests

if ! "$kdgpu" --help >/dev/null 2>&1; then
    echo "gpu.sh: $kdgpu does not start on this processor (built for another with -target-cpu native?): rebuild it with KDGPU_TARGET_CPU=haswell" | tee -a "$log"
    exit 1
fi
step devices 60 "$kdgpu" devices
if ! compgen -G "$(dirname "$tests")/kdgpu_*.resources" >/dev/null; then
    echo "gpu.sh: no kdgpu_*.resources folders beside $tests: the model tests would stop at the first that needs one" | tee -a "$log"
fi
step tests 150 "$tests" "$gpu_tests"
if [[ ${QUICK:-0} == 1 ]]; then
    step bench-quick 180 "$kdgpu" bench gemm train --device opencl --teacher "$teacher" --json-out "$out/bench-quick.json"
    exit 0
fi
step bench 180 "$kdgpu" bench copy gemm ops loss linear-loss lens align --device opencl --json-out "$out/bench.json"
step bench-teacher 180 "$kdgpu" bench teacher teacher-cache generate train --device opencl --teacher "$teacher" \
    --json-out "$out/bench-teacher.json"
step bench-large 90 "$kdgpu" bench train --device opencl --teacher "$teacher" --batch-size 8 --seq-len 256 \
    --json-out "$out/bench-large.json"
# The cached step without reading its targets ahead (the runs above read them ahead on a GPU: auto).
step bench-no-read-ahead 90 "$kdgpu" bench train --device opencl --teacher "$teacher" --batch-size 8 --seq-len 256 \
    --precision fp32 --cache-read-ahead off --json-out "$out/bench-large-no-read-ahead.json"
# The all-reduce after the backward and by the overlapped path's loans (a map and an unmap per span on a second queue,
# each a transfer) on a discrete GPU: two ranks on this one GPU, so the transfers and MPI, not two GPUs' scaling.
if command -v mpirun >/dev/null; then
    root=(); [[ $(id -u) == 0 ]] && root=(--allow-run-as-root)
    step allreduce 90 mpirun "${root[@]}" --oversubscribe -np 2 "$kdgpu" bench allreduce --device opencl --json-out "$out/bench-allreduce.json"
    # The overlapped path's two queues on this GPU: two ranks (the tiny model, an untied head, one micro-batch a
    # rank) take the same steps with and without it, bit for bit, as they do on PoCL in `make test`.
    python3 -c "import random; random.seed(1); w='the of and to in that is was he for it with as his on be at by had are'.split(); open('$out/words.txt', 'w').write(' '.join(random.choice(w) for _ in range(5000)))"
    for overlap in off on; do
        step "overlap-$overlap" 120 mpirun "${root[@]}" --oversubscribe -np 2 "$kdgpu" train --teacher Tests/ModelTests/Fixtures/tiny-llama-q8_0.gguf \
            --data "$out/words.txt" --student-layers 0 --steps 6 --batch-size 2 --seq-len 32 --eval-every 3 --checkpoint-every 3 \
            --export-gguf none --device opencl --out "$out/overlap-$overlap" --overlap-allreduce $overlap
    done
    step overlap-same-steps 30 python3 -c "
import json, sys
runs = [[{k: v for k, v in json.loads(l).items() if k in ('step', 'loss', 'grad_norm', 'val_nll')} for l in open(f'$out/overlap-{o}/metrics.jsonl')] for o in ('off', 'on')]
print(runs[1]); sys.exit(0 if runs[0] == runs[1] and len(runs[0]) > 6 else 1)"
else
    echo "=== no mpirun here: no all-reduce figures" | tee -a "$log"
fi
if python3 -c "import torch, gguf; assert torch.cuda.is_available()" 2>/dev/null; then
    step torch-gemm 120 python3 bench/torch_gemm.py --device cuda --runs 20 --json
    step torch-loss 120 python3 bench/torch_loss.py --device cuda --vocab 49152 --runs 20 --json
    for autocast in none all; do
        step "torch-train-$autocast" 120 python3 bench/torch_train_step.py --device cuda --runs 10 --autocast $autocast \
            --teacher "$teacher" --json
        step "torch-train-large-$autocast" 120 python3 bench/torch_train_step.py --device cuda --runs 10 --autocast $autocast \
            --batch-size 8 --seq-len 256 --teacher "$teacher" --json
    done
else
    echo "=== PyTorch with CUDA (and gguf) not importable: no PyTorch side-by-side" | tee -a "$log"
fi
