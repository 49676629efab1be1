#!/usr/bin/env python3
"""Reference ids for the Hugging Face tokenizer files kdgpu writes, from transformers/tokenizers.

kdgpu writes tokenizer.json, tokenizer_config.json, special_tokens_map.json and
generation_config.json into every checkpoint and `export --format safetensors` folder. This script
has kdgpu write them, loads them with transformers' AutoTokenizer (and the checkpoint's model with
AutoModelForCausalLM), and records the ids transformers gives for varied text:

  1. a 1-step `kdgpu train` with the real teacher makes a checkpoint (its own tokenizer, SmolLM2's,
     with the chat template);
  2. `kdgpu export --format safetensors --tokenizer-from V.gguf` writes the same student with the
     teacher's vocabulary relabelled with each pre-tokenizer kdgpu implements (smollm, llama-bpe,
     gpt-2), from Tests/TokenizerTests/Fixtures/smollm2_vocab.gguf;
  3. every text of Tests/TokenizerTests/Fixtures/smollm2_tokens.json (hand-picked and random
     strings: whitespace runs, digits, contractions, CJK, emoji, code, special tokens) is encoded by
     transformers (which always matches special tokens, as `kdgpu tokenize --special` does).

Writes Tests/TokenizerTests/Fixtures/hf_tokenizer_ids.json:
  {"reference": versions, "files": {pre: sha256 of the tokenizer.json kdgpu wrote},
   "texts": [...], "ids": {pre: [[id, ...] per text]}, "chat_template_render": str,
   "model_loaded": class name, "config": {...}}
The Swift test writes the files again, checks their hashes equal these (so the ids apply to exactly
those files) and that kdgpu's tokenizer gives these ids.

Run from the package root after `make teacher` and `swift build -c release`:
  pip install transformers tokenizers gguf torch==2.13.0+cpu
  python3 bench/reference/make_hf_tokenizer_fixture.py
"""
import hashlib
import importlib.metadata
import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "Tests/TokenizerTests/Fixtures"
KDGPU = ROOT / ".build/release/kdgpu"
TEACHER = ROOT / "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf"
PRE_TOKENIZERS = ["smollm", "llama-bpe", "gpt-2"]


def relabelled_vocab(pre, path):
    """smollm2_vocab.gguf with tokenizer.ggml.pre = pre (every other key and value unchanged)."""
    import gguf
    reader = gguf.GGUFReader(str(FIXTURES / "smollm2_vocab.gguf"))
    writer = gguf.GGUFWriter(str(path), arch="llama")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = pre if name == "tokenizer.ggml.pre" else field.contents()
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, value)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(name, value)
        else:
            writer.add_key_value(name, value, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def run(*args):
    subprocess.run([str(KDGPU), *args], check=True, stdout=subprocess.DEVNULL)


def main():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    reference = json.loads((FIXTURES / "smollm2_tokens.json").read_text())
    texts = [case["text"] for case in reference["cases"]]
    for cases in reference["otherPreTokenizers"].values():
        texts += [case["text"] for case in cases if case["text"] not in texts]
    out = {"reference": {p: importlib.metadata.version(p) for p in ["transformers", "tokenizers", "torch"]},
           "files": {}, "texts": texts, "ids": {}}
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        (work / "corpus.txt").write_text("\n".join(texts) * 20)
        run("train", "--teacher", str(TEACHER), "--data", str(work / "corpus.txt"), "--steps", "1", "--seq-len", "32",
            "--batch-size", "2", "--eval-windows", "1", "--device", "cpu", "--export-gguf", "none", "--out", str(work / "run"))
        checkpoint = work / "run/checkpoint"
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint))
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        out["model_loaded"] = type(model).__name__
        out["tokenizer_loaded"] = type(tokenizer).__name__
        out["chat_template_render"] = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
        out["config"] = {key: getattr(tokenizer, key) for key in ["bos_token", "eos_token", "pad_token", "unk_token", "model_max_length"]}
        out["config"]["generation"] = json.loads((checkpoint / "generation_config.json").read_text())
        for pre in PRE_TOKENIZERS:
            vocab = work / f"vocab-{pre}.gguf"
            relabelled_vocab(pre, vocab)
            folder = work / f"hf-{pre}"
            run("export", "--checkpoint", str(work / "run"), "--format", "safetensors", "--tokenizer-from", str(vocab), "--out", str(folder))
            out["files"][pre] = hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
            hf = AutoTokenizer.from_pretrained(str(folder))
            out["ids"][pre] = [hf.encode(text, add_special_tokens=True) for text in texts]
        # The checkpoint's own tokenizer is the smollm one, with the teacher's chat template.
        assert [tokenizer.encode(text) for text in texts] == out["ids"]["smollm"]
    (FIXTURES / "hf_tokenizer_ids.json").write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {FIXTURES / 'hf_tokenizer_ids.json'}: {len(texts)} texts x {len(PRE_TOKENIZERS)} pre-tokenizers")


if __name__ == "__main__":
    sys.exit(main())
