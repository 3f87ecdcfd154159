/*
 * mix.c - llama-quantize's per-tensor type rules for its file types (see
 * mix.h), after llama.cpp's src/llama-quant.cpp: same rules, our code.
 *
 *  - Kept as they are: tensors with fewer than two dimensions (norms,
 *    biases), names not ending in "weight", "*_norm.weight", the router
 *    "ffn_gate_inp.weight", and a few small special tensors (position and
 *    token-type embeddings, conv1d, RWKV time-mix, T5 relative bias...).
 *  - output.weight (and token_embd.weight when the embeddings are tied) get
 *    Q6_K, or Q8_0 when the file type is Q8_0 or the row length is not a
 *    multiple of the base type's block.
 *  - The _M/_S/_L mixes and Q2_K move attn_v / attn_kv_b / attn_qkv,
 *    ffn_down (by layer: the first and last eighth and every third layer
 *    between get more bits), attn_output and, in 8-expert models, attn_k
 *    to larger types, as llama-quantize does for each file type.
 *  - A row length that is not a multiple of the chosen type's block falls
 *    back: Q2_K, Q3_K -> Q4_0; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0;
 *    and to F16 when even 32 does not divide it.
 * Not modelled: llama-quantize's imatrix, IQ types, the LLaMA-70B attn_v
 * rule and the GLM-5 tensor list.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "quant/mix.h"
#include "quant/quant.h"

static const struct lmoe_ftype ftypes[] = {
    {"F32", LMOE_FTYPE_ALL_F32, LMOE_DTYPE_F32, 0},
    {"F16", LMOE_FTYPE_F16, LMOE_DTYPE_F16, 0},
    {"BF16", LMOE_FTYPE_BF16, LMOE_DTYPE_BF16, 0},
    {"Q4_0", LMOE_FTYPE_Q4_0, LMOE_DTYPE_Q4_0, 0},
    {"Q4_1", LMOE_FTYPE_Q4_1, LMOE_DTYPE_Q4_1, 0},
    {"Q5_0", LMOE_FTYPE_Q5_0, LMOE_DTYPE_Q5_0, 0},
    {"Q5_1", LMOE_FTYPE_Q5_1, LMOE_DTYPE_Q5_1, 0},
    {"Q8_0", LMOE_FTYPE_Q8_0, LMOE_DTYPE_Q8_0, 0},
    {"Q2_K", LMOE_FTYPE_Q2_K, LMOE_DTYPE_Q2_K, 0},
    {"Q3_K_S", LMOE_FTYPE_Q3_K_S, LMOE_DTYPE_Q3_K, 0},
    {"Q3_K_M", LMOE_FTYPE_Q3_K_M, LMOE_DTYPE_Q3_K, 0},
    {"Q3_K_L", LMOE_FTYPE_Q3_K_L, LMOE_DTYPE_Q3_K, 0},
    {"Q4_K_S", LMOE_FTYPE_Q4_K_S, LMOE_DTYPE_Q4_K, 0},
    {"Q4_K_M", LMOE_FTYPE_Q4_K_M, LMOE_DTYPE_Q4_K, 0},
    {"Q5_K_S", LMOE_FTYPE_Q5_K_S, LMOE_DTYPE_Q5_K, 0},
    {"Q5_K_M", LMOE_FTYPE_Q5_K_M, LMOE_DTYPE_Q5_K, 0},
    {"Q6_K", LMOE_FTYPE_Q6_K, LMOE_DTYPE_Q6_K, 0},
    /* Bare K types: one type everywhere, as `llama-quantize --pure`. */
    {"Q3_K", LMOE_FTYPE_Q3_K_M, LMOE_DTYPE_Q3_K, 1},
    {"Q4_K", LMOE_FTYPE_Q4_K_M, LMOE_DTYPE_Q4_K, 1},
    {"Q5_K", LMOE_FTYPE_Q5_K_M, LMOE_DTYPE_Q5_K, 1},
};

/* ---- Which tensors may be quantized ----------------------------------- */

