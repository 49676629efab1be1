#!/usr/bin/env python3
"""Writes `kdgpu bench` tables and the side-by-side lines with PyTorch into README.md, between markers,
so the README's figures are what the code printed.

    python3 scripts/readme_tables.py cpu WORK SUITES   # scripts/readme-bench.sh's run (this machine)
    python3 scripts/readme_tables.py gpu RESULTS       # a bench/gpu.sh run (its OUT folder, e.g. bench/results/...)

cpu: WORK holds table.txt and kdgpu.json (and table_large.txt / kdgpu_large.json for 8 x 256), and
PyTorch's records torch_gemm.json, torch_loss.json, torch_train_{none,teacher,all}.json and
torch_train_large_*.json; the text goes between <!-- bench:begin --> and <!-- bench:end -->.
gpu: RESULTS holds bench/gpu.sh's log.txt (each step's output) and bench*.json; the text goes between
<!-- gpu-bench:begin --> and <!-- gpu-bench:end -->.
"""
import json
import os
import re
import sys

def ms(seconds):
    """Milliseconds with the digits that matter: 140, 71, 1.13."""
    value = seconds * 1000
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


AUTOCAST_NAMES = {"none": "fp32", "teacher": "bf16 autocast on the teacher", "all": "bf16 autocast on teacher and student"}


def side_by_side(records, torch_gemm, torch_loss, torch_train):
    """Lines setting kdgpu's records beside PyTorch's doing the same work.

    torch_gemm: PyTorch's gemm records; torch_loss: its loss records; torch_train: {(shape, autocast): record}
    with shape "4x128" or "8x256"."""
    lines = []
    by_shape = {(r["shape"], r.get("dtype", "f32")): r for r in torch_gemm}
    for r in records:
        bf16 = "bf16" in r["kernel"]
        t = by_shape.get((r["shape"], "bf16" if bf16 else "f32"))
        note = r.get("note") or ""
        # fp32: the engine in use; bf16: every route, the one a run does not take marked so.
        shown = ("in use: " in note and r.get("dtype", "f32") == "f32") or bf16
        if r["suite"] == "gemm" and t and shown and ("2048 K=2048" in r["shape"] or "49152" in r["shape"]):
            lines.append(f"- {r['kernel']}, {r['shape']}, {r['backend']}: {r['gflop_per_s']:.0f} GFLOP/s, "
                         f"{r['gflop_per_s'] / t['gflop_per_s']:.2f}x PyTorch {t['kernel']} ({t['gflop_per_s']:.0f} GFLOP/s)"
                         + (" (not in use here)" if "not in use here" in note else ""))
    torch_fb = [r for r in torch_loss if "backward" in r["kernel"]]
    for r in records:
        if torch_fb and r["suite"] == "loss" and r["kernel"] == "distill_loss_rows fkl forward+grad" and "V=49152" in r["shape"]:
            lines.append(f"- fused loss forward + gradient, 2048 x 49152, {r['backend']}: {ms(r['median_seconds'])} ms, "
                         f"{torch_fb[0]['median_seconds'] / r['median_seconds']:.1f}x PyTorch {ms(torch_fb[0]['median_seconds'])} ms "
                         f"({r['fraction_of_copy_bandwidth']:.0%} of this run's copy bandwidth)")
    for shape in ("4x128", "8x256"):
        for r in records:
            if not (r["suite"] == "train" and r["kernel"] == "distillation_step" and r["shape"].startswith(shape + " tokens")):
                continue
            # kdgpu fp32 against PyTorch fp32; kdgpu --precision bf16 against both of PyTorch's bf16 autocast set-ups.
            against = [a for a in (["none"] if r["dtype"] == "f32" else ["all", "teacher"]) if (shape, a) in torch_train]
            if not against:
                continue
            ratios = ", ".join(f"{torch_train[shape, a]['median_seconds'] / r['median_seconds']:.2f}x PyTorch {torch_train[shape, a]['torch']} "
                               f"{AUTOCAST_NAMES[a]} ({ms(torch_train[shape, a]['median_seconds'])} ms, "
                               f"{torch_train[shape, a]['tokens_per_s']:.0f} tokens/s)" for a in against)
            lines.append(f"- distillation step, {shape.replace('x', ' x ')} tokens, {r['dtype']}, {r['backend']}: "
                         f"{ms(r['median_seconds'])} ms ({r['tokens_per_s']:.0f} tokens/s, step peak {r['step_peak_mib']:.0f} MiB), {ratios}")
    return lines


def torch_train_records(record):
    """{(shape, autocast): PyTorch's training-step record} for each that `record(large, autocast)` finds
    (large: the 8 x 256 step, else 4 x 128; None where that run is missing)."""
    found = {}
    for large, shape in ((False, "4x128"), (True, "8x256")):
        for autocast in AUTOCAST_NAMES:
            if found_record := record(large, autocast):
                found[shape, autocast] = found_record
    return found


def write_between(begin, end, text):
    readme = open("README.md").read()
    if begin not in readme or end not in readme:
        sys.exit(f"README.md lacks the {begin} / {end} markers")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    open("README.md", "w").write(head + begin + "\n" + text + end + tail)


