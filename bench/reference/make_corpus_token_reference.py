#!/usr/bin/env python3
"""llama.cpp token ids for every Shakespeare play of the default corpus (about 5 MB), reduced to a
count and a SHA-256 (of the little-endian int32 ids) per play, for the whole-corpus parity test of
the Swift tokenizer (SmolLM2TokenizerTests.testShakespeareCorpusMatchesLlamaCpp).

Writes Tests/TokenizerTests/Fixtures/shakespeare_token_digests.json.

Run from the package root after `make teacher corpus`:
  pip install llama-cpp-python
  python3 bench/reference/make_corpus_token_reference.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import hashlib
import json
import pathlib
import struct
import sys

from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf"
PLAYS = ROOT / "cache/corpus/plays"
OUTPUT = ROOT / "Tests/TokenizerTests/Fixtures/shakespeare_token_digests.json"


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL
    llm = Llama(str(model), vocab_only=True, verbose=False)
    plays = []
    for path in sorted(PLAYS.rglob("*.md")):
        ids = llm.tokenize(path.read_text(encoding="utf-8").encode("utf-8"), add_bos=False, special=False)
        plays.append({"path": str(path.relative_to(PLAYS)), "tokens": len(ids),
                      "sha256": hashlib.sha256(struct.pack(f"<{len(ids)}i", *ids)).hexdigest()})
    source = "llama.cpp (llama-cpp-python) tokenize(text, add_bos=False, special=False) of each play, vocabulary of " + model.name
    OUTPUT.write_text(json.dumps({"source": source, "plays": plays}, indent=1))
    print(f"{OUTPUT.relative_to(ROOT)}: {len(plays)} plays, {sum(p['tokens'] for p in plays)} tokens")


if __name__ == "__main__":
    main()
