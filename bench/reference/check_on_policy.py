#!/usr/bin/env python3
"""An independent check of an on-policy (or sequence-level) step's loss, from the ids the run logged.

The first step of a run trains the student it started with: the teacher's blocks named by
student_layers (an inherited student), which this script rebuilds from the teacher GGUF with the
`gguf` package and runs with the numpy float64 llama forward of llama_reference.py. For every
sequence the run sampled at step 1 (RUN/rollouts.jsonl), the divergence is taken from the two
models' logits at the positions that predict the sampled tokens (prompt positions masked) and
averaged over them, as the configuration says (fkl, rkl or jsd(beta), temperature T, times T^2 when
scaled, plus hard_weight x the student's cross-entropy; with on_policy_loss sampled-rkl, the student's
samples take log q(x) - log p(x) of each sampled token instead of the divergence); the run's logged
step-1 loss must equal it.

  python3 bench/reference/check_on_policy.py RUN_DIR
      compares RUN_DIR/metrics.jsonl's step-1 loss with this reference; exits 1 when they differ
  python3 bench/reference/check_on_policy.py RUN_DIR --fixture OUT.json
      also writes OUT.json (the settings, the sampled ids and the reference loss) for the Swift test

Run it on a run made with --on-policy-fraction 1 (or --seq-kd true), an inherited student and an fp32
teacher (--teacher-precision fp32), e.g. the tiny fixture (Tests/CLITests/OnPolicyTests.swift).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_reference import forward, load  # noqa: E402


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def divergence(name, log_p, log_q):
    """Per-row divergence of teacher p and student q (log-probabilities [N, V]), from the definitions."""
    p, q = np.exp(log_p), np.exp(log_q)
    if name == "fkl":
        return (p * (log_p - log_q)).sum(-1)
    if name == "rkl":
        return (q * (log_q - log_p)).sum(-1)
    if name.startswith("jsd(") and name.endswith(")"):
        beta = float(name[4:-1])
        m = beta * p + (1 - beta) * q
        log_m = np.log(np.maximum(m, 1e-300))
        return beta * (p * (log_p - log_m)).sum(-1) + (1 - beta) * (q * (log_q - log_m)).sum(-1)
    raise SystemExit(f"check_on_policy: divergence {name} has no reference here (fkl, rkl, jsd(beta))")


def student_of(config, weights, layers):
    """The inherited student: the teacher's embeddings, final norm and head, and blocks `layers`, renumbered."""
    student = {k: v for k, v in weights.items() if not k.startswith("blk.")}
    for i, l in enumerate(layers):
        for k, v in weights.items():
            if k.startswith(f"blk.{l}."):
                student[f"blk.{i}." + k[len(f"blk.{l}."):]] = v
    return dict(config, layers=len(layers)), student


def inherited_layers(text, teacher_layers):
    if text is None:
        return list(range(teacher_layers)) if teacher_layers <= 6 else [0, 1, 2] + list(range(teacher_layers - 3, teacher_layers))
    if text.startswith("every:"):
        return list(range(0, teacher_layers, int(text[6:])))
    return [int(x) for x in text.split(",")]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--fixture")
    args = parser.parse_args()
    state = json.load(open(os.path.join(args.run, "checkpoint", "trainer_state.json")))
    settings = state["configuration"]
    if settings.get("student_shape"):
        raise SystemExit("check_on_policy: a fresh student (student_shape) cannot be rebuilt from the teacher; use an inherited one")
    teacher_config, teacher = load(settings["teacher"])
    student_config, student = student_of(teacher_config, teacher, inherited_layers(settings.get("student_layers"), teacher_config["layers"]))
    rollouts = [json.loads(line) for line in open(os.path.join(args.run, "rollouts.jsonl"))]
    rollouts = [r for r in rollouts if r["step"] == 1]
    if not rollouts:
        raise SystemExit("check_on_policy: step 1 sampled nothing (rollouts.jsonl); run with --on-policy-fraction 1 or --seq-kd true")
    logged = next(json.loads(line) for line in open(os.path.join(args.run, "metrics.jsonl")) if json.loads(line).get("step") == 1 and "loss" in json.loads(line))

    t = float(settings["temperature"])
    scale = t * t if settings.get("scale_by_squared_temperature", True) else 1.0
    soft, hard = float(settings["soft_weight"]), float(settings["hard_weight"])
    rows = []
    for r in rollouts:
        ids = np.array(r["prompt_ids"] + r["completion_ids"])
        z_t, z_s = forward(teacher_config, teacher, ids), forward(student_config, student, ids)
        first = len(r["prompt_ids"]) - 1  # the position predicting the first sampled token
        positions = np.arange(first, len(ids) - 1)
        labels = ids[positions + 1]
        ce = -log_softmax(z_s[positions])[np.arange(len(positions)), labels]
        if settings.get("on_policy_loss") == "sampled-rkl" and r["source"] == "student":
            # The per-token estimate of the reverse KL: log q(x) - log p(x) of each sampled token.
            d = log_softmax(z_t[positions])[np.arange(len(positions)), labels] * -1 - ce
        else:
            d = divergence(settings["divergence"], log_softmax(z_t[positions] / t), log_softmax(z_s[positions] / t))
        rows.extend(soft * scale * d + hard * ce)
    reference = float(np.mean(rows))
    relative = abs(logged["loss"] - reference) / abs(reference)
    print(f"step 1: {len(rollouts)} sequences, {len(rows)} sampled positions; kdgpu loss {logged['loss']:.7f}, "
          f"reference (numpy float64) {reference:.7f}, relative difference {relative:.2e}")
    if args.fixture:
        keys = ["divergence", "temperature", "soft_weight", "hard_weight", "seed", "prompt_tokens", "rollout_tokens",
                "rollout_temperature", "batch_size", "seq_len", "student_layers", "on_policy_fraction", "seq_kd", "on_policy_loss", "prompts"]
        with open(args.fixture, "w") as out:
            json.dump({"settings": {k: settings.get(k) for k in keys}, "teacher": os.path.basename(settings["teacher"]),
                       "sequences": [{"source": r["source"], "prompt_ids": r["prompt_ids"], "completion_ids": r["completion_ids"]} for r in rollouts],
                       "reference_loss": reference, "kdgpu_loss_when_written": logged["loss"]}, out, indent=1)
    sys.exit(0 if relative < 1e-4 else 1)


if __name__ == "__main__":
    main()
