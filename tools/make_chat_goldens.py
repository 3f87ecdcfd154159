#!/usr/bin/env python3
"""Renders reference conversations with jinja2, as transformers'
apply_chat_template does, for leanmoe's chat-format test (tests/test_chat.c).

Templates: DeepSeek-V3 and Qwen3 from the tokenizer_config.json files in
../shared/data/tokenizers; DeepSeek-V2, Llama 3 and Mistral-Instruct as
published in those models' tokenizer_config.json (their text is a file-format
fact, reproduced below). Writes tests/golden/chat/<format>-<case>.txt, the
exact rendered bytes.

    /work/venv/bin/python tools/make_chat_goldens.py
"""
import json
import os

import jinja2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data", "tokenizers")
OUT = os.path.join(ROOT, "tests", "golden", "chat")

DEEPSEEK2 = ("{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
             "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
             "{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}"
             "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
             "{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
          "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
          "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
          "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
           "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
           "{{ message['content'] + eos_token}}{% endif %}{% endfor %}")


def shared_template(name):
    with open(os.path.join(SHARED, name, "tokenizer_config.json")) as f:
        return json.load(f)["chat_template"]


FORMATS = {
    # format: (template, bos, eos, supports system)
    "deepseek3": (shared_template("deepseek-v3"), "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", True),
    "chatml": (shared_template("qwen3"), "", "<|im_end|>", True),
    "deepseek2": (DEEPSEEK2, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", True),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", True),
    "mistral": (MISTRAL, "<s>", "</s>", False),
}

CASES = {
    "single": [{"role": "user", "content": "What is a mixture of experts?"}],
    "system": [{"role": "system", "content": "You are terse."},
               {"role": "user", "content": "Hi  there\nfriend"}],
    "multi": [{"role": "system", "content": "Be kind."},
              {"role": "user", "content": "One?"},
              {"role": "assistant", "content": "Two."},
              {"role": "user", "content": "Three, é ü 中文?"}],
}


def main():
    os.makedirs(OUT, exist_ok=True)
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as transformers sets it
    for fmt, (tmpl, bos, eos, has_system) in FORMATS.items():
        t = env.from_string(tmpl)
        for case, msgs in CASES.items():
            if not has_system and any(m["role"] == "system" for m in msgs):
                continue
            text = t.render(messages=msgs, add_generation_prompt=True, bos_token=bos, eos_token=eos)
            with open(os.path.join(OUT, f"{fmt}-{case}.txt"), "w", encoding="utf-8", newline="") as f:
                f.write(text)
            print(fmt, case, repr(text[:80]))


if __name__ == "__main__":
    main()
