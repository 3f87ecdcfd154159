#!/usr/bin/env python3
"""Expected ids for leanmoe's tokenizer.json loader (tests/test_tokenizer.c),
made with Hugging Face `tokenizers`.

Writes, under tests/golden/tokenizer/:

  qwen3-nfc.inp/.out   strings whose NFC form differs from their bytes
                       (combining marks, Hangul jamo, compatibility
                       characters NFC keeps), encoded with Qwen3's
                       tokenizer.json from ../shared/data/tokenizers/qwen3
  spm-legacy/          a tiny Llama-2-style tokenizer.json (normalizer
                       Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer,
                       BPE with byte_fallback, decoder Replace + ByteFallback
                       + Fuse + Strip), with cases.inp/.out
  spm-meta/            a tiny tokenizer with NFKC + Lowercase, pre-tokenizer
                       Sequence[Metaspace(prepend_scheme "first", split),
                       Digits(individual)], decoder Metaspace, merges as
                       [a, b] pairs, with cases.inp/.out

The .inp/.out format is llama.cpp's: cases separated by
"\\n__ggml_vocab_test__\\n", one line of ids per case (no BOS/EOS).
Both tiny tokenizers are trained here on a fixed text, so re-running
reproduces the files byte for byte (tokenizers 0.23.3).

    /work/venv/bin/python tools/make_tokenizer_json_goldens.py
"""
import json
import os

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data", "tokenizers")
OUT = os.path.join(ROOT, "tests", "golden", "tokenizer")
SEP = "\n__ggml_vocab_test__\n"

NFC_CASES = [
    "cafe\u0301",                        # e + combining acute -> é
    "A\u030a ring and \u212b angstrom",  # Å from A + ring; the Angstrom sign -> Å
    "\u1100\u1161\u11a8 jamo",           # conjoining jamo -> 각
    "o\u0308\u0301 stacked marks",
    "\ufb01ne \u2460 \uff21",            # ﬁ, ①, Ａ: NFC keeps compatibility forms
    "already compos\u00e9 text",
    "\u0915\u093c Devanagari nukta",     # क + nukta: a composition exclusion
    "e\u0301\u0301\u0301",
    "mixed: Hello, \u4e16\u754c! 123 e\u0301",
]

TRAIN_TEXT = """
The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.
Mixture of experts models route each token to a few experts out of many.
Tokenizers split text into pieces, and byte pair encoding merges pairs.
She sells sea shells by the sea shore, and the shells she sells are sea shells.
In 1984 there were 365 days, 52 weeks and 12 months in the year.
""" * 8

SPM_CASES = [
    "Hello world",
    " leading space",
    "two  spaces and a\ttab",
    "The fox runs over 12345 dogs.",
    "unseen: \u4e2d\u6587 and \U0001F600 emoji",
    "UPPER lower MiXeD",
    "\uff21\uff22 full width",
    "",
    "   ",
    "line one\nline two",
]


def write_cases(path_base, tok, cases):
    with open(path_base + ".inp", "w", encoding="utf-8", newline="") as f:
        for c in cases:
            f.write(c + SEP)
    with open(path_base + ".out", "w", encoding="utf-8", newline="") as f:
        for c in cases:
            ids = tok.encode(c, add_special_tokens=False).ids
            f.write(" " + " ".join(str(i) for i in ids) + "\n")


def train(tok, vocab_size):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)
    tok.train_from_iterator([TRAIN_TEXT], trainer)


def add_byte_tokens(tok):
    """Adds <0x00>..<0xFF> to the model vocabulary (not as added tokens), as
    Llama's tokenizer.json has them, so that byte_fallback can use them."""
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    nxt = max(vocab.values()) + 1
    for t in j["added_tokens"]:
        nxt = max(nxt, t["id"] + 1)
    for b in range(256):
        name = "<0x%02X>" % b
        if name not in vocab:
            vocab[name] = nxt
            nxt += 1
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False))


def spm_legacy():
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    train(tok, 300)
    return add_byte_tokens(tok)


def spm_meta():
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True),
        pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    train(tok, 280)
    tok = add_byte_tokens(tok)
    # Store the merges as [a, b] pairs (the newer format) to test both.
    j = json.loads(tok.to_str())
    j["model"]["merges"] = [m.split(" ", 1) if isinstance(m, str) else m for m in j["model"]["merges"]]
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False))


def save(tok, name):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    write_cases(os.path.join(d, "cases"), tok, SPM_CASES)
    print(name, tok.get_vocab_size(), "tokens")


def main():
    os.makedirs(OUT, exist_ok=True)
    qwen = Tokenizer.from_file(os.path.join(SHARED, "qwen3", "tokenizer.json"))
    write_cases(os.path.join(OUT, "qwen3-nfc"), qwen, NFC_CASES)
    save(spm_legacy(), "spm-legacy")
    save(spm_meta(), "spm-meta")


if __name__ == "__main__":
    main()
