#!/usr/bin/env python3
"""The bad-input corpus for the GGUF reader: small malformed files, each of which must fail with
one specific error (never a crash, a hang or a huge allocation).

Writes Tests/GGUFTests/Fixtures/bad/*.gguf and bad/manifest.json, a table of
{file, error, subject} rows: `error` names the GGUFError case the Swift reader must throw and
`subject` the metadata key or tensor name the message must contain ("" when there is none).
The files are built byte by byte here (not with the gguf package, which refuses to write them).

Run from the package root:  python3 scripts/make_bad_gguf.py
"""
import json
import pathlib
import struct

BAD = pathlib.Path(__file__).resolve().parents[1] / "Tests/GGUFTests/Fixtures/bad"

STRING, ARRAY, UINT32, INT32 = 8, 9, 4, 5
F32, Q8_0, Q4_K = 0, 8, 12
HUGE = 2**60


def gguf_string(text):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def kv(key, vtype, payload):
    """One metadata entry: key, u32 type, already-encoded value."""
    return gguf_string(key) + struct.pack("<I", vtype) + payload


def tensor_info(name, dims, ggml_type, offset):
    return (gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IQ", ggml_type, offset))


def gguf_file(kvs=(), tensors=(), data=b"", version=3, magic=b"GGUF", tensor_count=None, kv_count=None,
              alignment=32):
    """A GGUF file from encoded kvs and tensor infos; `data` is placed at the aligned data section."""
    header = magic + struct.pack("<IQQ", version,
                                 len(tensors) if tensor_count is None else tensor_count,
                                 len(kvs) if kv_count is None else kv_count)
    body = header + b"".join(kvs) + b"".join(tensors)
    body += b"\0" * (-len(body) % alignment)
    return body + data


ARCH = kv("general.architecture", STRING, gguf_string("test"))
ONE_F32 = [tensor_info("weight", [8], F32, 0)]
ONE_F32_DATA = struct.pack("<8f", *range(8))
GOOD = gguf_file([ARCH], ONE_F32, ONE_F32_DATA)


def cases():
    """(file name, bytes, expected error case, subject)."""
    yield "empty.gguf", b"", "truncated", ""
    yield "wrong_magic.gguf", b"GGML" + GOOD[4:], "badMagic", ""
    yield "unsupported_version.gguf", gguf_file([ARCH], version=1), "unsupportedVersion", ""
    yield "big_endian.gguf", b"GGUF" + struct.pack(">I", 3) + GOOD[8:], "unsupportedVersion", ""
    yield "truncated_header.gguf", GOOD[:12], "truncated", ""
    # Cut inside the string "test" of general.architecture: its length is right, its bytes are missing.
    yield "truncated_metadata.gguf", GOOD[:24 + len(gguf_string("general.architecture")) + 4 + 8 + 2], \
        "truncated", "general.architecture"
    yield "truncated_tensor_data.gguf", GOOD[:-4], "tensorOutOfBounds", "weight"
    yield "huge_tensor_count.gguf", gguf_file([ARCH], tensor_count=HUGE), "countExceedsFile", ""
    yield "huge_metadata_count.gguf", gguf_file([ARCH], kv_count=HUGE), "countExceedsFile", ""
    yield "huge_key_length.gguf", gguf_file([struct.pack("<Q", HUGE) + b"abc"], kv_count=1), "countExceedsFile", ""
    yield "huge_string_value.gguf", gguf_file([kv("general.name", STRING, struct.pack("<Q", HUGE) + b"x")]), \
        "countExceedsFile", "general.name"
    yield "huge_array_length.gguf", gguf_file([kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, HUGE))]), \
        "countExceedsFile", "tokenizer.ggml.tokens"
    yield "huge_tensor_name.gguf", gguf_file([ARCH], [struct.pack("<Q", HUGE) + b"w"]), "countExceedsFile", ""
    yield "invalid_value_type.gguf", gguf_file([kv("test.bad", 13, b"\0" * 8)]), "invalidValueType", "test.bad"
    yield "invalid_array_element_type.gguf", \
        gguf_file([kv("test.bad_array", ARRAY, struct.pack("<IQ", 99, 1) + b"\0" * 8)]), "invalidValueType", "test.bad_array"
    nested = struct.pack("<IQ", ARRAY, 1) * 20 + struct.pack("<IQ", INT32, 0)
    yield "deeply_nested_array.gguf", gguf_file([kv("test.nested", ARRAY, nested)]), "arrayNestingTooDeep", "test.nested"
    yield "invalid_utf8_key.gguf", gguf_file([kv(b"bad\xff\xfekey", UINT32, struct.pack("<I", 1))]), "invalidUTF8", ""
    yield "duplicate_key.gguf", gguf_file([ARCH, ARCH]), "duplicateKey", "general.architecture"
    yield "invalid_alignment.gguf", gguf_file([kv("general.alignment", UINT32, struct.pack("<I", 24))]), \
        "invalidAlignment", ""
    yield "duplicate_tensor.gguf", gguf_file([ARCH], [tensor_info("weight", [8], F32, 0),
                                                      tensor_info("weight", [8], F32, 32)], ONE_F32_DATA * 2), \
        "duplicateTensor", "weight"
    yield "too_many_dimensions.gguf", gguf_file([ARCH], [tensor_info("weight", [1, 1, 1, 1, 8], F32, 0)], ONE_F32_DATA), \
        "tooManyDimensions", "weight"
    yield "overflowing_dimensions.gguf", gguf_file([ARCH], [tensor_info("weight", [2**40, 2**40], F32, 0)], ONE_F32_DATA), \
        "invalidDimensions", "weight"
    yield "partial_block.gguf", gguf_file([ARCH], [tensor_info("weight", [40], Q8_0, 0)], b"\0" * 64), \
        "invalidDimensions", "weight"
    yield "unknown_type.gguf", gguf_file([ARCH], [tensor_info("weight", [8], 99, 0)], ONE_F32_DATA), \
        "unsupportedTensorType", "weight"
    yield "k_quant_type.gguf", gguf_file([ARCH], [tensor_info("blk.0.ffn_down.weight", [256], Q4_K, 0)], b"\0" * 144), \
        "unsupportedTensorType", "blk.0.ffn_down.weight"
    yield "misaligned_offset.gguf", gguf_file([ARCH], [tensor_info("weight", [8], F32, 4)], ONE_F32_DATA + b"\0" * 4), \
        "misalignedTensor", "weight"
    yield "offset_past_end.gguf", gguf_file([ARCH], [tensor_info("weight", [8], F32, 4096)], ONE_F32_DATA), \
        "tensorOutOfBounds", "weight"
    yield "huge_offset.gguf", gguf_file([ARCH], [tensor_info("weight", [8], F32, 2**63)], ONE_F32_DATA), \
        "tensorOutOfBounds", "weight"


def main():
    BAD.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, data, error, subject in cases():
        (BAD / name).write_bytes(data)
        manifest.append({"file": name, "error": error, "subject": subject})
    (BAD / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in BAD.iterdir())
    print(f"{len(manifest)} bad files in {BAD}, {total} bytes in all")


if __name__ == "__main__":
    main()
