/*
 * tokenizer_spm.c - SentencePiece BPE ("llama" in GGUF), as llama.cpp runs
 * it for Llama 1/2, Mistral v1 and the llama2.c stories models.
 *
 * Spaces become U+2581 ("▁"), and one is prepended at the start of the text
 * and after each added token when add_space_prefix is on. The text is cut
 * into UTF-8 characters; then, repeatedly, the adjacent pair whose joined
 * text is the vocabulary token with the highest score is merged (ties: the
 * leftmost). What is left is looked up; a character outside the vocabulary
 * becomes its bytes' <0xNN> tokens (SentencePiece's byte fallback).
 *
 * Only NORMAL and USER_DEFINED (and untyped) tokens take part: CONTROL ones
 * such as "<s>" and the <0xNN> BYTE tokens are never built from their
 * spelling, as in SentencePiece itself (llama.cpp would build them).
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "leanmoe.h"
#include "tokenizer_impl.h"

int lmoe_tok_spm_init(struct lmoe_tokenizer *t, char *err, size_t errlen) {
    (void)err;
    (void)errlen;
    strcpy(t->pre, "default");
    for (int b = 0; b < 256; b++) {
        char hex[7];
        static const char digits[] = "0123456789ABCDEF";
        memcpy(hex, "<0x", 3);
        hex[3] = digits[b >> 4];
        hex[4] = digits[b & 15];
        hex[5] = '>';
        hex[6] = 0;
        t->byte_id[b] = lmoe_tok_lookup(t, hex, 6);
        if (t->byte_id[b] < 0) { /* some vocabularies spell bytes raw */
            char c = (char)b;
            t->byte_id[b] = lmoe_tok_lookup(t, &c, 1);
        }
    }
    return 0;
}

/* The token for text s[0..n) if it may come out of merging, else -1. */
static int32_t spm_token(const struct lmoe_tokenizer *t, const char *s, size_t n) {
    int32_t id = lmoe_tok_lookup(t, s, n);
    if (id < 0) return -1;
    int ty = t->type[id];
    return ty == LMOE_TOKEN_TYPE_NORMAL || ty == LMOE_TOKEN_TYPE_USER_DEFINED ||
                   ty == LMOE_TOKEN_TYPE_UNDEFINED
               ? id
               : -1;
}

struct spm_sym {
    uint32_t start, n; /* bytes of the escaped text; n = 0 once merged away */
    int32_t prev, next;
};

struct spm_cand {
    float score;
    int32_t left;
    uint32_t size; /* joined length, to spot a stale entry */
};

/* Max-heap on score, then min on left. */
static int spm_before(const struct spm_cand *x, const struct spm_cand *y) {
    return x->score > y->score || (x->score == y->score && x->left < y->left);
}

struct spm_work {
    const char *buf;
    struct spm_sym *syms;
    struct spm_cand *heap;
    size_t n_heap;
};

static void spm_push(struct spm_work *w, struct spm_cand c) {
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!spm_before(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static struct spm_cand spm_pop(struct spm_work *w) {
    struct spm_cand top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && spm_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!spm_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

/* Queues the pair (l, next of l) if its joined text is a token. */
static void spm_try(const struct lmoe_tokenizer *t, struct spm_work *w, int32_t l) {
    if (l < 0 || w->syms[l].next < 0) return;
    const struct spm_sym *a = &w->syms[l], *b = &w->syms[a->next];
    uint32_t size = a->n + b->n;
    int32_t id = spm_token(t, w->buf + a->start, size);
    if (id < 0) return;
    struct spm_cand c = {t->score[id], l, size};
    spm_push(w, c);
}

int lmoe_tok_spm_encode(const struct lmoe_tokenizer *t, const char *s, size_t n,
                        int prefix_space, struct lmoe_ids *out, char *err, size_t errlen) {
    /* Escape: every space (and the prefix) becomes the 3 bytes of U+2581. */
    size_t spaces = prefix_space ? 1 : 0;
    for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    size_t m = n + 2 * spaces + (prefix_space ? 1 : 0);
    char *buf = malloc(m ? m : 1);
    struct spm_sym *syms = malloc((m ? m : 1) * sizeof(*syms));
    struct spm_cand *heap = malloc((3 * m + 1) * sizeof(*heap));
    int rc = 0;
    if (!buf || !syms || !heap) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "tokenizer: out of memory");
        goto done;
    }
    size_t k = 0;
    if (prefix_space) {
        memcpy(buf, "\xe2\x96\x81", 3);
        k = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(buf + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            buf[k++] = s[i];
        }
    }

    /* One symbol per character (the text is valid UTF-8). */
    int32_t ns = 0;
    for (size_t i = 0; i < k; ns++) {
        uint8_t c = (uint8_t)buf[i];
        uint32_t len = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        if (len > k - i) len = (uint32_t)(k - i);
        syms[ns].start = (uint32_t)i;
        syms[ns].n = len;
        syms[ns].prev = ns - 1;
        syms[ns].next = i + len < k ? ns + 1 : -1;
        i += len;
    }
    struct spm_work w = {buf, syms, heap, 0};
    for (int32_t i = 0; i + 1 < ns; i++) spm_try(t, &w, i);
    while (w.n_heap) {
        struct spm_cand c = spm_pop(&w);
        struct spm_sym *l = &syms[c.left];
        /* Stale if the left symbol was absorbed, or either side has grown
         * since (the joined length no longer matches). */
        if (l->n == 0 || l->next < 0 || l->n + syms[l->next].n != c.size) continue;
        struct spm_sym *r = &syms[l->next];
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) syms[r->next].prev = c.left;
        spm_try(t, &w, l->prev);
        spm_try(t, &w, c.left);
    }

    for (int32_t i = ns ? 0 : -1; i >= 0 && rc == 0; i = syms[i].next) {
        int32_t id = spm_token(t, buf + syms[i].start, syms[i].n);
        if (id >= 0) {
            rc = lmoe_ids_push(out, id);
            continue;
        }
        /* Byte fallback; a vocabulary without byte tokens gets one <unk>. */
        int missing = 0;
        for (uint32_t j = 0; j < syms[i].n; j++) missing |= t->byte_id[(uint8_t)buf[syms[i].start + j]] < 0;
        if (missing) {
            if (t->unk >= 0) rc = lmoe_ids_push(out, t->unk);
            continue;
        }
        for (uint32_t j = 0; j < syms[i].n && rc == 0; j++)
            rc = lmoe_ids_push(out, t->byte_id[(uint8_t)buf[syms[i].start + j]]);
    }
    if (rc) rc = lmoe_errf(err, errlen, rc, "tokenizer: out of memory");
done:
    free(buf);
    free(syms);
    free(heap);
    return rc;
}
