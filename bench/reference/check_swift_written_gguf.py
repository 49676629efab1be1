#!/usr/bin/env python3
"""Reads Tests/GGUFTests/Fixtures/swift_written.gguf (made by kdgpu's GGUFWriter, see
GGUFWriterTests.makeWriter) with the `gguf` PyPI package, and writes what it found to
swift_written.python.json: typed metadata, tensor infos and gguf.quants.dequantize values.
The Swift test then checks the Swift reader sees the same, so a file our writer makes is
readable by the llama.cpp ecosystem.

Run from the package root:  python3 bench/reference/check_swift_written_gguf.py
"""
import json
import pathlib

import numpy as np
import gguf
from gguf import GGUFValueType as V

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "Tests/GGUFTests/Fixtures"


def typed(vtype, value, sub_types):
    """Typed JSON as in make_gguf_fixtures.py (integers as strings)."""
    if vtype == V.ARRAY:
        element_type = sub_types[0]
        if element_type == V.ARRAY:
            raise ValueError("nested arrays are decoded by nested_array()")
        return {"type": "array", "elementType": element_type.name.lower(),
                "value": [typed(element_type, item, [])["value"] for item in value]}
    if vtype in (V.FLOAT32, V.FLOAT64):
        return {"type": vtype.name.lower(), "value": float(value)}
    if vtype in (V.BOOL, V.STRING):
        return {"type": vtype.name.lower(), "value": value}
    return {"type": vtype.name.lower(), "value": str(int(value))}


def nested_array(field):
    """Decodes an array of arrays from the reader's raw parts: after the key parts come the outer
    element type and count, then for each inner array its element type, count and elements."""
    parts = field.parts[3:]  # key length, key bytes, value type
    assert int(parts[0][0]) == V.ARRAY
    count = int(parts[1][0])
    index = 2
    inner_arrays = []
    for _ in range(count):
        element_type = V(int(parts[index][0]))
        length = int(parts[index + 1][0])
        index += 2
        items = []
        for _ in range(length):
            if element_type == V.STRING:
                items.append(bytes(parts[index + 1]).decode("utf-8"))
                index += 2
            else:
                items.append(parts[index][0].item())
                index += 1
        inner_arrays.append(typed(V.ARRAY, items, [element_type]))
    return {"type": "array", "elementType": "array", "value": inner_arrays}


def main():
    reader = gguf.GGUFReader(str(FIXTURES / "swift_written.gguf"))
    metadata, keys = {}, []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        keys.append(key)
        if field.types[0] == V.ARRAY and len(field.types) > 1 and field.types[1] == V.ARRAY:
            metadata[key] = nested_array(field)
        elif field.types[0] == V.ARRAY and len(field.types) == 1:
            element_type = V(int(field.parts[3][0]))  # an empty array: the reader records no sub type
            metadata[key] = {"type": "array", "elementType": element_type.name.lower(), "value": []}
        else:
            metadata[key] = typed(field.types[0], field.contents(), field.types[1:])
    tensors = []
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(-1).astype(np.float32)
        tensors.append({
            "name": tensor.name, "type": tensor.tensor_type.name,
            "dimensions": [int(d) for d in tensor.shape],
            "offset": int(tensor.data_offset - reader.data_offset),
            "dequantized": [float(v) for v in values],
        })
    result = {"metadataKeysInOrder": keys, "metadata": metadata, "tensors": tensors}
    (FIXTURES / "swift_written.python.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"gguf read {len(keys)} keys and {len(tensors)} tensors from swift_written.gguf")


if __name__ == "__main__":
    main()
