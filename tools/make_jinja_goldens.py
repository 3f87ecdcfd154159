#!/usr/bin/env python3
"""Renders chat templates with jinja2 exactly as transformers'
apply_chat_template does, for leanmoe's Jinja renderer test
(tests/test_jinja.c).

The environment is transformers' (utils/chat_template_utils.py):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the
loopcontrols extension, raise_exception and strftime_now globals, and its
tojson filter (json.dumps without ASCII or HTML escaping).

Templates: DeepSeek-V3 and Qwen3 from the tokenizer_config.json files in
../shared/data/tokenizers; DeepSeek-V2, Llama 3 and Mistral-Instruct as
published in those models' tokenizer_config.json (the same texts as
tools/make_chat_goldens.py). Writes, under tests/golden/chat/:

    tmpl-<template>.jinja          the template text
    jinja-<template>-<case>.json   the variables (messages, bos_token, ...)
    jinja-<template>-<case>.txt    the exact rendered bytes
    jinja-manifest.txt             one "<template> <case>" line per pair

A pair that jinja2 refuses to render (content None where the template adds
it to a string) has no .txt and is listed as "<template> <case> error": the
C renderer must refuse it too.

    /work/venv/bin/python tools/make_jinja_goldens.py
"""
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_chat_goldens import DEEPSEEK2, LLAMA3, MISTRAL, shared_template  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "chat")

BOS_DS = "<｜begin▁of▁sentence｜>"
EOS_DS = "<｜end▁of▁sentence｜>"
TEMPLATES = {
    # name: (template, bos_token, eos_token)
    "deepseek3": (shared_template("deepseek-v3"), BOS_DS, EOS_DS),
    "qwen3": (shared_template("qwen3"), "", "<|im_end|>"),
    "deepseek2": (DEEPSEEK2, BOS_DS, EOS_DS),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    "mistral": (MISTRAL, "<s>", "</s>"),
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city, in \"celsius\".",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "e.g. Zürich"},
                           "days": {"type": "integer", "minimum": 1, "maximum": 7.5}},
            "required": ["city"],
        },
    },
}

# case: (messages, add_generation_prompt, extra variables)
CASES = {
    "single": ([{"role": "user", "content": "What is a mixture of experts?"}], True, {}),
    "system": ([{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi  there\nfriend"}], True, {}),
    "multi": ([{"role": "system", "content": "Be kind."},
               {"role": "user", "content": "One?"},
               {"role": "assistant", "content": "Two."},
               {"role": "user", "content": "Three, é ü 中文?"}], True, {}),
    "nogen": ([{"role": "user", "content": "Say hi."},
               {"role": "assistant", "content": "Hi!"}], False, {}),
    "unicode": ([{"role": "user", "content": "  Emoji 🤖👍🏽, CJK 混合专家, RTL שלום, combining e\u0301,\ttab "
                                              "{{ not a tag }} {% raw %} 'quotes' \"double\" back\\slash\n\n"},
                 {"role": "assistant", "content": "\nÅngström — “ok” ✓\n"},
                 {"role": "user", "content": "ß ǅ ﬁ İ"}], True, {}),
    "nothink": ([{"role": "user", "content": "Quick: 2+2?"}], True, {"enable_thinking": False}),
    "think": ([{"role": "user", "content": "Quick: 2+2?"}], True, {"enable_thinking": True}),
    "reasoning": ([{"role": "user", "content": "What is 2+2?"},
                   {"role": "assistant", "content": "4", "reasoning_content": "Add two and two.\n"},
                   {"role": "user", "content": "And 3+3?"},
                   {"role": "assistant", "content": "<think>\nSix, clearly.\n</think>\n\n6"}], False, {}),
    "tools": ([{"role": "system", "content": "Use tools."},
               {"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"type": "function", "function": {"name": "get_weather",
                                                     "arguments": "{\"city\": \"Paris\"}"}}]},
               {"role": "tool", "content": "{\"temp\": 21}"},
               {"role": "assistant", "content": "It is 21 °C."}], True, {"tools": [WEATHER_TOOL]}),
    "toolcalls": ([{"role": "user", "content": "Weather in Oslo and Rome?"},
                   {"role": "assistant", "content": "Checking.", "tool_calls": [
                       {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                       {"type": "function", "function": {"name": "get_weather",
                                                         "arguments": "{\"city\": \"Rome\"}"}}]},
                   {"role": "tool", "content": "{\"temp\": 3}"},
                   {"role": "tool", "content": "{\"temp\": 25}"}], True, {"tools": [WEATHER_TOOL]}),
}


def environment():
    """transformers' _cached_compile_jinja_template, minus the tracker
    (its {% generation %} tag only matters for assistant masks)."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def write(path, text):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def main():
    os.makedirs(OUT, exist_ok=True)
    env = environment()
    manifest = []
    for name, (tmpl, bos, eos) in TEMPLATES.items():
        write(os.path.join(OUT, f"tmpl-{name}.jinja"), tmpl)
        t = env.from_string(tmpl)
        for case, (msgs, gen, extra) in CASES.items():
            variables = {"messages": msgs, "add_generation_prompt": gen, "bos_token": bos, "eos_token": eos, **extra}
            write(os.path.join(OUT, f"jinja-{name}-{case}.json"), json.dumps(variables, ensure_ascii=False, indent=1))
            try:
                text = t.render(**variables)
            except Exception as e:  # the template refuses this conversation: so must leanmoe
                print(f"{name} {case}: error ({type(e).__name__}: {e})")
                manifest.append(f"{name} {case} error")
                continue
            write(os.path.join(OUT, f"jinja-{name}-{case}.txt"), text)
            manifest.append(f"{name} {case}")
            print(name, case, repr(text[:60]))
    write(os.path.join(OUT, "jinja-manifest.txt"), "\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