def load(path, default=None):
    return json.load(open(path)) if os.path.exists(path) else default


def cpu(work, suites):
    model = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":")[1].strip()
    records = json.load(open(f"{work}/kdgpu.json"))
    text = f"Measured on {os.cpu_count()} cores ({model}) with `kdgpu bench {suites}`:\n\n```\n{open(f'{work}/table.txt').read().rstrip()}\n```\n"
    if os.path.exists(f"{work}/table_large.txt"):
        records += json.load(open(f"{work}/kdgpu_large.json"))
        text += f"\nand `kdgpu bench train --batch-size 8 --seq-len 256`:\n\n```\n{open(f'{work}/table_large.txt').read().rstrip()}\n```\n"
    torch_train = torch_train_records(lambda large, autocast: load(f"{work}/torch_train{'_large' if large else ''}_{autocast}.json"))
    lines = side_by_side(records, load(f"{work}/torch_gemm.json", []), load(f"{work}/torch_loss.json", []), torch_train)
    if lines:
        text += "\nSide by side with PyTorch CPU (2 threads) doing the same work right after, in the same session "
        text += "(`bench/torch_gemm.py`, `bench/torch_loss.py`, `bench/torch_train_step.py`):\n\n" + "\n".join(lines) + "\n"
    if suites:
        # The README's block holds every suite of one run: a run of some suites would drop the others' tables.
        print(text)
        sys.exit(f"readme_tables: a run of some suites ({suites}) printed above, README.md left as it is: "
                 "scripts/readme-bench.sh without arguments rewrites its tables")
    write_between("<!-- bench:begin -->", "<!-- bench:end -->", text)


def log_steps(path):
    """bench/gpu.sh's log: {step name: (command, output lines, exit status, seconds)}."""
    steps, name, command, lines = {}, None, None, []
    for line in open(path).read().splitlines():
        done = re.match(r"=== (\S+): exit (\d+) in (\d+) s$", line)
        start = re.match(r"=== (\S+): (.*)$", line)
        if done and done.group(1) == name:
            steps[name] = (command, lines, int(done.group(2)), int(done.group(3)))
            name, lines = None, []
        elif start and name is None:
            name, command = start.group(1), start.group(2)
        elif name is not None:
            lines.append(line)
    return steps


def gpu(results):
    steps = log_steps(f"{results}/log.txt")
    device = [l.strip() for l in steps["devices"][1] if l.strip().startswith("opencl:0:0")][0].split(None, 1)[1].split(" (default")[0]
    driver = [l.strip() for l in steps["devices"][1] if l.strip().startswith("type GPU")][0]
    host = [l.strip() for l in steps["devices"][1] if l.strip().startswith("cpu ")][0].split("CPU backend: ", 1)[1]
    shown = os.path.relpath(results)
    text = f"Measured on {device} ({driver}; host: {host}) with `bench/gpu.sh`, results in `{shown}`:\n"
    records = []
    for name, title in (("bench", "`kdgpu bench copy gemm ops loss linear-loss lens align --device opencl`"),
                        ("bench-teacher", "`kdgpu bench teacher teacher-cache generate train --device opencl`"),
                        ("bench-large", "`kdgpu bench train --device opencl --batch-size 8 --seq-len 256`")):
        if name not in steps:
            continue
        _, lines, status, _ = steps[name]
        # The tables as printed (stdout); the progress lines (stderr, "bench SUITE: ...") left out.
        table = "\n".join(l for l in lines if not l.startswith("bench ")).strip()
        text += f"\n{title} (exit {status}):\n\n```\n{table}\n```\n"
        records += load(f"{results}/{name}.json", [])

    def torch_records(name):
        if name not in steps or steps[name][2] != 0:
            return None
        return json.loads("\n".join(steps[name][1]))

    torch_train = torch_train_records(lambda large, autocast: torch_records(f"torch-train{'-large' if large else ''}-{autocast}"))
    lines = side_by_side(records, torch_records("torch-gemm") or [], torch_records("torch-loss") or [], torch_train)
    if lines:
        backend = next(iter(torch_train.values()))["backend"] if torch_train else "cuda"
        text += (f"\nSide by side with PyTorch on the same GPU through CUDA ({backend}; eager, fp32 matmuls without TF32) "
                 "doing the same work right after, in the same run (`bench/torch_gemm.py`, `bench/torch_loss.py`, "
                 "`bench/torch_train_step.py`, each with `--device cuda`):\n\n" + "\n".join(lines) + "\n")
    write_between("<!-- gpu-bench:begin -->", "<!-- gpu-bench:end -->", text)


if __name__ == "__main__":
    folder = os.path.abspath(sys.argv[2]) if len(sys.argv) >= 3 else ""
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if len(sys.argv) >= 3 and sys.argv[1] == "cpu":
        cpu(folder, sys.argv[3] if len(sys.argv) > 3 else "")
    elif len(sys.argv) == 3 and sys.argv[1] == "gpu":
        gpu(folder)
    else:
        sys.exit(__doc__)
    print("README.md: benchmark tables updated")