/* Substrings that keep a tensor as it is (llama-quant.cpp's list). */
static const char *const keep_substrings[] = {
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
};

/* Dimensions that count: trailing 1s do not (a [64, 1] tensor is 1-D). */
static int tensor_rank(int n_dims, const int64_t *ne) {
    int r = 1;
    for (int i = 1; i < n_dims; i++)
        if (ne[i] > 1) r = i + 1;
    return r;
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

int lmoe_mix_quantizable(const char *name, int n_dims, const int64_t *ne) {
    if (tensor_rank(n_dims, ne) < 2 || !ends_with(name, "weight")) return 0;
    for (size_t i = 0; i < sizeof keep_substrings / sizeof keep_substrings[0]; i++)
        if (strstr(name, keep_substrings[i])) return 0;
    /* BERT-style absolute position and token-type embeddings. */
    return strcmp(name, "position_embd.weight") && strcmp(name, "token_types.weight");
}

/* ---- Which type each tensor gets ---------------------------------------- */

enum category {
    CAT_TOKEN_EMBD,
    CAT_ATTN_Q,
    CAT_ATTN_V,
    CAT_ATTN_K,
    CAT_ATTN_QKV,
    CAT_ATTN_KV_B,
    CAT_ATTN_OUTPUT,
    CAT_FFN_UP,
    CAT_FFN_GATE,
    CAT_FFN_DOWN,
    CAT_OUTPUT,
    CAT_OTHER
};

static enum category category_of(const char *name) {
    if (!strcmp(name, "output.weight")) return CAT_OUTPUT;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "per_layer_token_embd.weight")) return CAT_TOKEN_EMBD;
    static const struct {
        const char *sub;
        enum category c;
    } subs[] = {
        {"attn_qkv.weight", CAT_ATTN_QKV},
        {"attn_kv_b.weight", CAT_ATTN_KV_B},
        {"attn_v.weight", CAT_ATTN_V},
        {"attn_k.weight", CAT_ATTN_K},
        {"attn_q.weight", CAT_ATTN_Q},
        {"attn_output.weight", CAT_ATTN_OUTPUT},
        {"ffn_up", CAT_FFN_UP},
        {"ffn_gate", CAT_FFN_GATE},
        {"ffn_down", CAT_FFN_DOWN},
    };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (strstr(name, subs[i].sub)) return subs[i].c;
    return CAT_OTHER;
}

/* Tensors like attn_v, which llama-quantize treats as most sensitive. */
static int is_attn_v_like(enum category c) { return c == CAT_ATTN_V || c == CAT_ATTN_QKV || c == CAT_ATTN_KV_B; }

/* llama-quantize's "more bits" layers: the first and last eighth, and every
 * third layer in between. */
static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* The layer of an FFN tensor: from its name in MoE models (experts need not
 * be stored in layer order), else the running count. -1 if it has none. */
static int ffn_layer(const struct lmoe_mix *p, const char *name, int counter) {
    if (p->n_expert <= 1) return counter;
    int layer = -1;
    if (sscanf(name, "blk.%d.", &layer) != 1 || layer < 0 || layer >= p->n_layer) return -1;
    return layer;
}

static int block_of(uint32_t type) { return lmoe_dtype_get(type)->block_size; }

/* The mix's choice for one quantizable tensor (llama_tensor_get_type_impl,
 * for the file types above). Returns LMOE_DTYPE_COUNT when an FFN tensor of
 * an MoE model has no usable layer number. */
