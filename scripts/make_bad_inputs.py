#!/usr/bin/env python3
"""The command-line bad-input corpus: cases that each must make `kdgpu` fail cleanly.

Writes Tests/BadInputs/cases.json and the small input files the cases read, under
Tests/BadInputs/files/ (corpora, YAML configs, GGUF and safetensors files; all checked in,
together well under 1 MB). The output is deterministic: running it again rewrites the same bytes.
Tests/CLITests/BadInputCorpusTests.swift (run by `make test`) runs every case.

Run from the package root:  python3 scripts/make_bad_inputs.py

A case is an object with
  name       unique, kebab-case
  category   corpus, yaml, flags, env, gguf, safetensors, checkpoint, cache or fault
  args       kdgpu's arguments; the runner substitutes the placeholders
               {files}  the absolute path of Tests/BadInputs/files
               {tiny}   Tests/ModelTests/Fixtures/tiny-llama-q8_0.gguf (2 blocks, context 64)
               {work}   a fresh empty folder for this case (also the working directory)
               {fifo}   {work}/input.fifo, a named pipe nobody writes to
               {tmpfs}  {work}/tmpfs, a small tmpfs the runner mounts (root only; else skipped)
  env        optional extra environment variables (placeholders substituted)
  cwd        optional working directory (default {work})
  tmpfs_kb   optional size of the tmpfs (default 2048)
  setup      optional steps run before the case, in order (see SETUP below)
  expect     substrings stderr must contain (placeholders substituted); an item that is a list
             means "one of these"
  forbid     optional substrings stderr must not contain, beside the runner's defaults ("Error Domain=",
             "NSCocoaErrorDomain", "9223372036854775807", "Fatal error", "Code=", "Swift/", "Optional(")
  after_work optional; true for failures after progress output: only the block from the last
             line starting with "kdgpu: " to the end is checked (it must be 1-3 lines)
  no_output  optional paths (relative to {work}) that must not exist afterwards
  no_nan     optional safetensors files (relative to {work}) whose F32 data, when the file exists
             afterwards, must be finite
  note       optional: why the case exists or what the right behaviour is

A case passes when kdgpu exits non-zero on its own (not by a signal, within the timeout), stderr
(or its last block, with after_work) is 1-3 non-empty lines, every expect item is present, no
forbidden substring is, and nothing half-written appeared in {work}: no new entry whose name
starts with ".partial-" or contains ".tmp", and none of no_output.

SETUP steps (objects with "step" and parameters; paths relative to {work}):
  train_checkpoint  a small valid training into {work}/run (checkpoint at step 2); "args" adds flags
  teacher_cache     a small valid teacher cache (topk:4, seq_len 16, 8 windows a shard) into {work}/tc
  kill_after_step   the same training with KDGPU_KILL_AFTER_STEP set to "after"; it must die by SIGKILL
  write             write "text", or copy "from" (placeholders substituted), to "path"
  mkdir             create the folder "path"
  remove            remove the file, link or folder "path"
  symlink           create the symbolic link "path" pointing at "target"
  rename            move "path" to "to"
  truncate          cut the file "path" to "size" bytes
  json_set          set "key" (dotted path) of the JSON file "path" to "value"; a null value removes it
  header_set        set "field" of tensor "tensor" in the safetensors header of "path" to "value"
                    (the header is rewritten; the data section stays as it is)
  nan_tensor        overwrite the F32 data of tensor "tensor" in the safetensors file "path" with NaN
  fill_tmpfs        fill {tmpfs} with a file "tmpfs/filler" until "free_kb" KiB are left
"""
import json
import pathlib
import random
import shutil
import struct

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "Tests/BadInputs"
FILES = OUT / "files"
TINY = ROOT / "Tests/ModelTests/Fixtures/tiny-llama-q8_0.gguf"

DEFAULT_TRAIN = {
    "--teacher": "{tiny}", "--data": "{files}/corpus/words.txt", "--student-layers": "0", "--steps": "2",
    "--batch-size": "2", "--seq-len": "16", "--device": "cpu", "--export-gguf": "none", "--out": "{work}/run",
}
# The YAML key each default flag sets: a YAML case drops the flag of every key its file sets.
FLAG_KEY = {flag: flag[2:].replace("-", "_") for flag in DEFAULT_TRAIN}


def train(*extra, drop=(), **overrides):
    """`kdgpu train` with the fast defaults, flags in `overrides` (--seq_len= style keys) replaced."""
    flags = dict(DEFAULT_TRAIN)
    for flag in drop:
        flags.pop(flag, None)
    for key, value in overrides.items():
        flags["--" + key.replace("_", "-")] = value
    args = ["train"]
    for flag, value in flags.items():
        args += [flag, value]
    return args + list(extra)


# ---------------------------------------------------------------------------------------------
# Files

def words(count, seed):
    rng = random.Random(seed)
    vocabulary = ("the of and to in that is was he for it with as his on be at by had are but from or have an "
                  "they which").split()
    return " ".join(rng.choice(vocabulary) for _ in range(count))


def write(path, data):
    path = FILES / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def corpus_files():
    write("corpus/words.txt", words(600, 42) + "\n")  # the valid corpus, ~2,000 tokens
    write("corpus/empty.txt", b"")
    write("corpus/whitespace.txt", "  \n\t\n   \n\n")
    write("corpus/short.txt", "hello\n")
    write("corpus/one-token.txt", "a")
    write("corpus/few-windows.txt", words(12, 7) + "\n")  # a few windows of 16: too few for batches of 2
    write("corpus/binary.txt", bytes(range(128, 256)) * 4)
    write("corpus/latin1.txt", "caf\xe9 na\xefve ".encode("latin-1") * 40)
    write("corpus/no-text/notes.csv", "a,b,c\n1,2,3\n")
    write("corpus/no-text/image.png", b"\x89PNG\r\n\x1a\n" + bytes(32))
    write("corpus/empty-docs/a.txt", b"")
    write("corpus/empty-docs/b.md", b"")
    write("corpus/mixed/good.txt", words(300, 1) + "\n")
    write("corpus/mixed/bad.md", b"ok text then \xff\xfe garbage\n")
    good = json.dumps({"text": words(80, 3)})
    write("corpus/bad-line.jsonl", good + "\n" + '{"text": "unterminated\n' + good + "\n")
    write("corpus/content-only.jsonl", good + "\n" + json.dumps({"content": words(80, 4)}) + "\n")
    write("corpus/numbers.jsonl", good + "\n" + json.dumps({"text": 42}) + "\n")
    write("corpus/array-line.jsonl", "[1, 2, 3]\n" + good + "\n")
    write("corpus/empty.jsonl", b"")
    write("corpus/invalid-utf8.jsonl", good.encode() + b"\n" + b'{"text": "\xc3\x28 bad"}\n')


YAML = {}  # case name -> (file name, text)


def yaml_files():
    for name, text in YAML.values():
        write("yaml/" + name, text)
    write("yaml/latin1.yaml", b"steps: 2\ndata: \"\xff\xfe\"\n")


# --- GGUF, byte by byte (see scripts/make_bad_gguf.py) ---------------------------------------

UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = range(10)
F32, F16 = 0, 1


def gguf_string(text):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def encode_value(vtype, value):
    if vtype == STRING:
        return gguf_string(value)
    if vtype == ARRAY:
        element_type, items = value
        return struct.pack("<IQ", element_type, len(items)) + b"".join(encode_value(element_type, v) for v in items)
    return struct.pack({UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
                        FLOAT32: "<f", BOOL: "<?"}[vtype], value)


def read_tiny_tokenizer():
    """The tokenizer.* entries of the tiny fixture, as (key, type, value) with arrays as (type, items)."""
    data = TINY.read_bytes()
    offset = 24
    _, _, kv_count = struct.unpack_from("<IQQ", data, 4)

    def string():
        nonlocal offset
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 8 + length
        return data[offset - length:offset].decode("utf-8")

    def value(vtype):
        nonlocal offset
        if vtype == STRING:
            return string()
        if vtype == ARRAY:
            element_type, count = struct.unpack_from("<IQ", data, offset)
            offset += 12
            return element_type, [value(element_type) for _ in range(count)]
        fmt = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i", FLOAT32: "<f",
               BOOL: "<?", 10: "<Q", 11: "<q", 12: "<d"}[vtype]
        (result,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return result

    entries = []
    for _ in range(kv_count):
        key = string()
        (vtype,) = struct.unpack_from("<I", data, offset)
        offset += 4
        item = value(vtype)
        if key.startswith("tokenizer."):
            entries.append((key, vtype, item))
    return entries


TOKENIZER = read_tiny_tokenizer()
VOCAB = len(dict((k, v) for k, _, v in TOKENIZER)["tokenizer.ggml.tokens"][1])
WIDTH, HEADS, KV_HEADS, FEED_FORWARD, CONTEXT = 16, 2, 1, 16, 64


def mini_llama(metadata=None, drop_keys=(), tokenizer=None, tensors=None, drop_tensors=(), data_cut=0,
               offset_shift=None, nan_tensor=None):
    """A valid 1-block llama (width 16, tied embeddings, F16 matrices, the tiny fixture's tokenizer),
    then broken as asked: `metadata` overrides or adds (key, type, value) entries by key."""
    head_dim = WIDTH // HEADS
    entries = [
        ("general.architecture", STRING, "llama"),
        ("llama.block_count", UINT32, 1),
        ("llama.context_length", UINT32, CONTEXT),
        ("llama.embedding_length", UINT32, WIDTH),
        ("llama.feed_forward_length", UINT32, FEED_FORWARD),
        ("llama.attention.head_count", UINT32, HEADS),
        ("llama.attention.head_count_kv", UINT32, KV_HEADS),
        ("llama.rope.freq_base", FLOAT32, 10000.0),
        ("llama.rope.dimension_count", UINT32, head_dim),
        ("llama.attention.layer_norm_rms_epsilon", FLOAT32, 1e-5),
        ("llama.vocab_size", UINT32, VOCAB),
    ] + list(TOKENIZER if tokenizer is None else tokenizer)
    for key, vtype, value in (metadata or []):
        entries = [e for e in entries if e[0] != key] + [(key, vtype, value)]
    entries = [e for e in entries if e[0] not in drop_keys]
    # GGUF dims: ne0 (the row length) first.
    shapes = [("token_embd.weight", [WIDTH, VOCAB], F16), ("output_norm.weight", [WIDTH], F32),
              ("blk.0.attn_norm.weight", [WIDTH], F32), ("blk.0.attn_q.weight", [WIDTH, HEADS * head_dim], F16),
              ("blk.0.attn_k.weight", [WIDTH, KV_HEADS * head_dim], F16),
              ("blk.0.attn_v.weight", [WIDTH, KV_HEADS * head_dim], F16),
              ("blk.0.attn_output.weight", [HEADS * head_dim, WIDTH], F16), ("blk.0.ffn_norm.weight", [WIDTH], F32),
              ("blk.0.ffn_gate.weight", [WIDTH, FEED_FORWARD], F16), ("blk.0.ffn_up.weight", [WIDTH, FEED_FORWARD], F16),
              ("blk.0.ffn_down.weight", [FEED_FORWARD, WIDTH], F16)]
    for name, dims in (tensors or {}).items():
        shapes = [(n, dims if n == name else d, t) for n, d, t in shapes]
    shapes = [s for s in shapes if s[0] not in drop_tensors]
    rng = random.Random(5)
    infos, blobs, offset = [], [], 0
    for name, dims, ggml_type in shapes:
        count = 1
        for d in dims:
            count *= d
        if name.endswith("norm.weight"):
            values = [1.0] * count
        else:
            values = [rng.uniform(-0.2, 0.2) for _ in range(count)]
        if name == nan_tensor:
            values = [float("nan")] * count
        blob = struct.pack("<%d%s" % (count, "f" if ggml_type == F32 else "e"), *values)
        blob += b"\0" * (-len(blob) % 32)
        tensor_offset = offset if name != (offset_shift or (None,))[0] else offset + offset_shift[1]
        infos.append(gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
                     + struct.pack("<IQ", ggml_type, tensor_offset))
        blobs.append(blob)
        offset += len(blob)
    body = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(entries))
    body += b"".join(gguf_string(k) + struct.pack("<I", t) + encode_value(t, v) for k, t, v in entries)
    body += b"".join(infos)
    body += b"\0" * (-len(body) % 32)
    data = body + b"".join(blobs)
    return data[:len(data) - data_cut] if data_cut else data


