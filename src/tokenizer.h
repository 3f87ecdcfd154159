/*
 * tokenizer.h - text to token ids and back, from the tokenizer.ggml.* keys of
 * a GGUF file.
 *
 * Two models, named by tokenizer.ggml.model:
 *   "gpt2"   byte-level BPE: the text is split by the pre-tokenizer named in
 *            tokenizer.ggml.pre (a fixed sequence of regexes per name, run
 *            with PCRE2), each piece's bytes are mapped to GPT-2's printable
 *            stand-in characters, then merged by tokenizer.ggml.merges in
 *            merge order (lowest rank first).
 *   "llama"  SentencePiece BPE as llama.cpp runs it: spaces become U+2581,
 *            one is prepended at the start (tokenizer.ggml.add_space_prefix,
 *            default on), and the adjacent pair whose joined text is the
 *            highest-scoring token is merged until none is left; characters
 *            outside the vocabulary become <0xNN> byte tokens.
 * The reference for both is what HF tokenizers (and llama.cpp's
 * test-tokenizer-0) produce on llama.cpp's vocab test strings.
 *
 * Added tokens (token type CONTROL, USER_DEFINED, UNKNOWN) are found in the
 * text before anything else, leftmost-longest, as HF does: USER_DEFINED ones
 * always (as HF and llama.cpp do; DeepSeek's vocabularies rely on it),
 * CONTROL and UNKNOWN ones only when the caller asks for parse_special.
 *
 * Ownership: lmoe_tokenizer_open copies everything it needs from the
 * gguf_file, which may be closed right after. The handle is read-only after
 * open, so any number of threads may encode and decode with it at once.
 */
#ifndef LMOE_TOKENIZER_H
#define LMOE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

struct gguf_file;
struct lmoe_tokenizer;

/* Token types as stored in tokenizer.ggml.token_type (llama.cpp's values). */
enum lmoe_token_type {
    LMOE_TOKEN_TYPE_UNDEFINED = 0,
    LMOE_TOKEN_TYPE_NORMAL = 1,
    LMOE_TOKEN_TYPE_UNKNOWN = 2,
    LMOE_TOKEN_TYPE_CONTROL = 3,
    LMOE_TOKEN_TYPE_USER_DEFINED = 4,
    LMOE_TOKEN_TYPE_UNUSED = 5,
    LMOE_TOKEN_TYPE_BYTE = 6,
};

enum lmoe_tokenizer_model {
    LMOE_TOKENIZER_BPE = 0, /* "gpt2" */
    LMOE_TOKENIZER_SPM = 1, /* "llama" */
};

/* Reads the vocabulary. Errors: LMOE_ERR_FORMAT for missing or mistyped
 * keys, LMOE_ERR_UNSUPPORTED for an unknown model or pre-tokenizer name,
 * LMOE_ERR_NOMEM. On failure *out is NULL and err holds one line. */
int lmoe_tokenizer_open(struct lmoe_tokenizer **out, const struct gguf_file *f,
                        char *err, size_t errlen);
void lmoe_tokenizer_close(struct lmoe_tokenizer *t); /* NULL is fine */

/* Reads a Hugging Face tokenizer: path is a tokenizer.json file or a folder
 * holding one; a tokenizer_config.json beside it (optional) gives bos/eos,
 * add_bos_token/add_eos_token and the chat template. The BPE model with its
 * normalizer (NFC/NFD/NFKC/NFKD, Prepend, Replace, Lowercase, Strip,
 * Sequence), pre-tokenizers (Split, ByteLevel, Metaspace, Digits, Sequence)
 * and decoder (ByteLevel, or Metaspace / Replace+ByteFallback+Fuse+Strip)
 * as tokenizers runs them; added tokens marked special are CONTROL tokens,
 * the others USER_DEFINED. Errors as lmoe_tokenizer_open, plus LMOE_ERR_IO
 * when the file cannot be read. */
int lmoe_tokenizer_open_json(struct lmoe_tokenizer **out, const char *path, char *err,
                             size_t errlen);
/* tokenizer_config.json's chat_template (the default one when it lists
 * several): borrowed, valid until close; NULL for GGUF tokenizers and when
 * there is none. */
const char *lmoe_tokenizer_chat_template(const struct lmoe_tokenizer *t);


/* Encodes len bytes of UTF-8 (no NUL needed). Never adds BOS or EOS; the
 * caller does that from lmoe_tokenizer_add_bos(). *ids_out is malloc'd, the
 * caller frees it (with free); empty text gives *n_out = 0 and a non-NULL
 * pointer. Invalid UTF-8 gives LMOE_ERR_ARG naming the byte offset. */