static uint32_t mix_type(struct lmoe_mix *p, uint32_t t, const char *name, int64_t ne0, enum category c) {
    const int ft = p->ft->ftype;
    if (c == CAT_OUTPUT || (p->tied && c == CAT_TOKEN_EMBD)) {
        if (p->falcon || ne0 % block_of(t))
            t = LMOE_DTYPE_Q8_0;
        else if (t != LMOE_DTYPE_Q8_0)
            t = LMOE_DTYPE_Q6_K;
    } else if (c == CAT_TOKEN_EMBD) {
        /* untied embeddings keep the base type */
    } else if (is_attn_v_like(c)) {
        if (ft == LMOE_FTYPE_Q2_K)
            t = p->n_gqa >= 4 ? LMOE_DTYPE_Q4_K : LMOE_DTYPE_Q3_K;
        else if (ft == LMOE_FTYPE_Q3_K_M)
            t = p->i_attn_v < 2 ? LMOE_DTYPE_Q5_K : LMOE_DTYPE_Q4_K;
        else if (ft == LMOE_FTYPE_Q3_K_L)
            t = LMOE_DTYPE_Q5_K;
        else if ((ft == LMOE_FTYPE_Q4_K_M || ft == LMOE_FTYPE_Q5_K_M) && use_more_bits(p->i_attn_v, p->n_attn_v))
            t = LMOE_DTYPE_Q6_K;
        else if (ft == LMOE_FTYPE_Q4_K_S && p->i_attn_v < 4)
            t = LMOE_DTYPE_Q5_K;
        if (p->n_expert == 8) t = LMOE_DTYPE_Q8_0;
        p->i_attn_v++;
    } else if (c == CAT_ATTN_K) {
        if (p->n_expert == 8) t = LMOE_DTYPE_Q8_0;
    } else if (c == CAT_FFN_DOWN) {
        const int i = ffn_layer(p, name, p->i_ffn_down), n = p->n_layer;
        if (i < 0) return LMOE_DTYPE_COUNT;
        if (ft == LMOE_FTYPE_Q2_K)
            t = LMOE_DTYPE_Q3_K;
        else if (ft == LMOE_FTYPE_Q3_K_M)
            t = i < n / 16 ? LMOE_DTYPE_Q5_K : !p->falcon || use_more_bits(i, n) ? LMOE_DTYPE_Q4_K : LMOE_DTYPE_Q3_K;
        else if (ft == LMOE_FTYPE_Q3_K_L)
            t = p->falcon ? LMOE_DTYPE_Q4_K : LMOE_DTYPE_Q5_K;
        else if (ft == LMOE_FTYPE_Q4_K_M) {
            if (p->falcon)
                t = i < n / 16 ? LMOE_DTYPE_Q6_K : use_more_bits(i, n) ? LMOE_DTYPE_Q5_K : LMOE_DTYPE_Q4_K;
            else if (use_more_bits(i, n))
                t = LMOE_DTYPE_Q6_K;
        } else if (ft == LMOE_FTYPE_Q5_K_M && use_more_bits(i, n))
            t = LMOE_DTYPE_Q6_K;
        else if (ft == LMOE_FTYPE_Q4_K_S && !p->falcon && i < n / 8)
            t = LMOE_DTYPE_Q5_K;
        p->i_ffn_down++;
    } else if (c == CAT_ATTN_OUTPUT) {
        if (!p->falcon && p->n_expert == 8) {
            if (ft == LMOE_FTYPE_Q2_K || ft == LMOE_FTYPE_Q3_K_S || ft == LMOE_FTYPE_Q3_K_M || ft == LMOE_FTYPE_Q4_K_S || ft == LMOE_FTYPE_Q4_K_M)
                t = LMOE_DTYPE_Q5_K;
        } else if (!p->falcon) {
            if (ft == LMOE_FTYPE_Q2_K)
                t = LMOE_DTYPE_Q3_K;
            else if (ft == LMOE_FTYPE_Q3_K_M)
                t = LMOE_DTYPE_Q4_K;
            else if (ft == LMOE_FTYPE_Q3_K_L)
                t = LMOE_DTYPE_Q5_K;
        } else if (ft == LMOE_FTYPE_Q3_K_L) {
            t = LMOE_DTYPE_Q4_K;
        }
    } else if (c == CAT_ATTN_QKV) {
        if (ft == LMOE_FTYPE_Q3_K_M || ft == LMOE_FTYPE_Q3_K_L)
            t = LMOE_DTYPE_Q4_K;
        else if (ft == LMOE_FTYPE_Q4_K_M)
            t = LMOE_DTYPE_Q5_K;
        else if (ft == LMOE_FTYPE_Q5_K_M)
            t = LMOE_DTYPE_Q6_K;
    } else if (c == CAT_FFN_GATE || c == CAT_FFN_UP) {
        int *counter = c == CAT_FFN_GATE ? &p->i_ffn_gate : &p->i_ffn_up;
        if (ffn_layer(p, name, *counter) < 0) return LMOE_DTYPE_COUNT;
        (*counter)++;
    }
    return t;
}

