#!/usr/bin/env python3
"""An independent reference for kdgpu's llama forward pass, written from the math with numpy.

Weights come from the `gguf` package (its reader and its dequantizers), not from kdgpu. The forward
pass runs in float64 with llama.cpp's conventions: RoPE on adjacent pairs (x[2i], x[2i+1]) turned by
pos * base^(-2i/d), grouped-query attention where query head h uses key/value head h // (H / Hkv).

  python3 bench/reference/llama_reference.py tiny OUT_DIR
      writes OUT_DIR/tiny-llama-{f32,q8_0,q4_0,q4_1,f16}.gguf (random small llama models written
      with gguf.GGUFWriter) and OUT_DIR/tiny-llama-reference.json (their logits for fixed tokens)
  python3 bench/reference/llama_reference.py teacher MODEL.gguf OUT.json
      mean NLL of the real teacher on a few texts: this reference, and llama.cpp (llama-cpp-python)
      for the same token ids
"""
import json
import sys

import numpy as np
import gguf


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    value = f.parts[f.data[0]]
    return value.tobytes().decode() if f.types[0] == gguf.GGUFValueType.STRING else value[0].item()


def load(path):
    reader = gguf.GGUFReader(path)
    tensors = {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        tensors[t.name] = values.reshape(list(reversed([int(d) for d in t.shape])))
    config = dict(
        layers=field(reader, "llama.block_count"), width=field(reader, "llama.embedding_length"),
        heads=field(reader, "llama.attention.head_count"), kv_heads=field(reader, "llama.attention.head_count_kv"),
        base=field(reader, "llama.rope.freq_base", 10000.0), eps=field(reader, "llama.attention.layer_norm_rms_epsilon"),
    )
    config["rope_dim"] = field(reader, "llama.rope.dimension_count", config["width"] // config["heads"])
    return config, tensors


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


def rope_adjacent(x, positions, base, rope_dim):
    """x [T, heads, d]: pairs (2i, 2i+1) of the first rope_dim dims turn by pos * base^(-2i/rope_dim)."""
    y = x.copy()
    i = np.arange(rope_dim // 2)
    theta = positions[:, None] * base ** (-2.0 * i / rope_dim)  # [T, rope_dim/2]
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    a, b = x[..., 0:rope_dim:2], x[..., 1:rope_dim:2]
    y[..., 0:rope_dim:2] = a * c - b * s
    y[..., 1:rope_dim:2] = a * s + b * c
    return y


def forward(config, w, ids):
    """Logits [T, V] of one sequence of token ids."""
    t = len(ids)
    c, h, hkv = config["width"], config["heads"], config["kv_heads"]
    hs, eps = c // h, config["eps"]
    positions = np.arange(t, dtype=np.float64)
    x = w["token_embd.weight"][ids]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for l in range(config["layers"]):
        p = f"blk.{l}."
        xn = rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = rope_adjacent((xn @ w[p + "attn_q.weight"].T).reshape(t, h, hs), positions, config["base"], config["rope_dim"])
        k = rope_adjacent((xn @ w[p + "attn_k.weight"].T).reshape(t, hkv, hs), positions, config["base"], config["rope_dim"])
        v = (xn @ w[p + "attn_v.weight"].T).reshape(t, hkv, hs)
        out = np.empty((t, h, hs))
        for head in range(h):
            kv = head // (h // hkv)
            scores = q[:, head, :] @ k[:, kv, :].T / np.sqrt(hs) + mask
            probs = np.exp(scores - scores.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            out[:, head, :] = probs @ v[:, kv, :]
        x = x + out.reshape(t, c) @ w[p + "attn_output.weight"].T
        xn = rms_norm(x, w[p + "ffn_norm.weight"], eps)
        gate = xn @ w[p + "ffn_gate.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (xn @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
    xn = rms_norm(x, w["output_norm.weight"], eps)
    return xn @ w.get("output.weight", w["token_embd.weight"]).T


def mean_nll(logits, ids):
    """Mean negative log-likelihood (natural log) of ids[1:] given their prefixes."""
    z = logits[:-1]
    log_probs = z - z.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(ids) - 1), ids[1:]].mean())


def byte_tokens():
    """GPT-2's byte-to-unicode names of the 256 bytes, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    names, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            names[byte] = chr(byte)
        else:
            names[byte] = chr(256 + extra)
            extra += 1
    return [names[b] for b in range(256)]


MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n")]
TINY = dict(layers=2, width=64, heads=4, kv_heads=2, feed_forward=96, vocab=256 + len(MERGES), context=64, base=10000.0, eps=1e-5)


def write_tiny(out_dir):
    rng = np.random.default_rng(20261123)
    cfg = TINY
    c, f, v, hs = cfg["width"], cfg["feed_forward"], cfg["vocab"], cfg["width"] // cfg["heads"]
    shapes = {"token_embd.weight": (v, c), "output_norm.weight": (c,), "output.weight": (v, c)}
    for l in range(cfg["layers"]):
        p = f"blk.{l}."
        shapes.update({p + "attn_norm.weight": (c,), p + "attn_q.weight": (c, c), p + "attn_k.weight": (cfg["kv_heads"] * hs, c),
                       p + "attn_v.weight": (cfg["kv_heads"] * hs, c), p + "attn_output.weight": (c, c),
                       p + "ffn_norm.weight": (c,), p + "ffn_gate.weight": (f, c), p + "ffn_up.weight": (f, c),
                       p + "ffn_down.weight": (c, f)})
    values = {name: (1 + 0.1 * rng.standard_normal(shape) if name.endswith("norm.weight")
                     else rng.standard_normal(shape) * (0.5 if name == "token_embd.weight" else 1 / np.sqrt(shape[-1])))
              .astype(np.float32) for name, shape in shapes.items()}
    sequences = [[int(i) for i in rng.integers(0, v, size=n)] for n in (1, 7, 33)]
    reference = {"config": cfg, "sequences": sequences, "models": {}}
    types = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
             "q4_0": gguf.GGMLQuantizationType.Q4_0, "q4_1": gguf.GGMLQuantizationType.Q4_1}
    for label, qtype in types.items():
        path = f"{out_dir}/tiny-llama-{label}.gguf"
        writer = gguf.GGUFWriter(path, "llama")
        writer.add_block_count(cfg["layers"])
        writer.add_context_length(cfg["context"])
        writer.add_embedding_length(c)
        writer.add_feed_forward_length(f)
        writer.add_head_count(cfg["heads"])
        writer.add_head_count_kv(cfg["kv_heads"])
        writer.add_rope_freq_base(cfg["base"])
        writer.add_rope_dimension_count(hs)
        writer.add_layer_norm_rms_eps(cfg["eps"])
        writer.add_vocab_size(v)
        # A byte-level BPE tokenizer: the 256 single bytes and four merges, so the CLI runs on these files.
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(byte_tokens() + [a + b for a, b in MERGES])
        writer.add_token_types([1] * v)
        writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(10)  # the newline byte ends a generation
        writer.add_add_bos_token(False)
        for name, value in values.items():
            if name.endswith("norm.weight") or qtype == gguf.GGMLQuantizationType.F32:
                writer.add_tensor(name, value)
            else:
                writer.add_tensor(name, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        config, weights = load(path)
        reference["models"][label] = {
            "file": f"tiny-llama-{label}.gguf",
            "logits": [forward(config, weights, np.array(ids)).astype(np.float32).round(6).tolist() for ids in sequences],
        }
    with open(f"{out_dir}/tiny-llama-reference.json", "w") as out:
        json.dump(reference, out)


TEXTS = [
    "The capital of France is Paris. It is known for the Eiffel Tower and fine food.",
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong and Buzz Aldrin walked on its surface.",
]


def teacher(model_path, out_path):
    from llama_cpp import Llama
    config, weights = load(model_path)
    llm = Llama(model_path, logits_all=True, verbose=False, n_ctx=512)
    records = []
    for text in TEXTS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=False)
        llm.reset()
        llm.eval(ids)
        llama_cpp_logits = np.array(llm.scores[: len(ids)], dtype=np.float64)
        records.append({"text": text, "ids": ids, "reference_mean_nll": mean_nll(forward(config, weights, np.array(ids)), ids),
                        "llama_cpp_mean_nll": mean_nll(llama_cpp_logits, ids)})
        print(f"{len(ids):3d} tokens  reference {records[-1]['reference_mean_nll']:.5f}  llama.cpp {records[-1]['llama_cpp_mean_nll']:.5f}")
    with open(out_path, "w") as out:
        json.dump({"model": model_path.split("/")[-1], "texts": records}, out, indent=1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "tiny":
        write_tiny(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "teacher":
        teacher(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
