#!/usr/bin/env python3
"""Reference renders of chat templates, from transformers' own Jinja renderer.

kdgpu renders a model's `tokenizer.chat_template` (for `kdgpu train --prompts F --chat-template
true` and `kdgpu generate --chat`) with its own Jinja subset (Sources/Tokenizer/ChatTemplate.swift).
This script renders the same conversations with transformers' `render_jinja_template` (Jinja2 with
trim_blocks and lstrip_blocks, as `apply_chat_template` does) so the Swift test can compare:

  - SmolLM2-135M-Instruct's template as its GGUF carries it (the default teacher);
  - templates of the forms other model families ship (Llama 3, Llama 2, Zephyr, Gemma, Mistral,
    a Qwen-style one with whitespace control), written here from their published shapes;
  - conversations with and without a system turn, several turns, odd whitespace, and ones a
    template refuses with raise_exception (recorded as an error).

Writes Tests/TokenizerTests/Fixtures/chat_templates.json:
  {"reference": versions, "cases": [{"name", "template", "bos_token", "eos_token",
   "add_generation_prompt", "messages", "expected" | "error"}]}

Run from the package root after `make teacher`:
  pip install transformers gguf
  python3 bench/reference/make_chat_template_fixture.py
"""
import importlib.metadata
import json
import sys

import gguf
from transformers.utils.chat_template_utils import render_jinja_template

TEACHER = "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = "Tests/TokenizerTests/Fixtures/chat_templates.json"


def gguf_template(path):
    reader = gguf.GGUFReader(path)
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode()


TEMPLATES = {
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
        "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
        "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
    ),
    "zephyr": (
        "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
        "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
    ),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
    ),
    "mistral": (
        "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n"
        "{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n"
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
        "    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n"
        "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n"
        "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n"
        "        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
        "    {%- endif %}\n{%- endfor %}\n"
    ),
    "qwen-style": (
        "{# a ChatML template laid out over lines, as newer models ship them #}\n"
        "{%- for message in messages %}\n    {%- if loop.first and message.role != 'system' %}\n"
        "        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n"
        "    {{- '<|im_start|>' ~ message.role ~ '\\n' ~ message.content ~ '<|im_end|>' + '\\n' }}\n{%- endfor %}\n"
        "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
    ),
    "indented": (
        "{% for message in messages %}\n  {% if message['role'] == 'user' %}\n    User: {{ message['content'] }}\n  {% else %}\n"
        "    {{ message['role'] | upper }}: {{ message['content'] }}{# trailing comment #}\n  {% endif %}\n{% endfor %}\n"
        "{% if add_generation_prompt %}Assistant ({{ messages | length }} turns, last {{ messages[-1].role }}):{% endif %}"
    ),
}

CONVERSATIONS = {
    "one user turn": [{"role": "user", "content": "What is the capital of France?"}],
    "system and user": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a prime number."}],
    "several turns": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello. How can I help?"},
                      {"role": "user", "content": "  Tell me a story\nabout a cat.  "}],
    "odd text": [{"role": "user", "content": "Quotes ' and \" and {{ braces }} and {% tags %}, tabs\tand\n\nnewlines, emoji 🙂"}],
    "assistant first": [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "Fine."}],
}


def main():
    templates = {"smollm2": gguf_template(TEACHER), **TEMPLATES}
    tokens = {"smollm2": ("<|im_start|>", "<|im_end|>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>"), "gemma": ("<bos>", "<eos>")}
    cases = []
    for name, template in templates.items():
        bos, eos = tokens.get(name, ("<s>", "</s>"))
        for conversation, messages in CONVERSATIONS.items():
            for add_generation_prompt in (True, False):
                case = {"name": f"{name}: {conversation}" + (", generation prompt" if add_generation_prompt else ""), "template": template,
                        "bos_token": bos, "eos_token": eos, "add_generation_prompt": add_generation_prompt, "messages": messages}
                try:
                    rendered = render_jinja_template([messages], chat_template=template, add_generation_prompt=add_generation_prompt,
                                                     bos_token=bos, eos_token=eos)
                    case["expected"] = rendered[0][0] if isinstance(rendered, tuple) else rendered[0]
                except Exception as error:  # raise_exception in the template: a TemplateError
                    case["error"] = str(error)
                cases.append(case)
    reference = {package: importlib.metadata.version(package) for package in ("transformers", "jinja2", "gguf")}
    with open(OUT, "w") as f:
        json.dump({"reference": reference, "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{OUT}: {len(cases)} cases ({sum('error' in c for c in cases)} refused) from {reference}", file=sys.stderr)


if __name__ == "__main__":
    main()
