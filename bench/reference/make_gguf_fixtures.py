#!/usr/bin/env python3
"""Reference GGUF files for the Swift reader, made by an independent implementation (the `gguf`
PyPI package, maintained with llama.cpp).

Writes into Tests/GGUFTests/Fixtures/:
  reference.gguf          every metadata value type and one tensor of each supported type
  reference_align64.gguf  the same tensors with general.alignment = 64
  reference.json          what a reader must find in both: metadata (typed), tensor infos,
                          the fp32 source values, the quantized bytes (hex) that gguf.quants
                          produced from them, and the values gguf.quants.dequantize gives back

Run from the package root:  pip install gguf numpy && python3 bench/reference/make_gguf_fixtures.py
"""
import importlib.metadata
import json
import pathlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "Tests/GGUFTests/Fixtures"

# (name, ggml type, dims fastest-first). Shapes stay small: the fixtures are checked in.
TENSORS = [
    ("f32.matrix", Q.F32, [8, 3]),
    ("f32.vector", Q.F32, [5]),
    ("f16.matrix", Q.F16, [6, 2, 2]),
    ("bf16.matrix", Q.BF16, [4, 3]),
    ("q8_0.matrix", Q.Q8_0, [64, 3]),
    ("q4_0.matrix", Q.Q4_0, [64, 2]),
    ("q4_1.matrix", Q.Q4_1, [96, 2]),
    ("q4_1.cube", Q.Q4_1, [32, 2, 2]),
]

# (key, GGUF value type, value, array element type). general.architecture is added by GGUFWriter.
METADATA = [
    ("test.u8", V.UINT8, 200, None),
    ("test.i8", V.INT8, -100, None),
    ("test.u16", V.UINT16, 60000, None),
    ("test.i16", V.INT16, -30000, None),
    ("test.u32", V.UINT32, 4000000000, None),
    ("test.i32", V.INT32, -2000000000, None),
    ("test.f32", V.FLOAT32, 0.1, None),
    ("test.bool_true", V.BOOL, True, None),
    ("test.bool_false", V.BOOL, False, None),
    ("test.string", V.STRING, "héllo, 世界 🦙", None),
    ("test.empty_string", V.STRING, "", None),
    ("test.u64", V.UINT64, 2**63 + 5, None),
    ("test.i64", V.INT64, -(2**62), None),
    ("test.f64", V.FLOAT64, 3.141592653589793, None),
    ("test.array_i32", V.ARRAY, [1, -2, 3, 2**31 - 1], V.INT32),
    ("test.array_u8", V.ARRAY, [0, 1, 255], V.UINT8),
    ("test.array_f32", V.ARRAY, [0.5, -1.25, 1e-5], V.FLOAT32),
    ("test.array_string", V.ARRAY, ["Ġthe", "<|im_start|>", "", "é"], V.STRING),
    ("test.array_bool", V.ARRAY, [True, False, True], V.BOOL),
    ("test.array_nested", V.ARRAY, [[1, 2], [3], [4, 5, 6]], V.ARRAY),
    ("test.array_f64", V.ARRAY, [1.5, -2.0], V.FLOAT64),
]


def source_values(index, count):
    """Deterministic test values with a spread of magnitudes, signs and one all-equal block."""
    rng = np.random.default_rng(1234 + index)
    values = rng.standard_normal(count).astype(np.float32) * np.float32(0.5 + index)
    if count >= 64:
        values[32:64] = np.float32(0.25)  # a constant block: d = 0 for Q4_1, exercises the id = 0 branch
    return values


def typed_json(vtype, value, sub_type=None):
    """The JSON form of a value as the Swift test reads it: {"type": name, "value": ...}.
    Integers are written as strings so that u64 values above 2^63 survive any JSON parser."""
    if vtype == V.ARRAY:
        if sub_type == V.ARRAY:
            return {"type": "array", "elementType": "array",
                    "value": [typed_json(V.ARRAY, item, V.INT32) for item in value]}
        return {"type": "array", "elementType": sub_type.name.lower(),
                "value": [typed_json(sub_type, item)["value"] for item in value]}
    if vtype == V.FLOAT32:
        value = float(np.float32(value))
    elif vtype not in (V.FLOAT64, V.BOOL, V.STRING):
        value = str(value)
    return {"type": vtype.name.lower(), "value": value}


def write_file(path, alignment=None):
    writer = gguf.GGUFWriter(str(path), arch="test")
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for key, vtype, value, sub_type in METADATA:
        if vtype == V.ARRAY and sub_type == V.ARRAY:
            writer.add_key_value(key, value, V.ARRAY, sub_type=V.ARRAY)
        else:
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
    records = []
    for index, (name, qtype, dims) in enumerate(TENSORS):
        count = int(np.prod(dims))
        values = source_values(index, count)
        shape = list(reversed(dims))  # numpy shape is outermost first
        quantized = gguf.quants.quantize(values.reshape(shape), qtype)
        writer.add_tensor(name, quantized, raw_dtype=qtype)
        dequantized = gguf.quants.dequantize(quantized, qtype).reshape(-1).astype(np.float32)
        records.append({
            "name": name, "type": qtype.name, "typeID": int(qtype), "dimensions": dims,
            "source": [float(v) for v in values],
            "quantizedHex": quantized.tobytes().hex(),
            "dequantized": [float(v) for v in dequantized],
        })
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return records


def main():
    FIXTURES.mkdir(parents=True, exist_ok=True)
    records = write_file(FIXTURES / "reference.gguf")
    write_file(FIXTURES / "reference_align64.gguf", alignment=64)

    # Key order and offsets as the gguf package's own reader sees them, for both files.
    offsets = {}
    for file_name in ("reference.gguf", "reference_align64.gguf"):
        reader = gguf.GGUFReader(str(FIXTURES / file_name))
        base = reader.data_offset
        offsets[file_name] = {
            "dataSectionOffset": int(base),
            "metadataKeysInOrder": [k for k in reader.fields if not k.startswith("GGUF.")],
            "tensorOffsets": {t.name: int(t.data_offset - base) for t in reader.tensors},
        }

    metadata = {"general.architecture": {"type": "string", "value": "test"}}
    for key, vtype, value, sub_type in METADATA:
        metadata[key] = typed_json(vtype, value, sub_type)
    reference = {
        "generator": f"gguf {importlib.metadata.version('gguf')}",
        "metadata": metadata,
        "files": offsets,
        "tensors": records,
    }
    (FIXTURES / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    for path in sorted(FIXTURES.glob("reference*")):
        print(f"{path.relative_to(FIXTURES.parents[2])}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
