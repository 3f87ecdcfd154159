/*
 * tokenizer_impl.h - what tokenizer.c, tokenizer_bpe.c and tokenizer_spm.c
 * share: the handle's layout, the vocabulary lookup and a growable id list.
 * Nothing outside those three files includes it.
 */
#ifndef LMOE_TOKENIZER_IMPL_H
#define LMOE_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

struct gguf_file;

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
};

/* A growable list of ids. */
struct lmoe_ids {
    int32_t *v;
    int n, cap;
};

int lmoe_ids_push(struct lmoe_ids *ids, int32_t id);

/* The id whose text is exactly s[0..n), or -1. */
int32_t lmoe_tok_lookup(const struct lmoe_tokenizer *t, const char *s, size_t n);

/* Model-specific parts. _init reads the model's own keys and fills its
 * fields; _encode appends the ids of one stretch of raw text (no added
 * tokens inside) to out. */
int lmoe_tok_bpe_init(struct lmoe_tokenizer *t, const struct gguf_file *f,
                      char *err, size_t errlen);
void lmoe_tok_bpe_free(struct lmoe_tokenizer *t);
int lmoe_tok_bpe_encode(const struct lmoe_tokenizer *t, const char *s, size_t n,
                        struct lmoe_ids *out, char *err, size_t errlen);
size_t lmoe_tok_bpe_unmap(const char *piece, size_t n, char *buf, size_t buflen);

int lmoe_tok_spm_init(struct lmoe_tokenizer *t, char *err, size_t errlen);
int lmoe_tok_spm_encode(const struct lmoe_tokenizer *t, const char *s, size_t n,
                        int prefix_space, struct lmoe_ids *out, char *err,
                        size_t errlen);

#endif