def tokenizer_with(key, vtype, value):
    return [(k, vtype, value) if k == key else (k, t, v) for k, t, v in TOKENIZER]


def gguf_files():
    good = mini_llama()
    write("gguf/truncated-header.gguf", good[:12])
    write("gguf/bad-magic.gguf", b"GGML" + good[4:])
    write("gguf/zero-heads.gguf", mini_llama([("llama.attention.head_count", UINT32, 0)]))
    write("gguf/heads-not-dividing-width.gguf", mini_llama([("llama.attention.head_count", UINT32, 3)]))
    write("gguf/kv-heads-not-dividing.gguf", mini_llama([("llama.attention.head_count_kv", UINT32, 3)]))
    write("gguf/zero-kv-heads.gguf", mini_llama([("llama.attention.head_count_kv", UINT32, 0)]))
    write("gguf/absurd-width.gguf", mini_llama([("llama.embedding_length", UINT32, 2**31)]))
    write("gguf/zero-blocks.gguf", mini_llama([("llama.block_count", UINT32, 0)]))
    write("gguf/zero-context.gguf", mini_llama([("llama.context_length", UINT32, 0)]))
    write("gguf/not-llama.gguf", mini_llama([("general.architecture", STRING, "mamba")]))
    write("gguf/rope-past-head.gguf", mini_llama([("llama.rope.dimension_count", UINT32, 64)]))
    write("gguf/negative-epsilon.gguf", mini_llama([("llama.attention.layer_norm_rms_epsilon", FLOAT32, -1.0)]))
    write("gguf/zero-rope-base.gguf", mini_llama([("llama.rope.freq_base", FLOAT32, 0.0)]))
    write("gguf/vocab-key-mismatch.gguf", mini_llama([("llama.vocab_size", UINT32, 300)]))
    write("gguf/missing-head-count.gguf", mini_llama(drop_keys=["llama.attention.head_count"]))
    write("gguf/no-tokenizer.gguf", mini_llama(tokenizer=[]))
    types = dict((k, v) for k, _, v in TOKENIZER)["tokenizer.ggml.token_type"]
    write("gguf/token-type-mismatch.gguf",
          mini_llama(tokenizer=tokenizer_with("tokenizer.ggml.token_type", ARRAY, (types[0], types[1][:-1]))))
    write("gguf/eos-out-of-range.gguf", mini_llama(tokenizer=tokenizer_with("tokenizer.ggml.eos_token_id", UINT32, 99999)))
    write("gguf/bad-merge.gguf", mini_llama(tokenizer=tokenizer_with("tokenizer.ggml.merges", ARRAY, (STRING, ["Ġ t", "nospace"]))))
    write("gguf/tensor-past-end.gguf", mini_llama(data_cut=200))
    write("gguf/missing-tensor.gguf", mini_llama(drop_tensors=["blk.0.attn_k.weight"]))
    write("gguf/wrong-shape-tensor.gguf", mini_llama(tensors={"blk.0.ffn_up.weight": [WIDTH, FEED_FORWARD * 2]}))
    write("gguf/vocab-mismatch.gguf", mini_llama(tensors={"token_embd.weight": [WIDTH, VOCAB - 4]}))
    write("gguf/nan-weights.gguf", mini_llama(nan_tensor="blk.0.attn_q.weight"))


# --- safetensors -------------------------------------------------------------------------------

def safetensors_files():
    # Header length 2^63: far more than the file.
    write("safetensors/huge-header-length.safetensors", struct.pack("<Q", 2**63) + b"{}")
    body = b"this is not json at all"
    write("safetensors/header-not-json.safetensors", struct.pack("<Q", len(body)) + body + bytes(16))
    write("safetensors/only-4-bytes.safetensors", b"\x10\0\0\0")
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "F32", "shape": [260, 64], "data_offsets": [0, 66560]}})
    write("safetensors/data-missing.safetensors", struct.pack("<Q", len(header)) + header.encode() + bytes(64))
    write("checkpoint/not-json.json", "{\"hidden_size\": 64, this is not json\n")
    write("checkpoint/tokenizer-garbage.json", "[1, 2, 3]\n")
    write("kernels-empty/README.md", "An empty kernel folder: KDGPU_KERNEL_DIR pointing here has no Kernels/*.cl files.\n")


# ---------------------------------------------------------------------------------------------
# Cases

CASES = []


def case(name, category, args, expect, **extra):
    assert all(c.islower() or c.isdigit() or c == "-" for c in name), name
    entry = {"name": name, "category": category, "args": args, "expect": expect}
    entry.update({k: v for k, v in extra.items() if v is not None})
    CASES.append(entry)


def yaml_case(name, text, expect, extra_args=(), drop=(), **extra):
    """A train run with --config {files}/yaml/NAME.yaml; flags for the keys the file sets are dropped."""
    file_name = "config-%02d.yaml" % (len(YAML) + 1)  # neutral: a key in the name would satisfy `expect`
    YAML[name] = (file_name, text)
    expect = [file_name if e == "FILE" else e for e in expect]
    keys = {line.split(":", 1)[0].strip() for line in text.splitlines() if ":" in line and not line.startswith(" ")}
    dropped = [flag for flag, key in FLAG_KEY.items() if key in keys] + list(drop)
    if "student_shape" in keys:
        dropped.append("--student-layers")
    case(name, "yaml", train("--config", "{files}/yaml/" + file_name, *extra_args, drop=dropped), expect, **extra)


TRAIN_CHECKPOINT = {"step": "train_checkpoint"}
CKPT = "run/checkpoint"


def corpus_cases():
    c = "corpus"
    case("corpus-empty-file", c, train(data="{files}/corpus/empty.txt"), ["empty.txt"])
    case("corpus-whitespace-only", c, train(data="{files}/corpus/whitespace.txt"), ["whitespace.txt"],
         note="a few whitespace tokens are no text to train on; the message must name the file")
    case("corpus-too-short-for-one-window", c, train(data="{files}/corpus/short.txt"), ["short.txt", "16"],
         note="fewer tokens than one window of --seq-len: name the corpus and the window length")
    case("corpus-too-few-windows-for-batch", c, train(data="{files}/corpus/few-windows.txt", batch_size="8"),
         ["few-windows.txt", "8"], note="the batch size cannot be filled from the corpus's training windows")
    case("corpus-binary-garbage", c, train(data="{files}/corpus/binary.txt"), ["binary.txt", "UTF-8"])
    case("corpus-latin1", c, train(data="{files}/corpus/latin1.txt"), ["latin1.txt", "UTF-8"])
    case("corpus-folder-without-text-files", c, train(data="{files}/corpus/no-text"), ["no-text"])
    case("corpus-folder-of-empty-documents", c, train(data="{files}/corpus/empty-docs"), ["empty-docs"])
    case("corpus-folder-with-one-bad-file", c, train(data="{files}/corpus/mixed"), ["bad.md", "UTF-8"])
    case("corpus-jsonl-unterminated-line", c, train(data="{files}/corpus/bad-line.jsonl"), ["bad-line.jsonl:2"])
    case("corpus-jsonl-missing-text-field", c, train(data="{files}/corpus/content-only.jsonl"),
         ["content-only.jsonl:2", "text"])
    case("corpus-jsonl-number-text", c, train(data="{files}/corpus/numbers.jsonl"), ["numbers.jsonl:2", "text"])
    case("corpus-jsonl-array-line", c, train(data="{files}/corpus/array-line.jsonl"), ["array-line.jsonl:1"])
    case("corpus-jsonl-empty", c, train(data="{files}/corpus/empty.jsonl"), ["empty.jsonl"])
    case("corpus-jsonl-invalid-utf8", c, train(data="{files}/corpus/invalid-utf8.jsonl"), ["invalid-utf8.jsonl"])
    case("corpus-nonexistent", c, train(data="{files}/corpus/does-not-exist.txt"), ["does-not-exist.txt"])
    case("corpus-fifo", c, train(data="{fifo}"), ["input.fifo"],
         note="a named pipe nobody writes to: refuse it (not a regular file or folder) instead of blocking")
    case("corpus-dev-zero", c, train(data="/dev/zero"), ["/dev/zero"],
         note="a character device: refuse it instead of reading forever")
    case("corpus-folder-with-symlink-loop", c, train(data="{work}/loop"), ["loop"],
         setup=[{"step": "mkdir", "path": "loop"}, {"step": "write", "path": "loop/notes.csv", "text": "a,b\n"},
                {"step": "symlink", "path": "loop/again", "target": "."}],
         note="a folder whose only way down is a link to itself: no endless walk, just 'no text files'")
    case("corpus-eval-dev-zero", c, ["eval", "--model", "{tiny}", "--data", "/dev/zero", "--seq-len", "16", "--device", "cpu"],
         ["/dev/zero"], note="must refuse the device, not read it until memory runs out")
    case("corpus-eval-fifo", c, ["eval", "--model", "{tiny}", "--data", "{fifo}", "--seq-len", "16", "--device", "cpu"],
         ["input.fifo"], note="must not block on a pipe nobody writes to")
    case("corpus-eval-folder-instead-of-file", c,
         ["eval", "--model", "{tiny}", "--data", "{files}/corpus/no-text", "--seq-len", "16", "--device", "cpu"],
         ["no-text"], note="eval reads one text file; a folder must be refused by name")
    case("corpus-eval-too-short", c,
         ["eval", "--model", "{tiny}", "--data", "{files}/corpus/one-token.txt", "--seq-len", "16", "--device", "cpu"],
         ["one-token.txt"], note="one token: nothing to predict (a window shorter than --seq-len is fine for eval)")
    case("corpus-eval-binary", c,
         ["eval", "--model", "{tiny}", "--data", "{files}/corpus/binary.txt", "--seq-len", "16", "--device", "cpu"],
         ["binary.txt"])


