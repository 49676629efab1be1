#!/usr/bin/env python3
"""Checks that a student GGUF exported by kdgpu loads in llama.cpp and gives the NLL `kdgpu eval` reports.

    pip install llama-cpp-python          # builds llama.cpp (about 8 minutes on 2 cores)
    kdgpu export --checkpoint runs/default --format gguf --type f16 --out student.gguf
    kdgpu eval --model student.gguf --data sample.txt --seq-len 128 --json > kdgpu.json
    python3 bench/reference/check_student_gguf_llamacpp.py student.gguf sample.txt 128 kdgpu.json

Windows are cut as `kdgpu eval` cuts them (consecutive, non-overlapping, each evaluated alone, its first
token not predicted; a last window shorter than 2 tokens dropped). Prints both mean NLLs and their
relative difference; exits 1 when that is above 1% (llama.cpp quantizes activations, so a few tenths of
a percent is expected).
"""
import json
import sys

import numpy as np
from llama_cpp import Llama


def main(model_path, text_path, seq_len, kdgpu_json):
    seq_len = int(seq_len)
    llm = Llama(model_path, logits_all=True, verbose=False, n_ctx=max(512, seq_len))
    text = open(text_path, "rb").read()
    ids = llm.tokenize(text, add_bos=False, special=False)
    total, count = 0.0, 0
    for start in range(0, len(ids), seq_len):
        window = ids[start:start + seq_len]
        if len(window) < 2:
            continue
        llm.reset()
        llm.eval(window)
        logits = np.array(llm.scores[: len(window)], dtype=np.float64)[:-1]
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        total -= log_probs[np.arange(len(window) - 1), window[1:]].sum()
        count += len(window) - 1
    llama_cpp = total / count
    kdgpu = json.load(open(kdgpu_json))
    difference = abs(kdgpu["mean_nll"] - llama_cpp) / llama_cpp
    print(f"llama.cpp: mean NLL {llama_cpp:.5f} over {count} tokens; kdgpu eval: {kdgpu['mean_nll']:.5f} over {kdgpu['tokens']} tokens; "
          f"relative difference {difference:.2%}")
    sys.exit(0 if difference <= 0.01 and count == kdgpu["tokens"] else 1)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
