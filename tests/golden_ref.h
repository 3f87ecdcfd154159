/*
 * golden_ref.h - reading the .ref files of tests/golden (logits and greedy
 * continuations made by transformers) and comparing logits with them;
 * shared by the GGUF and the Hugging Face folder suites.
 */
#ifndef LMOE_GOLDEN_REF_H
#define LMOE_GOLDEN_REF_H

#include <stddef.h>
#include <stdint.h>

#include "leanmoe.h"

/* The fast kernels quantize activations to 8 bits for quantized weights,
 * as llama.cpp does. On tiny random models that moves logits by a few
 * percent and can flip a near-tie expert choice at a position, so the
 * fast path is held to the distribution, not to 1e-3: the median KL per
 * position against the reference below this (one flipped position does
 * not dominate a median), and the same top token at most positions. */
#define FAST_MAX_MEDIAN_KL 0.01
#define FAST_MIN_TOP1 0.75

/* A .ref file: "LMRF", u32 n_ids, n_vocab, n_gen, i32 ids[n_ids],
 * f32 logits[n_ids][n_vocab], i32 gen[n_gen] (little-endian). */
struct ref {
    uint32_t n_ids, n_vocab, n_gen;
    int32_t *ids, *gen;
    float *logits;
    void *buf; /* owns everything above: free(buf) */
};

/* 0, or -1 if the file is missing or malformed. */
int ref_load(const char *path, struct ref *r);

/* max |a - b| / max |b| over n values (NaN counts as a failure). */
double rel_err(const float *a, const float *b, size_t n);

/* Index of the largest value, the lowest on ties. */
int argmax(const float *x, int n);

/* Median over positions of KL(p_ref || p_got), and the share of positions
 * whose top token agrees. */
void kl_top1(const float *got, const float *ref, int n_pos, int n_vocab, double *kl, double *top1);

/* Runs r's prompt in a fresh context with a kv_type cache: as one batch,
 * or (decode) one token at a time; rows receive every position's logits.
 * With keep, the context is handed back open for a continuation. */
int run_prompt(lmoe_engine *e, int kv_type, const struct ref *r, int decode, float *rows, lmoe_ctx **keep);

#endif