def yaml_cases():
    y = yaml_case
    y("yaml-duplicate-key", "steps: 2\nlr: 0.001\nsteps: 3\n", ["FILE", "steps"])
    y("yaml-unknown-key", "stepz: 2\n", ["FILE", "stepz"])
    y("yaml-steps-not-a-number", "steps: many\n", ["FILE", "steps"])
    y("yaml-steps-fraction", "steps: 2.5\n", ["FILE", "steps"])
    y("yaml-bool-not-a-bool", "lens_final_norm: maybe\n", ["FILE", "lens_final_norm"])
    y("yaml-list-value", "lr: [0.1, 0.2]\n", ["FILE", "lr"])
    y("yaml-mapping-value", "divergence:\n  name: fkl\n", ["FILE", "divergence"])
    y("yaml-top-level-list", "- steps: 2\n- lr: 0.001\n", ["FILE"])
    y("yaml-top-level-scalar", "just some words\n", ["FILE"])
    y("yaml-invalid-syntax", "steps: 2\nlr: [0.001,\nbeta1: 0.9\n", ["FILE"])
    y("yaml-bad-indentation", "steps: 2\n  lr: 0.001\n", ["FILE"])
    y("yaml-empty-file", "", ["FILE"])
    y("yaml-only-comments", "# nothing here\n", ["FILE"])
    y("yaml-beta1-one", "beta1: 1.0\n", ["beta1", "1"])
    y("yaml-beta1-negative", "beta1: -0.1\n", ["beta1", "-0.1"])
    y("yaml-beta2-above-one", "beta2: 1.5\n", ["beta2", "1.5"])
    y("yaml-grad-clip-negative", "grad_clip: -1\n", ["grad_clip", "-1"])
    y("yaml-weight-decay-negative", "weight_decay: -1\n", ["weight_decay", "-1"])
    y("yaml-weight-decay-nan", "weight_decay: .nan\n", ["weight_decay", ["nan", "NaN"]])
    y("yaml-lr-zero", "lr: 0\n", ["lr", "0"])
    y("yaml-lr-infinite", "lr: .inf\n", ["lr", ["inf", "Inf"]])
    y("yaml-lr-negative", "lr: -1\n", ["lr", "-1"])
    y("yaml-temperature-zero", "temperature: 0\n", ["temperature", "0"])
    y("yaml-temperature-negative", "temperature: -2\n", ["temperature", "-2"])
    y("yaml-temperature-nan", "temperature: .nan\n", ["temperature", ["nan", "NaN"]])
    y("yaml-divergence-jsd-not-a-number", "divergence: jsd(abc)\n", ["divergence", "jsd(abc)"])
    y("yaml-divergence-jsd-out-of-range", "divergence: jsd(1.5)\n", ["divergence", "1.5"])
    y("yaml-divergence-sfkl-negative", "divergence: sfkl(-1)\n", ["divergence", "-1"])
    y("yaml-divergence-unknown", "divergence: kl2\n", ["divergence", "kl2"])
    y("yaml-lens-divergence-taid", "lens_weight: 0.5\nlens_divergence: taid\n", ["lens_divergence", "taid"])
    y("yaml-soft-weight-negative", "soft_weight: -1\n", ["soft_weight", "-1"])
    y("yaml-both-weights-zero", "soft_weight: 0\nhard_weight: 0\n", ["soft_weight", "hard_weight"])
    y("yaml-lens-weight-negative", "lens_weight: -1\n", ["lens_weight", "-1"])
    y("yaml-lens-layers-past-student", "lens_weight: 0.5\nlens_layers: \"9:0\"\n", ["lens_layers", "9:0"],
      note="the student has 1 block (student_layers 0): block 9 does not exist; report it before any work")
    y("yaml-hint-layers-past-teacher", "hint_weight: 0.5\nhint_layers: \"0:99\"\n", ["hint_layers", "0:99"],
      note="the tiny teacher has 2 blocks")
    y("yaml-attn-align-layers-garbage", "attn_align_weight: 0.5\nattn_align_layers: garbage\n",
      ["attn_align_layers", "garbage"])
    y("yaml-student-layers-past-teacher", "student_layers: \"0,5\"\n", ["student_layers", "5"],
      note="the tiny teacher has 2 blocks; must be reported before any work (whole stderr 1-3 lines)")
    y("yaml-student-layers-decreasing", "student_layers: \"1,0\"\n", ["student_layers", "1,0"])
    y("yaml-student-layers-every-zero", "student_layers: \"every:0\"\n", ["student_layers", "every:0"])
    y("yaml-student-shape-zero-heads", "student_shape: blocks=1,width=32,heads=0,kv_heads=1,feed_forward=64\n",
      ["student_shape", "heads"])
    y("yaml-student-shape-width-not-divisible", "student_shape: blocks=1,width=30,heads=4,kv_heads=2,feed_forward=64\n",
      ["student_shape", "30"])
    y("yaml-student-shape-kv-heads-not-dividing", "student_shape: blocks=1,width=32,heads=4,kv_heads=3,feed_forward=64\n",
      ["student_shape", "kv_heads"])
    y("yaml-student-shape-absurd-width",
      "student_shape: blocks=1,width=100000000000,heads=4,kv_heads=2,feed_forward=64\n",
      ["student_shape", "100000000000"], note="must fail at once (no allocation attempt), naming the shape")
    y("yaml-student-shape-and-layers", "student_shape: blocks=1,width=32,heads=2,kv_heads=1,feed_forward=64\n"
      "student_layers: \"0\"\n", ["student_shape", "student_layers"])
    y("yaml-seq-len-past-teacher-context", "seq_len: 100\n", ["seq_len", "100", "64"])
    y("yaml-seq-len-one", "seq_len: 1\n", ["seq_len", "1"])
    y("yaml-validation-fraction-above-one", "validation_fraction: 1.5\n", ["validation_fraction", "1.5"])
    y("yaml-eval-windows-zero", "eval_windows: 0\n", ["eval_windows", "0"])
    y("yaml-export-gguf-q2", "export_gguf: q2\n", ["export_gguf", "q2"])
    y("yaml-teacher-precision-fp8", "teacher_precision: fp8\n", ["teacher_precision", "fp8"])
    y("yaml-precision-fp16", "precision: fp16\n", ["precision", "fp16"],
      note="mixed precision trains in bf16; f16 is storage only")
    y("yaml-compute-rounding-up", "precision: bf16\ncompute_rounding: up\n", ["compute_rounding", "up"])
    y("yaml-temperature-schedule-bogus", "temperature_schedule: bogus\n", ["temperature_schedule", "bogus"])
    y("yaml-hint-loss-l3", "hint_weight: 0.5\nhint_loss: l3\n", ["hint_loss", "l3"])
    y("yaml-gradient-accumulation-zero", "gradient_accumulation: 0\n", ["gradient_accumulation", "0"])
    y("yaml-warmup-steps-negative", "warmup_steps: -1\n", ["warmup_steps", "-1"])
    y("yaml-min-lr-fraction-two", "min_lr_fraction: 2\n", ["min_lr_fraction", "2"])
    y("yaml-batch-size-zero", "batch_size: 0\n", ["batch_size", "0"])
    y("yaml-teacher-nonexistent", "teacher: /nonexistent/teacher-from-yaml.gguf\n", ["teacher-from-yaml.gguf"])
    y("yaml-data-nonexistent", "data: /nonexistent/corpus-from-yaml.txt\n", ["corpus-from-yaml.txt"])
    y("yaml-teacher-weights-dense", "teacher_weights: dense\n", ["teacher_weights", "dense"])
    case("yaml-invalid-utf8", "yaml", train("--config", "{files}/yaml/latin1.yaml", drop=["--steps", "--data"]),
         ["latin1.yaml"])
    case("yaml-config-is-fifo", "yaml", train("--config", "{fifo}"), ["input.fifo"],
         note="a named pipe nobody writes to: refuse it instead of blocking")
    case("yaml-config-is-folder", "yaml", train("--config", "{files}/yaml"), ["{files}/yaml"])
    case("yaml-config-nonexistent", "yaml", train("--config", "{files}/yaml/missing.yaml"), ["missing.yaml"])
    y("yaml-embedding-lr-scale-negative", "embedding_lr_scale: -0.5\n", ["embedding_lr_scale", "-0.5"])