/* A type whose block does not divide the row length falls back to a
 * 32-block type, then to F16 (llama-quant.cpp's tensor_type_fallback). */
static uint32_t fallback_type(uint32_t t, int64_t ncols) {
    if (ncols % block_of(t) == 0) return t;
    uint32_t r = t;
    switch (t) {
    case LMOE_DTYPE_Q2_K:
    case LMOE_DTYPE_Q3_K:
        r = LMOE_DTYPE_Q4_0;
        break;
    case LMOE_DTYPE_Q4_K:
        r = LMOE_DTYPE_Q5_0;
        break;
    case LMOE_DTYPE_Q5_K:
        r = LMOE_DTYPE_Q5_1;
        break;
    case LMOE_DTYPE_Q6_K:
        r = LMOE_DTYPE_Q8_0;
        break;
    default:
        break;
    }
    if (ncols % block_of(r)) r = LMOE_DTYPE_F16;
    return r;
}


/* ---- The interface of mix.h ---------------------------------------------- */

const struct lmoe_ftype *lmoe_ftype_find(const char *name) {
    for (size_t i = 0; i < sizeof ftypes / sizeof ftypes[0]; i++)
        if (!strcasecmp(name, ftypes[i].name)) return &ftypes[i];
    return NULL;
}

void lmoe_mix_init(struct lmoe_mix *m, const struct lmoe_ftype *ft, int pure, const char *arch, int n_layer,
                   int n_expert, int n_head, int n_head_kv) {
    memset(m, 0, sizeof *m);
    m->ft = ft;
    m->pure = pure || ft->pure;
    m->falcon = !strcmp(arch, "falcon");
    m->tied = 1; /* until an output.weight is counted */
    m->n_layer = n_layer;
    m->n_expert = n_expert;
    m->n_gqa = n_head_kv > 0 ? n_head / n_head_kv : 1;
}

void lmoe_mix_count(struct lmoe_mix *m, const char *name) {
    const enum category c = category_of(name);
    if (is_attn_v_like(c)) m->n_attn_v++;
    if (c == CAT_OUTPUT) m->tied = 0;
}

static int is_float_type(uint32_t t) { return t == LMOE_DTYPE_F32 || t == LMOE_DTYPE_F16 || t == LMOE_DTYPE_BF16; }

uint32_t lmoe_mix_type(struct lmoe_mix *m, const char *name, int n_dims, const int64_t *ne, uint32_t src_type,
                       uint32_t *fell_back_from) {
    if (fell_back_from) *fell_back_from = LMOE_DTYPE_COUNT;
    if (!lmoe_mix_quantizable(name, n_dims, ne)) return src_type;
    uint32_t t = m->ft->base;
    if (is_float_type(t)) return t;
    if (!m->pure) t = mix_type(m, t, name, ne[0], category_of(name));
    if (t == LMOE_DTYPE_COUNT) return t;
    const uint32_t r = fallback_type(t, ne[0]);
    if (r != t && fell_back_from) *fell_back_from = t;
    return r;
}

static int tensor_layer(const char *name) {
    int layer = -1;
    return sscanf(name, "blk.%d.", &layer) == 1 ? layer : -1;
}

int lmoe_mix_cmp_names(const char *a, const char *b) {
    const int la = tensor_layer(a), lb = tensor_layer(b);
    if (la != lb) return la < lb ? -1 : 1;
    return strcmp(a, b);
}
