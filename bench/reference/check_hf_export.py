#!/usr/bin/env python3
"""Independent checks of kdgpu's Hugging Face export, with transformers and the safetensors package.

  python3 bench/reference/check_hf_export.py logits EXPORT_DIR
      EXPORT_DIR is the tiny fixture model (Tests/ModelTests/Fixtures/tiny-llama-f32.gguf) exported
      by the Swift code to Hugging Face format (model.safetensors + config.json). Make it with
        KDGPU_HF_EXPORT_DIR=/tmp/tiny-hf swift test -c release --skip-build --disable-swift-testing \
            --filter CheckpointTests.HuggingFaceExportTests
      This loads it with transformers' LlamaForCausalLM (rotate-half RoPE, fp32, eager attention),
      runs the tiny model's reference sequences, prints the largest difference from the numpy
      reference logits of the GGUF (Tests/ModelTests/Fixtures/tiny-llama-reference.json), and writes
      the transformers logits to Tests/CheckpointTests/Fixtures/hf-export-logits.json.

  python3 bench/reference/check_hf_export.py teacher EXPORT_DIR
      EXPORT_DIR is the real teacher (SmolLM2-135M-Instruct.Q4_1.gguf, dequantized) exported by
        KDGPU_TEACHER_HF_EXPORT_DIR=/tmp/teacher-hf swift test -c release --skip-build \
            --disable-swift-testing --filter CheckpointTests.RealTeacherExportTests
      Writes the top-10 next-token logits of "The capital of France is" (llama.cpp's ids) to
      Tests/CheckpointTests/Fixtures/teacher-hf-logits.json.

  python3 bench/reference/check_hf_export.py safetensors
      Writes Tests/CheckpointTests/Fixtures/reference.safetensors with the safetensors package
      (F32, F16 and BF16 tensors, metadata) and reference-safetensors.json with the values it holds.

Install: pip install safetensors numpy torch==2.13.0+cpu transformers
"""
import importlib.metadata
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "Tests/CheckpointTests/Fixtures"


def logits(export_dir):
    import torch
    from transformers import LlamaForCausalLM

    reference = json.loads((ROOT / "Tests/ModelTests/Fixtures/tiny-llama-reference.json").read_text())
    model = LlamaForCausalLM.from_pretrained(export_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    results, worst = [], 0.0
    for ids, numpy_logits in zip(reference["sequences"], reference["models"]["f32"]["logits"]):
        with torch.no_grad():
            out = model(torch.tensor([ids])).logits[0].numpy()
        diff = float(np.abs(out - np.array(numpy_logits, dtype=np.float32)).max())
        worst = max(worst, diff)
        print(f"{len(ids):3d} tokens: max |transformers - numpy reference of the GGUF| = {diff:.2e}")
        results.append(out.astype(np.float32).round(5).tolist())
    print("OK" if worst < 1e-3 else "NOT OK: the export does not reproduce the GGUF model")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with open(FIXTURES / "hf-export-logits.json", "w") as out:
        json.dump({
            "made_by": "bench/reference/check_hf_export.py logits",
            "transformers": importlib.metadata.version("transformers"),
            "torch": importlib.metadata.version("torch"),
            "max_abs_diff_vs_numpy_reference": worst,
            "sequences": reference["sequences"],
            "logits": results,
        }, out)
    return 0 if worst < 1e-3 else 1


def teacher(export_dir):
    import torch
    from transformers import LlamaForCausalLM

    prompt = [504, 3575, 282, 4649, 314]  # "The capital of France is" (SmolLM2, llama.cpp's tokenizer)
    model = LlamaForCausalLM.from_pretrained(export_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        last = model(torch.tensor([prompt])).logits[0, -1].numpy()
    top = np.argsort(-last)[:10]
    print("top tokens:", top.tolist(), "logits:", last[top].round(4).tolist())
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with open(FIXTURES / "teacher-hf-logits.json", "w") as out:
        json.dump({"made_by": "bench/reference/check_hf_export.py teacher",
                   "transformers": importlib.metadata.version("transformers"),
                   "torch": importlib.metadata.version("torch"),
                   "prompt": prompt, "top_ids": top.tolist(), "top_logits": last[top].astype(float).round(5).tolist()}, out, indent=1)
    return 0 if int(top[0]) == 7042 else 1


def safetensors_fixture():
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(7)
    tensors = {
        "f32.matrix": torch.tensor(rng.standard_normal((3, 5)).astype(np.float32)),
        "f16.vector": torch.tensor(rng.standard_normal(6).astype(np.float32)).to(torch.float16),
        "bf16.cube": torch.tensor(rng.standard_normal((2, 2, 3)).astype(np.float32)).to(torch.bfloat16),
        "empty": torch.zeros((0, 4), dtype=torch.float32),
        "i64.ids": torch.tensor([1, -2, 3], dtype=torch.int64),
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(FIXTURES / "reference.safetensors"), metadata={"format": "pt", "note": "héllo"})
    expected = {name: {"dtype": str(t.dtype), "shape": list(t.shape), "values": t.to(torch.float64).flatten().tolist()}
                for name, t in tensors.items()}
    with open(FIXTURES / "reference-safetensors.json", "w") as out:
        json.dump({"made_by": "bench/reference/check_hf_export.py safetensors",
                   "safetensors": importlib.metadata.version("safetensors"),
                   "metadata": {"format": "pt", "note": "héllo"}, "tensors": expected}, out, indent=1)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "logits":
        sys.exit(logits(sys.argv[2]))
    if len(sys.argv) == 3 and sys.argv[1] == "teacher":
        sys.exit(teacher(sys.argv[2]))
    if len(sys.argv) == 2 and sys.argv[1] == "safetensors":
        sys.exit(safetensors_fixture())
    print(__doc__)
    sys.exit(2)