def flag_cases():
    f = "flags"
    case("flags-steps-negative", f, train(steps="-1"), ["steps", "-1"],
         note="must say -1 is out of range, not that --steps lacks a value")
    case("flags-steps-zero", f, train(steps="0"), ["steps", "0"])
    case("flags-steps-not-a-number", f, train(steps="abc"), ["--steps", "abc"])
    case("flags-batch-size-zero", f, train(batch_size="0"), ["batch", "0"])
    case("flags-lr-negative", f, train(lr="-1"), ["lr", "-1"])
    case("flags-temperature-zero", f, train(temperature="0"), ["temperature", "0"])
    case("flags-divergence-garbage", f, train(divergence="jsd(abc)"), ["divergence", "jsd(abc)"])
    case("flags-validation-fraction-zero", f, train(validation_fraction="0"), ["validation", "0"])
    case("flags-shape-and-layers", f, train(student_shape="blocks=1,width=32,heads=2,kv_heads=1,feed_forward=64"),
         ["student-shape", "student-layers"], note="the key names (student_shape) would do as well; listed by flag")
    case("flags-seq-len-zero", f, train(seq_len="0"), ["seq", "0"])
    case("flags-precision-unknown", f, train(precision="int8"), ["precision", "int8"])
    case("flags-teacher-weights-unknown", f, train(teacher_weights="packed"), ["teacher-weights", "packed"])
    case("flags-embedding-lr-scale-too-large", f, train(embedding_lr_scale="101"), ["embedding", "101"])
    case("flags-exact-label-without-cache", f, train(exact_label="true"), ["exact_label", "--teacher-cache"])
    case("flags-cache-read-ahead-unknown", f, train(cache_read_ahead="sometimes"), ["cache_read_ahead", "sometimes", "auto"])
    case("flags-cache-read-ahead-without-cache", f, train(cache_read_ahead="on"), ["cache_read_ahead", "--teacher-cache"])
    case("flags-overlap-allreduce-unknown", f, train(overlap_allreduce="always"), ["overlap_allreduce", "always", "auto"])
    case("flags-allreduce-dtype-unknown", f, train(allreduce_dtype="fp8"), ["allreduce_dtype", "fp8", "bf16"])
    case("flags-sparsify-teacher-zero-draws", f, train(sparsify_teacher="systematic:0"), ["sparsify_teacher", "systematic:0"])
    case("flags-sparsify-teacher-unknown-form", f, train(sparsify_teacher="dense"), ["sparsify_teacher", "dense", "topk:K"])
    case("flags-sparsify-teacher-topk-too-large", f, train(sparsify_teacher="topk:100000"), ["sparsify_teacher", "topk:100000", "4096"])
    case("flags-sparsify-teacher-prior-tail", f, train(sparsify_teacher="sampled:8", sparse_tail="prior"), ["sparse_tail", "prior", "--teacher-cache"])
    case("flags-sparsify-teacher-drawn-uniform-tail", f, train(sparsify_teacher="sampled:8", sparse_tail="uniform"), ["sparse_tail", "uniform", "sampled:8"])
    case("flags-sparsify-teacher-with-lens", f, train(sparsify_teacher="topk:8", lens_weight="1"), ["sparsify_teacher", "--lens-weight"])
    case("flags-gradient-accumulation-zero", f, train(gradient_accumulation="0"), ["gradient", "0"])
    case("flags-eval-every-negative", f, train(eval_every="-1"), ["eval", "-1"])
    case("flags-checkpoint-every-negative", f, train(checkpoint_every="-1"), ["checkpoint", "-1"])
    case("flags-temperature-above-limit", f, train(temperature="1000"), ["temperature", "1000"])
    case("flags-on-policy-fraction-above-one", f, train(on_policy_fraction="1.5"), ["on_policy_fraction", "1.5"])
    case("flags-rollout-past-window", f, train(on_policy_fraction="0.5", prompt_tokens="8", rollout_tokens="12"),
         ["rollout_tokens", "--seq-len", "16"], note="8 prompt + 12 sampled tokens do not fit the window of 16")
    case("flags-seq-kd-rollout-past-window", f, train(seq_kd="true", rollout_tokens="64"), ["rollout_tokens", "64"])
    case("flags-eval-rollouts-past-window", f, train(eval_rollouts="2", prompt_tokens="20"), ["rollout_tokens", "20"])
    case("flags-rollout-tokens-zero", f, train(on_policy_fraction="1", rollout_tokens="0"), ["rollout_tokens", "0"])
    case("flags-prompt-tokens-zero", f, train(on_policy_fraction="1", prompt_tokens="0"), ["prompt_tokens", "0"])
    case("flags-rollout-temperature-negative", f, train(on_policy_fraction="1", prompt_tokens="4", rollout_tokens="8", rollout_temperature="-1"), ["rollout_temperature", "-1"])
    # --prompts FILE.jsonl (and --chat-template): every problem named with the file and line, before any work.
    sampled = dict(on_policy_fraction="1", prompt_tokens="4", rollout_tokens="8", prompts="{work}/p.jsonl")

    def prompt_file(text):
        return [{"step": "write", "path": "p.jsonl", "text": text}]
    case("flags-prompts-missing-file", f, train(**{**sampled, "prompts": "{work}/none.jsonl"}), ["prompts", "none.jsonl"])
    case("flags-prompts-not-json", f, train(**sampled), ["p.jsonl:2", "JSON"], setup=prompt_file('{"prompt": "the"}\nnot json\n'))
    case("flags-prompts-no-prompt-field", f, train(**sampled), ["p.jsonl:1", "prompt", "messages"], setup=prompt_file('{"text": "the"}\n'))
    case("flags-prompts-empty-prompt", f, train(**sampled), ["p.jsonl:1", "non-empty"], setup=prompt_file('{"prompt": ""}\n'))
    case("flags-prompts-empty-file", f, train(**sampled), ["p.jsonl", "no prompt"], setup=prompt_file("\n\n"))
    case("flags-prompts-message-without-content", f, train(**sampled), ["p.jsonl:1", "content"],
         setup=prompt_file('{"messages": [{"role": "user"}]}\n'))
    case("flags-prompts-messages-without-template", f, train(**sampled), ["p.jsonl:2", "--chat-template"],
         setup=prompt_file('{"prompt": "the"}\n{"messages": [{"role": "user", "content": "the"}]}\n'),
         note="line 1 is fine; a conversation needs the template to become text")
    case("flags-prompts-too-long", f, train(**sampled), ["p.jsonl:1", "tokens", "--seq-len 16", "--rollout-tokens 8"],
         setup=prompt_file('{"prompt": "' + words(20, 3) + '"}\n'), note="a prompt plus its 8 sampled tokens must fit the window of 16")
    case("flags-prompts-without-sampling", f, train(prompts="{work}/p.jsonl"), ["prompts", "--on-policy-fraction"], setup=prompt_file('{"prompt": "the"}\n'))
    case("flags-chat-template-without-prompts", f, train(on_policy_fraction="1", prompt_tokens="4", rollout_tokens="8", chat_template="true"),
         ["chat_template", "--prompts"])
    case("flags-chat-template-not-in-model", f, train(**sampled, chat_template="true"), ["chat_template", "tokenizer.chat_template"],
         setup=prompt_file('{"prompt": "the"}\n'), note="the tiny model's GGUF carries no chat template")
    case("flags-chat-template-not-a-bool", f, train(**sampled, chat_template="maybe"), ["--chat-template", "maybe"], setup=prompt_file('{"prompt": "the"}\n'))
    case("flags-replay-ratio-above-one", f, train(replay_ratio="2"), ["replay_ratio", "2"])
    case("flags-on-policy-schedule-unknown", f, train(on_policy_schedule="linear"), ["on_policy_schedule", "linear"])
    case("flags-on-policy-loss-unknown", f, train(on_policy_loss="reinforce"), ["on_policy_loss", "reinforce"])
    case("flags-seq-kd-not-a-bool", f, train(seq_kd="maybe"), ["--seq-kd", "maybe"])
    case("flags-scale-by-squared-temperature-maybe", f, train(scale_by_squared_temperature="maybe"),
         ["scale", "maybe"])
    case("flags-student-layers-empty", f, train(student_layers=""), ["student"],
         note="an empty --student-layers is not 'the default'")
    case("flags-student-layers-double-comma", f, train(student_layers="0,,1"), ["student", "0,,1"])
    case("flags-student-shape-unknown-key", f,
         train(student_shape="blocks=1,width=32,heads=2,kv_heads=1,feed_forward=64,depth=3", drop=["--student-layers"]),
         ["student", "depth"])
    case("flags-student-shape-negative-blocks", f,
         train(student_shape="blocks=-1,width=32,heads=2,kv_heads=1,feed_forward=64", drop=["--student-layers"]),
         ["student", "-1"])
    case("flags-student-shape-huge-blocks", f,
         train(student_shape="blocks=1000,width=8192,heads=64,kv_heads=8,feed_forward=32768", drop=["--student-layers"]),
         ["student", "blocks=1000"], forbid=["-1457872896"],
         note="~1e12 parameters, far more memory than any machine: refused up front (the count once overflowed to -1457872896)")
    case("flags-teacher-empty", f, train(teacher=""), ["teacher"])
    case("flags-data-empty", f, train(data=""), ["data"])
    case("flags-device-empty", f, train(device=""), ["device"])
    case("flags-out-under-a-file", f, train(out="{work}/taken.txt/run"), ["taken.txt"], forbid=["error 512"],
         setup=[{"step": "write", "path": "taken.txt", "text": "not a folder\n"}])
    case("flags-unknown-flag", f, train("--stepz", "3"), ["--stepz"])
    case("flags-teacher-nonexistent", f, train(teacher="{files}/gguf/nope.gguf"), ["nope.gguf"])
    case("flags-teacher-folder", f, train(teacher="{files}/gguf"), ["{files}/gguf"])
    case("flags-teacher-fifo", f, train(teacher="{fifo}"), ["input.fifo"], note="must not hang")
    case("flags-teacher-dev-zero", f, train(teacher="/dev/zero"), ["/dev/zero"])
    case("flags-teacher-is-text", f, train(teacher="{files}/corpus/words.txt"), ["words.txt"])
    case("flags-device-unknown", f, train(device="nosuchdevice"), ["nosuchdevice"])
    case("flags-device-bad-index", f, train(device="opencl:9:9"), ["opencl:9:9"])
    case("flags-resume-without-checkpoint", f, ["train", "--resume", "{work}", "--steps", "3", "--device", "cpu"],
         ["{work}", "checkpoint"])
    case("flags-resume-nonexistent", f, ["train", "--resume", "{work}/no-such-run", "--steps", "3"], ["no-such-run"])
    case("flags-out-is-a-file", f, train(out="{work}/taken.txt"), ["taken.txt"],
         setup=[{"step": "write", "path": "taken.txt", "text": "not a folder\n"}])
    case("flags-out-read-only", f, train(out="/proc/kdgpu-run"), ["/proc/kdgpu-run"],
         note="/proc refuses new entries even for root")
    case("flags-export-format-onnx", f, ["export", "--checkpoint", "{work}/run", "--format", "onnx", "--out", "{work}/x"],
         ["onnx"], setup=[TRAIN_CHECKPOINT], no_output=["x"])
    case("flags-export-type-q2", f, ["export", "--checkpoint", "{work}/run", "--format", "gguf", "--type", "q2",
                                     "--out", "{work}/x.gguf"], ["q2"], setup=[TRAIN_CHECKPOINT], no_output=["x.gguf"])
    case("flags-export-no-checkpoint", f, ["export", "--checkpoint", "{work}", "--format", "gguf", "--out", "{work}/x.gguf"],
         ["{work}", "checkpoint"], no_output=["x.gguf"])
    case("flags-export-checkpoint-nonexistent", f,
         ["export", "--checkpoint", "{work}/missing-run", "--format", "gguf", "--out", "{work}/x.gguf"], ["missing-run"],
         no_output=["x.gguf"])
    case("flags-export-out-is-folder", f, ["export", "--checkpoint", "{work}/run", "--format", "gguf", "--out", "{work}/run"],
         ["{work}/run"], setup=[TRAIN_CHECKPOINT], note="a GGUF export onto an existing folder")
    case("flags-export-tokenizer-from-missing", f,
         ["export", "--checkpoint", "{work}/run", "--format", "gguf", "--tokenizer-from", "{work}/nope.gguf",
          "--out", "{work}/x.gguf"], ["nope.gguf"], setup=[TRAIN_CHECKPOINT], no_output=["x.gguf"])
    case("flags-export-out-in-missing-folder", f,
         ["export", "--checkpoint", "{work}/run", "--format", "gguf", "--out", "{work}/no/such/folder/x.gguf"],
         ["no/such/folder"], setup=[TRAIN_CHECKPOINT],
         note="unsure: creating the folders would be fine too (then drop this case)")
    case("flags-export-safetensors-out-is-file", f,
         ["export", "--checkpoint", "{work}/run", "--format", "safetensors", "--out", "{work}/taken.txt"], ["taken.txt"],
         setup=[TRAIN_CHECKPOINT, {"step": "write", "path": "taken.txt", "text": "a file\n"}])
    case("flags-tokenize-model-dev-zero", f, ["tokenize", "--model", "/dev/zero", "hello"], ["/dev/zero"])
    case("flags-eval-model-fifo", f, ["eval", "--model", "{fifo}", "--data", "{files}/corpus/words.txt", "--seq-len", "16",
                                      "--device", "cpu"], ["input.fifo"], note="must not hang")
    case("flags-tokenize-model-nonexistent", f, ["tokenize", "--model", "{work}/absent.gguf", "hello"], ["absent.gguf"])
    case("flags-eval-seq-len-one", f,
         ["eval", "--model", "{tiny}", "--data", "{files}/corpus/words.txt", "--seq-len", "1", "--device", "cpu"],
         ["seq", "1"])
    case("flags-eval-seq-len-past-context", f,
         ["eval", "--model", "{tiny}", "--data", "{files}/corpus/words.txt", "--seq-len", "1000", "--device", "cpu"],
         ["1000", "64"])
    case("flags-eval-batch-size-zero", f,
         ["eval", "--model", "{tiny}", "--data", "{files}/corpus/words.txt", "--seq-len", "16", "--batch-size", "0",
          "--device", "cpu"], ["batch", "0"])
    case("flags-generate-max-tokens-negative", f,
         ["generate", "--model", "{tiny}", "--prompt", "the", "--max-tokens", "-5", "--device", "cpu"], ["max-tokens", "-5"])
    case("flags-generate-batch-zero", f,
         ["generate", "--model", "{tiny}", "--prompt", "the", "--batch", "0", "--device", "cpu"], ["batch", "0"])
    case("flags-generate-prompt-and-prompts", f, ["generate", "--model", "{tiny}", "--prompt", "the", "--prompts", "{work}/p.jsonl", "--device", "cpu"],
         ["--prompt", "--prompts"], setup=[{"step": "write", "path": "p.jsonl", "text": '{"prompt": "the"}\n'}])
    case("flags-generate-prompts-messages-without-chat", f, ["generate", "--model", "{tiny}", "--prompts", "{work}/p.jsonl", "--device", "cpu"],
         ["p.jsonl:1", "--chat"], setup=[{"step": "write", "path": "p.jsonl", "text": '{"messages": [{"role": "user", "content": "the"}]}\n'}])
    case("flags-generate-chat-without-template", f,
         ["generate", "--model", "{tiny}", "--prompt", "the", "--chat", "--device", "cpu"], ["--chat", "tiny-llama", "chat template"])
    case("flags-generate-top-k-negative", f,
         ["generate", "--model", "{tiny}", "--prompt", "the", "--top-k", "-3", "--device", "cpu"], ["top-k", "-3"])
    case("flags-generate-top-p-above-one", f,
         ["generate", "--model", "{tiny}", "--prompt", "the", "--top-p", "1.5", "--device", "cpu"], ["top-p", "1.5"])
    case("flags-generate-temperature-negative", f,
         ["generate", "--model", "{tiny}", "--prompt", "the", "--temperature", "-1", "--device", "cpu"],
         ["temperature", "-1"])


