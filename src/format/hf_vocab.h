/*
 * hf_vocab.h - the vocabulary of a Hugging Face folder written as the
 * tokenizer.* keys of a GGUF file, as llama.cpp's convert_hf_to_gguf.py
 * writes them (see hf_vocab.c for what that means key by key).
 */
#ifndef LMOE_HF_VOCAB_H
#define LMOE_HF_VOCAB_H

#include <stddef.h>
#include <stdint.h>

struct gguf_writer;

/* Adds the tokenizer.* keys for the folder dir (tokenizer.json, and
 * tokenizer_config.json, config.json, chat_template.jinja when present) to
 * w. arch is the file's general.architecture; n_vocab the rows of the
 * token embedding, or 0 to take config.json's vocab_size, else the
 * tokenizer's own size. *n_tokens (if not NULL) gets the number of tokens
 * written. Returns 0, or LMOE_ERR_IO (no tokenizer.json), LMOE_ERR_FORMAT,
 * LMOE_ERR_UNSUPPORTED (a pre-tokenizer llama.cpp has no name for, a
 * tokenizer the converter would not write this way), LMOE_ERR_NOMEM, with
 * one line in err. */
int hf_vocab_write(struct gguf_writer *w, const char *dir, const char *arch, int64_t n_vocab, int64_t *n_tokens,
                   char *err, size_t errlen);

/* The tokenizer.ggml.pre name llama.cpp gives the pre-tokenizer of a
 * tokenizer.json (a jansson object, the file's root): "deepseek-v3",
 * "qwen2", "llama-bpe", "deepseek-llm", "deepseek-coder", "gpt-2", or NULL
 * when it is none of those. */
const char *hf_vocab_pre_name(const void *tokenizer_json_root);

#endif