int lmoe_tokenizer_encode(const struct lmoe_tokenizer *t, const char *text,
                          size_t len, int parse_special, int32_t **ids_out,
                          int *n_out, char *err, size_t errlen);

/* The token's stored string (byte-level BPE stand-ins, U+2581 for spaces,
 * "<0x0A>" for byte tokens): borrowed, valid until close, NUL-terminated;
 * *len (if not NULL) gets its length. NULL for an id out of range. */
const char *lmoe_tokenizer_piece(const struct lmoe_tokenizer *t, int32_t id,
                                 size_t *len);

/* The bytes token id stands for: byte-level BPE stand-ins mapped back to
 * bytes, U+2581 back to spaces, <0xNN> tokens to their byte; CONTROL and
 * USER_DEFINED tokens give their text unchanged (callers that hide control
 * tokens check lmoe_tokenizer_is_control first). The bytes may be part of a
 * UTF-8 character; feed them to an lmoe_utf8_stream for printing. An SPM
 * token "▁Hello" gives " Hello", including at the start of a text.
 * Writes at most buflen bytes (no NUL) and returns the full byte count, as
 * snprintf does, so a larger return value means "call again with more room";
 * LMOE_ERR_ARG for an id out of range. */
int lmoe_tokenizer_decode(const struct lmoe_tokenizer *t, int32_t id, char *buf,
                          size_t buflen);

/* Accessors. Ids are -1 where the vocabulary has none. */
int lmoe_tokenizer_n_vocab(const struct lmoe_tokenizer *t);
int lmoe_tokenizer_model(const struct lmoe_tokenizer *t); /* enum above */
int32_t lmoe_tokenizer_bos(const struct lmoe_tokenizer *t);
int32_t lmoe_tokenizer_eos(const struct lmoe_tokenizer *t);
/* End of turn: tokenizer.ggml.eot_token_id, else the first of a list of
 * well-known texts present (<|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>,
 * <|endoftext|>, <｜end▁of▁sentence｜>, ...), else -1. */
int32_t lmoe_tokenizer_eot(const struct lmoe_tokenizer *t);
int32_t lmoe_tokenizer_unk(const struct lmoe_tokenizer *t);
/* tokenizer.ggml.add_bos_token; if absent: 1 for SPM and the Llama-3
 * pre-tokenizers, else 0 (llama.cpp's defaults). */
int lmoe_tokenizer_add_bos(const struct lmoe_tokenizer *t);
int lmoe_tokenizer_add_eos(const struct lmoe_tokenizer *t);
/* SPM only: whether encode prepends a space (U+2581) to the text. */
int lmoe_tokenizer_add_space_prefix(const struct lmoe_tokenizer *t);
/* enum lmoe_token_type of id; LMOE_TOKEN_TYPE_UNDEFINED out of range. */
int lmoe_tokenizer_token_type(const struct lmoe_tokenizer *t, int32_t id);
int lmoe_tokenizer_is_control(const struct lmoe_tokenizer *t, int32_t id);
/* tokenizer.ggml.pre as given ("default" when absent, and for SPM). */
const char *lmoe_tokenizer_pre(const struct lmoe_tokenizer *t);
/* The id of a token's exact stored text, or -1. */
int32_t lmoe_tokenizer_find(const struct lmoe_tokenizer *t, const char *text,
                            size_t len);

/*
 * Streaming UTF-8: token bytes go in, only whole characters come out, so a
 * character split across tokens (common with byte-level BPE and <0xNN>
 * tokens) is printed once complete. An invalid sequence becomes one U+FFFD
 * per maximal invalid subpart (the Unicode-recommended replacement), never
 * raw invalid bytes, so the output is always valid UTF-8.
 *
 *   struct lmoe_utf8_stream s = {0};
 *   char out[LMOE_UTF8_STREAM_OUT(n)];
 *   size_t k = lmoe_utf8_stream_push(&s, bytes, n, out);   // k bytes to print
 *   ...
 *   k = lmoe_utf8_stream_flush(&s, out);  // at the end: a held tail -> U+FFFD
 */
struct lmoe_utf8_stream {
    unsigned char pend[4]; /* the start of an unfinished character */
    int n_pend;
};

/* Room that push needs for n input bytes (invalid bytes can triple). */
#define LMOE_UTF8_STREAM_OUT(n) (3 * ((size_t)(n) + 4))

size_t lmoe_utf8_stream_push(struct lmoe_utf8_stream *s, const char *in,
                             size_t n, char *out);
size_t lmoe_utf8_stream_flush(struct lmoe_utf8_stream *s, char *out);

/* Length of the valid UTF-8 prefix of s[0..n): n when all valid. Strict:
 * no overlong forms, surrogates or code points above U+10FFFF. */
size_t lmoe_utf8_valid_prefix(const char *s, size_t n);

#endif