def env_cases():
    e = "env"
    for name, value in [("abc", "abc"), ("zero", "0"), ("negative", "-5"), ("overflow", "99999999999999999999G")]:
        case(f"env-memory-budget-{name}", e, train(), ["KDGPU_MEMORY_BUDGET", value], env={"KDGPU_MEMORY_BUDGET": value})
    case("env-memory-budget-bad-suffix", e, train(), ["KDGPU_MEMORY_BUDGET", "6X"], env={"KDGPU_MEMORY_BUDGET": "6X"})
    case("env-memory-budget-too-small", e, train(), ["KDGPU_MEMORY_BUDGET"], env={"KDGPU_MEMORY_BUDGET": "1"},
         after_work=True, note="1 byte: the first allocation fails; the message must point at the variable")
    case("env-vector-width-three", e, train(device="opencl"), ["KDGPU_VECTOR_WIDTH", "3"], env={"KDGPU_VECTOR_WIDTH": "3"})
    case("env-vector-width-abc", e, train(device="opencl"), ["KDGPU_VECTOR_WIDTH", "abc"], env={"KDGPU_VECTOR_WIDTH": "abc"})
    case("env-gemm-bogus", e, train(), ["KDGPU_GEMM", "bogus"], env={"KDGPU_GEMM": "bogus"})
    case("env-gemm-clblast-on-cpu", e, train(), ["KDGPU_GEMM", "clblast"], env={"KDGPU_GEMM": "clblast"},
         note="clblast exists only for OpenCL devices; the CPU backend must refuse it by name")
    case("env-bf16-gemm-bogus", e, train(), ["KDGPU_BF16_GEMM", "amx", "native", "widened"], env={"KDGPU_BF16_GEMM": "amx"})
    case("env-bf16-gemm-bogus-opencl", e, train(device="opencl"), ["KDGPU_BF16_GEMM", "amx"], env={"KDGPU_BF16_GEMM": "amx"})
    case("env-kernel-dir-nonexistent", e, train(device="opencl"), ["KDGPU_KERNEL_DIR", "/nonexistent/kernels"],
         env={"KDGPU_KERNEL_DIR": "/nonexistent/kernels"})
    case("env-kernel-dir-without-kernels", e, train(device="opencl"), ["KDGPU_KERNEL_DIR", "kernels-empty"],
         env={"KDGPU_KERNEL_DIR": "{files}/kernels-empty"})


def gguf_cases():
    g = "gguf"
    teacher = lambda file: train(teacher="{files}/gguf/" + file)
    case("gguf-truncated-header", g, teacher("truncated-header.gguf"), ["truncated-header.gguf"])
    case("gguf-bad-magic", g, teacher("bad-magic.gguf"), ["bad-magic.gguf"])
    case("gguf-zero-heads", g, teacher("zero-heads.gguf"), ["zero-heads.gguf", ["head_count", "0 heads"]],
         note="crashed with a floating-point exception (division by zero heads)")
    case("gguf-zero-heads-eval", g, ["eval", "--model", "{files}/gguf/zero-heads.gguf", "--data", "{files}/corpus/words.txt",
                                     "--seq-len", "16", "--device", "cpu"], ["zero-heads.gguf", ["head_count", "0 heads"]])
    case("gguf-heads-not-dividing-width", g, teacher("heads-not-dividing-width.gguf"),
         ["heads-not-dividing-width.gguf", ["head_count", "3 heads"]])
    case("gguf-kv-heads-not-dividing", g, teacher("kv-heads-not-dividing.gguf"), ["kv-heads-not-dividing.gguf", ["head_count_kv", "3 key/value heads"]])
    case("gguf-zero-kv-heads", g, teacher("zero-kv-heads.gguf"), ["zero-kv-heads.gguf", ["head_count_kv", "0 key/value heads"]])
    case("gguf-absurd-width", g, teacher("absurd-width.gguf"), ["absurd-width.gguf", ["embedding_length", "width 2147483648"]])
    case("gguf-zero-blocks", g, teacher("zero-blocks.gguf"), ["zero-blocks.gguf", ["block_count", "layers"]])
    case("gguf-zero-context", g, teacher("zero-context.gguf"), ["zero-context.gguf", ["context_length", "context length"]])
    case("gguf-not-llama", g, teacher("not-llama.gguf"), ["not-llama.gguf", "mamba"])
    case("gguf-rope-dimensions-past-head", g, teacher("rope-past-head.gguf"), ["rope-past-head.gguf", "rope"])
    case("gguf-negative-epsilon-eval", g, ["eval", "--model", "{files}/gguf/negative-epsilon.gguf", "--data",
                                           "{files}/corpus/words.txt", "--seq-len", "16", "--device", "cpu"],
         ["negative-epsilon.gguf", ["layer_norm_rms_epsilon", "epsilon"]],
         note="an RMSNorm epsilon of -1 turns norms into NaN; must be refused on load")
    case("gguf-zero-rope-base-eval", g, ["eval", "--model", "{files}/gguf/zero-rope-base.gguf", "--data",
                                         "{files}/corpus/words.txt", "--seq-len", "16", "--device", "cpu"],
         ["zero-rope-base.gguf", ["freq_base", "rope"]], note="a RoPE base of 0 makes the rotation angles NaN/inf")
    case("gguf-vocab-size-key-mismatch", g, teacher("vocab-key-mismatch.gguf"), ["vocab-key-mismatch.gguf", "300"],
         note="llama.vocab_size 300 but 260 tokens and a 260-row embedding")
    case("gguf-missing-head-count", g, teacher("missing-head-count.gguf"), ["missing-head-count.gguf", "head_count"])
    case("gguf-no-tokenizer-tokenize", g, ["tokenize", "--model", "{files}/gguf/no-tokenizer.gguf", "hello"],
         ["no-tokenizer.gguf", "tokenizer"])
    case("gguf-no-tokenizer-train", g, teacher("no-tokenizer.gguf"), ["no-tokenizer.gguf", "tokenizer"])
    case("gguf-token-type-mismatch", g, ["tokenize", "--model", "{files}/gguf/token-type-mismatch.gguf", "hello"],
         ["token-type-mismatch.gguf", ["token_type", "token types"]])
    case("gguf-eos-out-of-range", g, ["generate", "--model", "{files}/gguf/eos-out-of-range.gguf", "--prompt", "the",
                                      "--max-tokens", "4", "--device", "cpu"], ["eos-out-of-range.gguf", ["eos_token_id", "eos token id"]])
    case("gguf-bad-merge", g, ["tokenize", "--model", "{files}/gguf/bad-merge.gguf", "hello"], ["bad-merge.gguf", "merges"])
    case("gguf-tensor-past-end", g, teacher("tensor-past-end.gguf"), ["tensor-past-end.gguf", "blk.0.ffn_down.weight"])
    case("gguf-tensor-past-end-eval", g, ["eval", "--model", "{files}/gguf/tensor-past-end.gguf", "--data",
                                          "{files}/corpus/words.txt", "--seq-len", "16", "--device", "cpu"],
         ["tensor-past-end.gguf", "blk.0.ffn_down.weight"])
    case("gguf-missing-tensor", g, teacher("missing-tensor.gguf"), ["missing-tensor.gguf", "blk.0.attn_k.weight"])
    case("gguf-wrong-shape-tensor", g, teacher("wrong-shape-tensor.gguf"), ["wrong-shape-tensor.gguf", "blk.0.ffn_up.weight"])
    case("gguf-vocab-mismatch", g, teacher("vocab-mismatch.gguf"), ["vocab-mismatch.gguf", "token_embd.weight"])


