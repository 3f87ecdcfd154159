/*
 * tokenizer_impl.h - what tokenizer.c, tokenizer_bpe.c, tokenizer_spm.c and
 * tokenizer_json.c share: the handle's layout, the vocabulary lookup and a
 * growable id list. Nothing outside those files includes it.
 */
#ifndef LMOE_TOKENIZER_IMPL_H
#define LMOE_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

struct gguf_file;
struct lmoe_tok_json;

/* Most regexes any pre-tokenizer applies in sequence. */
#define LMOE_TOK_MAX_REGEX 8

/* A node of the added-token trie: siblings in a list, children below. */
struct lmoe_tok_trie {
    int32_t child, sibling; /* node index or -1 */
    int32_t id;             /* token ending here, or -1 */
    uint8_t byte;
    uint8_t always; /* 1: USER_DEFINED, matched even without parse_special */
};

struct lmoe_tokenizer {
    int model; /* enum lmoe_tokenizer_model */
    int n_vocab;

    /* Token texts, each NUL-terminated, back to back in one allocation. */
    char *text;
    uint32_t *off, *len; /* [n_vocab] */
    uint8_t *type;       /* [n_vocab] enum lmoe_token_type */
    float *score;        /* [n_vocab]; 0 where the file has none */

    /* Text -> id: open addressing, slot holds id + 1 (0 = empty). When two
     * ids share a text the later one wins, as in llama.cpp. */
    uint32_t *hash; /* [n_vocab] hash of each text */
    int32_t *map;
    uint32_t map_mask;

    /* BPE merges: (left id, right id) -> (rank, merged id). */
    uint64_t *merge_key; /* left << 32 | right; UINT64_MAX = empty */
    int32_t *merge_rank, *merge_id;
    uint32_t merge_mask;

    /* Per byte value: BPE, the token of its GPT-2 stand-in character; SPM,
     * the <0xNN> token (or the one-byte token). -1 if absent. */
    int32_t byte_id[256];

    /* Added tokens, for leftmost-longest matching in raw text. */
    struct lmoe_tok_trie *trie;
    int32_t n_trie, cap_trie;
    int32_t trie_root[256];

    /* Pre-tokenizer (BPE): regexes applied in sequence, compiled at open. */
    char pre[64];
    void *re[LMOE_TOK_MAX_REGEX]; /* pcre2_code_8 * */
    int n_re;
    int ignore_merges; /* a whole piece already in the vocabulary is one token */

    int32_t bos, eos, eot, unk;
    int add_bos, add_eos, add_space_prefix;

    /* Opened from tokenizer.json: its normalizer and pre-tokenizer pipeline,
     * which then encodes every stretch (tokenizer_json.c). NULL for GGUF. */
    struct lmoe_tok_json *json;
};

/* A growable list of ids. */
struct lmoe_ids {
    int32_t *v;
    int n, cap;
};

int lmoe_ids_push(struct lmoe_ids *ids, int32_t id);

/* The id whose text is exactly s[0..n), or -1. */
int32_t lmoe_tok_lookup(const struct lmoe_tokenizer *t, const char *s, size_t n);

/* Hashes the texts and builds the text -> id table and the added-token
 * trie, once off/len/text/type are filled (both loaders). */
int lmoe_tok_index(struct lmoe_tokenizer *t, char *err, size_t errlen);
/* Sets eot from a list of well-known texts when it is still -1. */
void lmoe_tok_guess_eot(struct lmoe_tokenizer *t);

/* Model-specific parts. _init reads the model's own keys and fills its
 * fields; _encode appends the ids of one stretch of raw text (no added
 * tokens inside) to out. */
int lmoe_tok_bpe_init(struct lmoe_tokenizer *t, const struct gguf_file *f,
                      char *err, size_t errlen);
void lmoe_tok_bpe_free(struct lmoe_tokenizer *t);
int lmoe_tok_bpe_encode(const struct lmoe_tokenizer *t, const char *s, size_t n,
                        struct lmoe_ids *out, char *err, size_t errlen);
size_t lmoe_tok_bpe_unmap(const char *piece, size_t n, char *buf, size_t buflen);
/* GPT-2's stand-in characters for s[0..n) into out (room for 2n bytes). */
size_t lmoe_tok_bpe_map(const char *s, size_t n, char *out);
/* byte_id[] from the vocabulary's stand-in characters. */
void lmoe_tok_bpe_byte_ids(struct lmoe_tokenizer *t);
/* The merge table: room for n merges, then each "a b" pair by rank (a pair
 * whose parts or result are not tokens is skipped; the first rank wins).
 * Both return 0 or LMOE_ERR_NOMEM. */
int lmoe_tok_bpe_merges_alloc(struct lmoe_tokenizer *t, size_t n_merges);
int lmoe_tok_bpe_merge_add(struct lmoe_tokenizer *t, const char *a, size_t na, const char *b,
                           size_t nb, int32_t rank);
/* Runs the merges on the symbols ids[0..n) and appends the result. */
int lmoe_tok_bpe_merge_ids(const struct lmoe_tokenizer *t, const int32_t *ids, size_t n,
                           struct lmoe_ids *out);

/* tokenizer.json: the encode of one stretch, and freeing the pipeline. */
int lmoe_tok_json_encode(const struct lmoe_tokenizer *t, const char *s, size_t n, int at_start,
                         struct lmoe_ids *out, char *err, size_t errlen);
void lmoe_tok_json_free(struct lmoe_tok_json *j);

int lmoe_tok_spm_init(struct lmoe_tokenizer *t, char *err, size_t errlen);
int lmoe_tok_spm_encode(const struct lmoe_tokenizer *t, const char *s, size_t n,
                        int prefix_space, struct lmoe_ids *out, char *err,
                        size_t errlen);

#endif