def checkpoint_cases():
    s, k = "safetensors", "checkpoint"
    export = ["export", "--checkpoint", "{work}/run", "--format", "gguf", "--type", "f32", "--out", "{work}/out.gguf"]
    export_hf = ["export", "--checkpoint", "{work}/run", "--format", "safetensors", "--out", "{work}/hf"]
    resume = ["train", "--resume", "{work}/run", "--steps", "4", "--device", "cpu"]
    model = CKPT + "/model.safetensors"
    optimizer = CKPT + "/optimizer.safetensors"

    def broken(*steps):
        return [TRAIN_CHECKPOINT] + list(steps)

    case("safetensors-model-truncated-export", s, export, ["model.safetensors"],
         setup=broken({"step": "truncate", "path": model, "size": 100000}), no_output=["out.gguf"])
    case("safetensors-model-truncated-resume", s, resume, ["model.safetensors"],
         setup=broken({"step": "truncate", "path": model, "size": 100000}))
    case("safetensors-model-cut-in-header", s, export, ["model.safetensors"],
         setup=broken({"step": "truncate", "path": model, "size": 200}), no_output=["out.gguf"])
    case("safetensors-model-4-bytes", s, export, ["model.safetensors"],
         setup=broken({"step": "write", "path": model, "from": "{files}/safetensors/only-4-bytes.safetensors"}),
         no_output=["out.gguf"])
    case("safetensors-huge-header-length", s, export, ["model.safetensors"],
         setup=broken({"step": "write", "path": model, "from": "{files}/safetensors/huge-header-length.safetensors"}),
         no_output=["out.gguf"])
    case("safetensors-header-not-json", s, export_hf, ["model.safetensors"],
         setup=broken({"step": "write", "path": model, "from": "{files}/safetensors/header-not-json.safetensors"}),
         no_output=["hf"])
    case("safetensors-data-missing", s, export, ["model.safetensors", "model.embed_tokens.weight"],
         setup=broken({"step": "write", "path": model, "from": "{files}/safetensors/data-missing.safetensors"}),
         no_output=["out.gguf"])
    case("safetensors-offsets-past-end", s, export, ["model.safetensors", "lm_head.weight"],
         setup=broken({"step": "header_set", "path": model, "tensor": "lm_head.weight", "field": "data_offsets",
                       "value": [66816, 9999999]}), no_output=["out.gguf"])
    case("safetensors-wrong-dtype", s, export, ["model.safetensors", "model.norm.weight"],
         setup=broken({"step": "header_set", "path": model, "tensor": "model.norm.weight", "field": "dtype", "value": "F64"}),
         no_output=["out.gguf"])
    case("safetensors-wrong-shape", s, resume, ["model.safetensors", "model.layers.0.mlp.up_proj.weight"],
         setup=broken({"step": "header_set", "path": model, "tensor": "model.layers.0.mlp.up_proj.weight",
                       "field": "shape", "value": [64, 96]}),
         note="same byte count, transposed shape: the checkpoint does not match its config.json")
    case("safetensors-optimizer-shape-mismatch", s, resume, ["optimizer.safetensors", "blk.0.attn_k.weight"],
         setup=broken({"step": "header_set", "path": optimizer, "tensor": "first_moment.blk.0.attn_k.weight",
                       "field": "shape", "value": [64, 32]}))
    case("safetensors-optimizer-truncated", s, resume, ["optimizer.safetensors"],
         setup=broken({"step": "truncate", "path": optimizer, "size": 4000}))
    case("safetensors-nan-weight-resume", s, resume,
         [["model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight"]],
         setup=broken({"step": "nan_tensor", "path": model, "tensor": "model.layers.0.mlp.up_proj.weight"}),
         note="a NaN weight must be found on load, naming the tensor, not after a step of training")
    case("safetensors-nan-weight-export", s, export, [["model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight"]],
         setup=broken({"step": "nan_tensor", "path": model, "tensor": "model.layers.0.mlp.up_proj.weight"}),
         no_output=["out.gguf"])
    case("checkpoint-resume-prompts-changed", k, resume, ["run", "prompts", "changed"],
         setup=[{"step": "write", "path": "p.jsonl", "text": '{"prompt": "the"}\n{"prompt": "of the"}\n'},
                {"step": "train_checkpoint", "args": ["--on-policy-fraction", "1", "--prompt-tokens", "4", "--rollout-tokens", "8",
                                                      "--prompts", "{work}/p.jsonl"]},
                {"step": "write", "path": "p.jsonl", "text": '{"prompt": "the"}\n{"prompt": "and the"}\n'}],
         note="the run drew its prompts from the file as it was: resuming from an edited one would not continue it exactly")
    case("checkpoint-config-not-json", k, export, ["config.json"],
         setup=broken({"step": "write", "path": CKPT + "/config.json", "from": "{files}/checkpoint/not-json.json"}),
         no_output=["out.gguf"], note="was a raw 'Error Domain=NSCocoaErrorDomain Code=3840'")
    case("checkpoint-config-zero-heads", k, export, ["config.json", ["num_attention_heads", "0 heads"]],
         setup=broken({"step": "json_set", "path": CKPT + "/config.json", "key": "num_attention_heads", "value": 0}),
         no_output=["out.gguf"])
    case("checkpoint-config-missing-hidden-size", k, export_hf, ["config.json", "hidden_size"],
         setup=broken({"step": "json_set", "path": CKPT + "/config.json", "key": "hidden_size", "value": None}),
         no_output=["hf"])
    case("checkpoint-config-missing", k, resume, ["config.json"],
         setup=broken({"step": "remove", "path": CKPT + "/config.json"}))
    case("checkpoint-trainer-state-missing", k, resume, [["trainer_state.json", "checkpoint"]],
         setup=broken({"step": "remove", "path": CKPT + "/trainer_state.json"}))
    case("checkpoint-trainer-state-garbage", k, resume, ["trainer_state.json"],
         setup=broken({"step": "write", "path": CKPT + "/trainer_state.json", "text": "{\"step\": 2, oops"}))
    case("checkpoint-trainer-state-negative-step", k, resume, ["trainer_state.json", "-3"],
         setup=broken({"step": "json_set", "path": CKPT + "/trainer_state.json", "key": "step", "value": -3}))
    case("checkpoint-trainer-state-future-version", k, resume, ["trainer_state.json", "99"],
         setup=broken({"step": "json_set", "path": CKPT + "/trainer_state.json", "key": "format_version", "value": 99}))
    case("checkpoint-trainer-state-bad-beta1", k, resume, ["beta1", "7"],
         setup=broken({"step": "json_set", "path": CKPT + "/trainer_state.json", "key": "configuration.beta1", "value": 7}),
         note="the saved configuration is validated like a YAML file's")
    case("checkpoint-resume-teacher-gone", k, resume, ["teacher-gone.gguf"],
         setup=broken({"step": "json_set", "path": CKPT + "/trainer_state.json", "key": "configuration.teacher",
                       "value": "/nonexistent/teacher-gone.gguf"}))
    case("checkpoint-resume-data-gone", k, resume, ["data-gone.txt"],
         setup=broken({"step": "json_set", "path": CKPT + "/trainer_state.json", "key": "configuration.data",
                       "value": "/nonexistent/data-gone.txt"}))
    case("checkpoint-resume-steps-behind", k, ["train", "--resume", "{work}/run", "--steps", "1", "--device", "cpu"],
         ["steps", "step 2"], setup=[TRAIN_CHECKPOINT], note="the checkpoint is at step 2; --steps 1 is behind it")
    case("checkpoint-config-more-layers", k, export, ["model.layers.1"],
         setup=broken({"step": "json_set", "path": CKPT + "/config.json", "key": "num_hidden_layers", "value": 2}),
         no_output=["out.gguf"], note="config.json says 2 layers, model.safetensors holds 1")
    case("checkpoint-config-vocab-mismatch", k, export, ["config.json", ["vocab_size", "embed_tokens", "300"]],
         setup=broken({"step": "json_set", "path": CKPT + "/config.json", "key": "vocab_size", "value": 300}),
         no_output=["out.gguf"])
    case("checkpoint-trainer-state-data-index-huge", k, resume, ["999999"], after_work=True,
         setup=broken({"step": "json_set", "path": CKPT + "/trainer_state.json", "key": "data_index", "value": 999999}))
    case("checkpoint-trainer-state-rng-garbage", k, resume, ["trainer_state.json", ["rng_state", "rng"]],
         setup=broken({"step": "json_set", "path": CKPT + "/trainer_state.json", "key": "rng_state", "value": "abc"}))
    case("checkpoint-trainer-state-seq-len-past-context", k, resume, ["seq_len", "1000"],
         setup=broken({"step": "json_set", "path": CKPT + "/trainer_state.json", "key": "configuration.seq_len",
                       "value": 1000}))
    case("checkpoint-optimizer-missing", k, resume, ["optimizer.safetensors"],
         setup=broken({"step": "remove", "path": optimizer}))
    case("checkpoint-tokenizer-garbage", k, export, ["tokenizer.json"],
         setup=broken({"step": "write", "path": CKPT + "/tokenizer.json", "from": "{files}/checkpoint/tokenizer-garbage.json"}),
         no_output=["out.gguf"])
    case("checkpoint-link-dangling", k, export, ["checkpoint"],
         setup=broken({"step": "remove", "path": "run/checkpoint"},
                      {"step": "symlink", "path": "run/checkpoint", "target": "step-99999999"}),
         no_output=["out.gguf"])
    case("checkpoint-folder-is-a-file", k, export, ["{work}/run"],
         setup=[{"step": "write", "path": "run", "text": "not a run folder\n"}], no_output=["out.gguf"])


def cache(*args, **overrides):
    """`kdgpu teacher-cache build` on the tiny model and corpus, flags in `overrides` replaced."""
    flags = {"--teacher": "{tiny}", "--data": "{files}/corpus/words.txt", "--seq-len": "16", "--targets": "topk:4",
             "--device": "cpu", "--windows-per-shard": "8", "--out": "{work}/tc"}
    for key, value in overrides.items():
        flags["--" + key.replace("_", "-")] = value
    return ["teacher-cache", "build"] + [item for pair in flags.items() for item in pair] + list(args)


TEACHER_CACHE = {"step": "teacher_cache"}
SHOW_WINDOW = ["teacher-cache", "show", "{work}/tc", "--window", "0"]


def cache_cases():
    c = "cache"
    case("cache-targets-unknown", c, cache(targets="top5"), ["targets", "top5"])
    case("cache-targets-k-zero", c, cache(targets="topk:0"), ["targets", "topk:0"])
    case("cache-targets-draws-too-many", c, cache(targets="sampled:70000"), ["targets", "70000", "65535"])
    case("cache-targets-topp-above-one", c, cache(targets="topp:1.5,10"), ["targets", "topp:1.5,10"])
    case("cache-targets-topp-no-k", c, cache(targets="topp:0.9"), ["targets", "topp:0.9"])
    case("cache-targets-systematic-zero", c, cache(targets="systematic:0"), ["targets", "systematic:0"])
    case("cache-seq-len-one", c, cache(seq_len="1"), ["seq_len", "1"])
    case("cache-seq-len-past-context", c, cache(seq_len="100"), ["seq_len", "100", "64"])
    case("cache-seq-len-negative", c, cache(seq_len="-4"), ["seq-len", "-4"])
    case("cache-batch-size-zero", c, cache(batch_size="0"), ["batch_size", "0"])
    case("cache-windows-per-shard-zero", c, cache(windows_per_shard="0"), ["windows-per-shard", "0"])
    case("cache-teacher-missing", c, cache(teacher="/nonexistent/cache-teacher.gguf"), ["cache-teacher.gguf"])
    case("cache-teacher-fifo", c, cache(teacher="{fifo}"), ["input.fifo"], note="a named pipe must not block the build")
    case("cache-teacher-not-gguf", c, cache(teacher="{files}/corpus/words.txt"), ["words.txt"])
    case("cache-data-missing", c, cache(data="/nonexistent/cache-corpus.txt"), ["cache-corpus.txt"])
    case("cache-data-too-short", c, cache(data="{files}/corpus/short.txt"), ["short.txt"])
    case("cache-out-is-a-file", c, cache(out="{work}/taken.txt"), ["taken.txt"],
         setup=[{"step": "write", "path": "taken.txt", "text": "not a folder\n"}])
    case("cache-out-holds-other-files", c, cache(), ["tc", "empty folder"],
         setup=[{"step": "write", "path": "tc/notes.txt", "text": "mine\n"}])
    case("cache-other-seq-len-in-its-folder", c, cache(seq_len="12"), ["seq_len 16 vs 12"], setup=[TEACHER_CACHE])
    case("cache-teacher-precision-unknown", c, cache(teacher_precision="fp8"), ["--teacher-precision", "fp8"])
    case("cache-other-precision-in-its-folder", c, cache(teacher_precision="bf16"), ["teacher precision fp32 vs bf16"], setup=[TEACHER_CACHE])
    case("cache-other-targets-in-its-folder", c, cache(targets="sampled:8"), ["targets topk:4 vs sampled:8"], setup=[TEACHER_CACHE])
    case("cache-manifest-damaged-on-resume", c, cache(), ["manifest.json"],
         setup=[TEACHER_CACHE, {"step": "write", "path": "tc/manifest.json", "text": "{\"format\": "}])
    case("cache-show-missing-folder", c, ["teacher-cache", "show", "/nonexistent/a-cache"], ["a-cache"])
    case("cache-show-not-a-cache", c, ["teacher-cache", "show", "{files}/corpus", "--window", "0"], ["manifest"])
    case("cache-show-manifest-not-json", c, ["teacher-cache", "show", "{work}/tc"], ["manifest.json", "JSON"],
         setup=[TEACHER_CACHE, {"step": "write", "path": "tc/manifest.json", "text": "{"}])
    case("cache-show-manifest-key-missing", c, ["teacher-cache", "show", "{work}/tc"], ["manifest.json", "seq_len"],
         setup=[TEACHER_CACHE, {"step": "json_set", "path": "tc/manifest.json", "key": "seq_len", "value": None}])
    case("cache-show-manifest-windows-edited", c, ["teacher-cache", "show", "{work}/tc"], ["manifest.json", "shard"],
         setup=[TEACHER_CACHE, {"step": "json_set", "path": "tc/manifest.json", "key": "windows", "value": 999}])
    case("cache-show-manifest-targets-edited", c, ["teacher-cache", "show", "{work}/tc"], ["manifest.json", "targets"],
         setup=[TEACHER_CACHE, {"step": "json_set", "path": "tc/manifest.json", "key": "targets", "value": "topk:zero"}])
    case("cache-show-truncated-shard", c, SHOW_WINDOW, ["shard-00000.bin", "truncated"],
         setup=[TEACHER_CACHE, {"step": "truncate", "path": "tc/shard-00000.bin", "size": 100}])
    case("cache-show-replaced-shard", c, SHOW_WINDOW, ["shard-00001.bin"],
         setup=[TEACHER_CACHE, {"step": "write", "path": "tc/shard-00001.bin", "text": "garbage"}])
    case("cache-show-missing-shard", c, SHOW_WINDOW, ["shard-00002.bin", "missing"],
         setup=[TEACHER_CACHE, {"step": "remove", "path": "tc/shard-00002.bin"}])
    case("cache-show-edited-shard-digest", c, SHOW_WINDOW, ["shard-00000.bin", "SHA-256"],
         setup=[TEACHER_CACHE, {"step": "json_set", "path": "tc/manifest.json", "key": "shards.0.sha256", "value": "00" * 32}])
    case("cache-show-incomplete", c, SHOW_WINDOW, ["incomplete"],
         setup=[TEACHER_CACHE, {"step": "json_set", "path": "tc/manifest.json", "key": "complete", "value": False}])
    case("cache-show-tokenizer-replaced", c, SHOW_WINDOW, ["tokenizer.json"],
         setup=[TEACHER_CACHE, {"step": "write", "path": "tc/tokenizer.json", "text": "{}"}])
    case("cache-show-window-past-the-end", c, ["teacher-cache", "show", "{work}/tc", "--window", "999"], ["window 999"],
         setup=[TEACHER_CACHE])
    case("cache-show-window-negative", c, ["teacher-cache", "show", "{work}/tc", "--window", "-1"], ["window -1"],
         setup=[TEACHER_CACHE])
    case("cache-show-corpus-moved", c, SHOW_WINDOW, ["cache-corpus-moved.txt"],
         setup=[TEACHER_CACHE, {"step": "json_set", "path": "tc/manifest.json", "key": "corpus.path", "value": "/nonexistent/cache-corpus-moved.txt"}])
    case("cache-show-corpus-changed", c, SHOW_WINDOW, ["corpus", "words.txt"],
         setup=[TEACHER_CACHE, {"step": "json_set", "path": "tc/manifest.json", "key": "corpus.tokens_sha256", "value": "00" * 32}])
    drawn = {"step": "teacher_cache", "args": ["--targets", "systematic:8"]}
    case("cache-show-id-order-replaced", c, SHOW_WINDOW, ["id-order.bin", "not the id order"],
         setup=[drawn, {"step": "write", "path": "tc/id-order.bin", "text": "garbage"}],
         note="a drawn cache's ids are coded by their rank in this file: another file must not decode to other ids")
    case("cache-show-id-order-missing", c, SHOW_WINDOW, ["id-order.bin", "missing"],
         setup=[drawn, {"step": "remove", "path": "tc/id-order.bin"}])
    case("cache-show-id-order-key-removed", c, SHOW_WINDOW, ["manifest.json", "id_order_sha256"],
         setup=[drawn, {"step": "json_set", "path": "tc/manifest.json", "key": "id_order_sha256", "value": None}])
    case("cache-show-coded-shard-truncated", c, SHOW_WINDOW, ["shard-00000.bin", "truncated"],
         setup=[drawn, {"step": "truncate", "path": "tc/shard-00000.bin", "size": 400}])
    case("cache-show-format-version-from-the-future", c, SHOW_WINDOW, ["manifest.json", "format version 4"],
         setup=[drawn, {"step": "json_set", "path": "tc/manifest.json", "key": "format_version", "value": 4}])
    case("cache-show-wide-counts-in-version-2", c, SHOW_WINDOW, ["manifest.json", "systematic:300", "cannot count"],
         setup=[{"step": "teacher_cache", "args": ["--targets", "systematic:300"]},
                {"step": "json_set", "path": "tc/manifest.json", "key": "format_version", "value": 2}],
         note="more than 255 draws count each position's pairs in two bytes, which only version 3 on says")
    tc = "{work}/tc"
    case("cache-train-sparse-tail-bogus", c, train(teacher_cache=tc, sparse_tail="bogus"), ["sparse_tail", "bogus"])
    case("cache-train-bucket-with-jsd", c, train(teacher_cache=tc, sparse_tail="bucket", divergence="jsd"), ["sparse_tail", "fkl"])
    case("cache-train-tail-prior-weight-negative", c, train(teacher_cache=tc, sparse_tail="prior", tail_prior_weight="-1"),
         ["tail_prior_weight", "[0, 1e6]"])
    case("cache-train-exact-label-drawn-bucket", c, train(teacher_cache=tc, sparse_tail="bucket", exact_label="true"),
         ["exact_label", "renormalize", "bucket"], setup=[{"step": "teacher_cache", "args": ["--targets", "sampled:8"]}])
    case("cache-train-sparsify-teacher-too", c, train(teacher_cache=tc, sparsify_teacher="sampled:8"), ["sparsify_teacher", "teacher_cache"])
    case("cache-train-decoupled-with-rkl", c, train(teacher_cache=tc, sparse_tail="decoupled", divergence="rkl"), ["sparse_tail", "decoupled", "fkl"])
    case("cache-train-decoupled-with-sampled", c, train(teacher_cache=tc, sparse_tail="decoupled"), ["sparse_tail", "sampled:8"],
         setup=[{"step": "teacher_cache", "args": ["--targets", "sampled:8"]}])
    case("cache-train-with-lens", c, train(teacher_cache=tc, lens_weight="1"), ["teacher_cache", "lens_weight"])
    case("cache-train-with-taid", c, train(teacher_cache=tc, divergence="taid"), ["teacher_cache", "taid"])
    case("cache-train-on-policy", c, train(teacher_cache=tc, on_policy_fraction="0.5", prompt_tokens="4", rollout_tokens="8"),
         ["teacher_cache", "live teacher"])
    case("cache-train-seq-kd", c, train(teacher_cache=tc, seq_kd="true", prompt_tokens="4", rollout_tokens="8"), ["teacher_cache", "--seq-kd"])
    case("cache-train-missing-cache", c, train(teacher_cache="/nonexistent/train-cache"), ["teacher_cache", "train-cache"])
    case("cache-train-seq-len-mismatch", c, train(teacher_cache=tc, seq_len="12"), ["teacher_cache", "--seq-len 16"], setup=[TEACHER_CACHE])
    case("cache-train-other-teacher", c, train(teacher_cache=tc, teacher="{files}/gguf/nan-weights.gguf"), ["teacher_cache", "nan-weights.gguf"],
         setup=[TEACHER_CACHE], note="the cache's teacher digest differs: refused before the weights are read")
    case("cache-train-other-corpus", c, train(teacher_cache=tc, data="{files}/corpus/few-windows.txt"), ["tc", "few-windows.txt"],
         setup=[TEACHER_CACHE])
    case("cache-train-rkl-renormalized", c, train(teacher_cache=tc, divergence="rkl"), ["divergence", "rkl"], setup=[TEACHER_CACHE])
    case("cache-train-uniform-with-sampled", c, train(teacher_cache=tc, sparse_tail="uniform"), ["sparse_tail", "sampled:8"],
         setup=[{"step": "teacher_cache", "args": ["--targets", "sampled:8"]}])
    case("cache-train-incomplete", c, train(teacher_cache=tc), ["incomplete"],
         setup=[TEACHER_CACHE, {"step": "json_set", "path": "tc/manifest.json", "key": "complete", "value": False}])


def fault_cases():
    f = "fault"
    killed = {"step": "kill_after_step", "after": 1}
    case("fault-killed-at-step-1-then-export", f,
         ["export", "--checkpoint", "{work}/run", "--format", "gguf", "--out", "{work}/out.gguf"], ["{work}/run", "checkpoint"],
         setup=[killed], no_output=["out.gguf"],
         note="SIGKILL after step 1, before the first checkpoint (step 2): export must say there is none yet")
    case("fault-killed-at-step-1-then-resume", f, ["train", "--resume", "{work}/run", "--steps", "3", "--device", "cpu"],
         ["{work}/run", "checkpoint"], setup=[killed])
    case("fault-killed-mid-checkpoint-export-partial", f,
         ["export", "--checkpoint", "{work}/run/.partial-step-00000004-dead", "--format", "gguf", "--out", "{work}/out.gguf"],
         [".partial-step-00000004-dead"],
         setup=[TRAIN_CHECKPOINT, {"step": "mkdir", "path": "run/.partial-step-00000004-dead"},
                {"step": "write", "path": "run/.partial-step-00000004-dead/config.json", "from": "{work}/" + CKPT + "/config.json"},
                {"step": "write", "path": "run/.partial-step-00000004-dead/model.safetensors",
                 "from": "{work}/" + CKPT + "/model.safetensors"},
                {"step": "truncate", "path": "run/.partial-step-00000004-dead/model.safetensors", "size": 50000}],
         no_output=["out.gguf"],
         note="what a SIGKILL in the middle of a checkpoint save leaves (a half-written hidden folder): "
              "given directly, it must be refused by name")
    unpublished = [TRAIN_CHECKPOINT, {"step": "remove", "path": "run/checkpoint"},
                   {"step": "rename", "path": "run/step-00000002", "to": "run/.partial-step-00000002-dead"}]
    case("fault-killed-before-publish-export", f,
         ["export", "--checkpoint", "{work}/run", "--format", "gguf", "--out", "{work}/out.gguf"], ["{work}/run", "checkpoint"],
         setup=unpublished, no_output=["out.gguf"],
         note="SIGKILL during the first save, after the files were written but before the folder was published: "
              "there is no checkpoint yet, and the hidden partial folder must not be taken for one")
    case("fault-killed-before-publish-resume", f, ["train", "--resume", "{work}/run", "--steps", "3", "--device", "cpu"],
         ["{work}/run", "checkpoint"], setup=unpublished)
    case("fault-full-disk-metrics", f, train(out="{tmpfs}/run"), ["metrics.jsonl", "space"],
         setup=[{"step": "fill_tmpfs", "free_kb": 0}], after_work=True,
         note="not even the metrics file can be written")
    case("fault-full-disk-checkpoint", f, train(out="{tmpfs}/run"), ["checkpoint", "space"],
         setup=[{"step": "fill_tmpfs", "free_kb": 200}], after_work=True, no_output=["tmpfs/run/checkpoint"],
         note="the model fits nowhere on a nearly full disk: the save fails, naming the checkpoint and the lack of space")
    case("fault-full-disk-final-gguf", f, train(out="{tmpfs}/run", export_gguf="f16"), ["student.gguf", "space"],
         setup=[{"step": "fill_tmpfs", "free_kb": 880}], after_work=True, no_output=["tmpfs/run/student.gguf"],
         note="room for the checkpoint (~790 KB) but not the exported student")
    case("fault-full-disk-export-gguf", f,
         ["export", "--checkpoint", "{work}/run", "--format", "gguf", "--type", "f32", "--out", "{tmpfs}/out.gguf"],
         ["out.gguf", "space"], setup=[TRAIN_CHECKPOINT, {"step": "fill_tmpfs", "free_kb": 40}],
         no_output=["tmpfs/out.gguf"])
    case("fault-full-disk-export-safetensors", f,
         ["export", "--checkpoint", "{work}/run", "--format", "safetensors", "--out", "{tmpfs}/hf"],
         ["hf", "space"], setup=[TRAIN_CHECKPOINT, {"step": "fill_tmpfs", "free_kb": 40}],
         no_output=["tmpfs/hf/model.safetensors"])
    case("fault-full-disk-token-cache", f, train(), ["cache", "space"], cwd="{tmpfs}",
         setup=[{"step": "fill_tmpfs", "free_kb": 0}], after_work=True,
         note="the token cache (cache/tokens under the working directory) cannot be written")
    case("fault-nan-huge-lr", f, train(lr="1e30", checkpoint_every="1"), ["non-finite", "step 1"], after_work=True,
         no_nan=[CKPT + "/model.safetensors"], note="the run stops at the first non-finite update; no NaN checkpoint")
    diverging = dict(warmup_steps="0", grad_clip="0", checkpoint_every="1", steps="8")
    case("fault-nan-gradient-after-checkpoint", f, train(lr="1e8", **diverging), ["non-finite", "step "],
         after_work=True, no_nan=[CKPT + "/model.safetensors"],
         note="step 1 survives and is checkpointed; a later step's gradient is NaN: stop, name the step, keep the finite checkpoint")
    case("fault-inf-validation-loss", f, train(lr="50", **diverging), ["step ", ["non-finite", "inf", "NaN", "nan"]],
         after_work=True, no_nan=[CKPT + "/model.safetensors"],
         note="numerics-dependent: the student's loss overflows to inf within 8 steps here (the metrics line cannot "
              "hold inf); if a change lets this run finish, pick another --lr")
    case("fault-nan-logits", f, train(lr="1e5", **diverging), ["step ", ["non-finite", "NaN", "nan", "inf"]],
         after_work=True, no_nan=[CKPT + "/model.safetensors"],
         note="numerics-dependent: the student's logits turn NaN within 8 steps; the message must name the step")
    case("fault-nan-tiny-temperature", f, train(temperature="1e-30"), ["temperature", ["non-finite", "nan", "NaN", "out of range"]],
         after_work=True, no_nan=[CKPT + "/model.safetensors"],
         note="either refused up front or stopped at the first step; the message must point at the temperature")
    case("fault-nan-teacher-weights", f, train(teacher="{files}/gguf/nan-weights.gguf"),
         ["nan-weights.gguf", ["blk.0.attn_q.weight", "non-finite", "NaN"]], after_work=True, no_nan=[CKPT + "/model.safetensors"],
         note="a teacher whose weights are NaN: report it, do not train a NaN student")


def main():
    if FILES.exists():
        shutil.rmtree(FILES)
    corpus_cases()
    yaml_cases()
    flag_cases()
    env_cases()
    gguf_cases()
    checkpoint_cases()
    cache_cases()
    fault_cases()
    corpus_files()
    yaml_files()
    gguf_files()
    safetensors_files()
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    (OUT / "cases.json").write_text(json.dumps({"cases": CASES}, indent=1, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in FILES.rglob("*") if p.is_file())
    counts = {}
    for c in CASES:
        counts[c["category"]] = counts.get(c["category"], 0) + 1
    print(f"{len(CASES)} cases ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
          f"{total} bytes of files in {FILES.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
