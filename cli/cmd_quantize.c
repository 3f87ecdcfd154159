/*
 * cmd_quantize.c - `leanmoe quantize`: a GGUF file of F32/F16/BF16 weights
 * rewritten with quantized ones, as llama-quantize does it.
 *
 *   leanmoe quantize model-f16.gguf model-q4_k_m.gguf Q4_K_M [--pure] [-t N]
 *
 * TYPE is a llama-quantize file type: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0
 * Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K (any case).
 * Each tensor gets the type llama-quantize would give it (below); --pure
 * gives every quantizable tensor the file type's base type instead, as
 * llama-quantize --pure does, and the bare names Q3_K, Q4_K and Q5_K mean
 * `--pure Q3_K_M`, `--pure Q4_K_M` and `--pure Q5_K_M`.
 *
 * Per-tensor choices, after llama.cpp's src/llama-quant.cpp (same rules,
 * our code):
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
 *
 * The output keeps every metadata pair of the input, sets
 * general.file_type to the llama.cpp file type id and
 * general.quantization_version to 2, drops split.* keys, and lists tensors
 * in llama-quantize's order (by layer, then by name). Tensors are converted
 * chunk by chunk while the file is written, on -t threads; an input tensor
 * that is already quantized is copied if its type stays, and refused if it
 * would have to change (requantizing loses precision twice).
 *
 * This command reaches below leanmoe.h, to the GGUF reader and writer, the
 * quantizers and the thread pool: it is a file tool, not an engine client.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "format/gguf.h"
#include "format/gguf_write.h"
#include "quant/quant.h"
#include "threadpool.h"

/* general.quantization_version that llama.cpp writes (GGML_QNT_VERSION). */
#define QUANT_VERSION 2

/* llama.cpp's llama_ftype ids (general.file_type). */
enum ftype {
    FT_ALL_F32 = 0,
    FT_F16 = 1,
    FT_Q4_0 = 2,
    FT_Q4_1 = 3,
    FT_Q8_0 = 7,
    FT_Q5_0 = 8,
    FT_Q5_1 = 9,
    FT_Q2_K = 10,
    FT_Q3_K_S = 11,
    FT_Q3_K_M = 12,
    FT_Q3_K_L = 13,
    FT_Q4_K_S = 14,
    FT_Q4_K_M = 15,
    FT_Q5_K_S = 16,
    FT_Q5_K_M = 17,
    FT_Q6_K = 18,
    FT_BF16 = 32,
};

static const struct ftype_def {
    const char *name;
    int ftype;
    uint32_t base; /* the type most tensors get */
    int pure;      /* 1: every quantizable tensor gets base */
} ftypes[] = {
    {"F32", FT_ALL_F32, LMOE_DTYPE_F32, 0},
    {"F16", FT_F16, LMOE_DTYPE_F16, 0},
    {"BF16", FT_BF16, LMOE_DTYPE_BF16, 0},
    {"Q4_0", FT_Q4_0, LMOE_DTYPE_Q4_0, 0},
    {"Q4_1", FT_Q4_1, LMOE_DTYPE_Q4_1, 0},
    {"Q5_0", FT_Q5_0, LMOE_DTYPE_Q5_0, 0},
    {"Q5_1", FT_Q5_1, LMOE_DTYPE_Q5_1, 0},
    {"Q8_0", FT_Q8_0, LMOE_DTYPE_Q8_0, 0},
    {"Q2_K", FT_Q2_K, LMOE_DTYPE_Q2_K, 0},
    {"Q3_K_S", FT_Q3_K_S, LMOE_DTYPE_Q3_K, 0},
    {"Q3_K_M", FT_Q3_K_M, LMOE_DTYPE_Q3_K, 0},
    {"Q3_K_L", FT_Q3_K_L, LMOE_DTYPE_Q3_K, 0},
    {"Q4_K_S", FT_Q4_K_S, LMOE_DTYPE_Q4_K, 0},
    {"Q4_K_M", FT_Q4_K_M, LMOE_DTYPE_Q4_K, 0},
    {"Q5_K_S", FT_Q5_K_S, LMOE_DTYPE_Q5_K, 0},
    {"Q5_K_M", FT_Q5_K_M, LMOE_DTYPE_Q5_K, 0},
    {"Q6_K", FT_Q6_K, LMOE_DTYPE_Q6_K, 0},
    /* Bare K types: one type everywhere, as `llama-quantize --pure`. */
    {"Q3_K", FT_Q3_K_M, LMOE_DTYPE_Q3_K, 1},
    {"Q4_K", FT_Q4_K_M, LMOE_DTYPE_Q4_K, 1},
    {"Q5_K", FT_Q5_K_M, LMOE_DTYPE_Q5_K, 1},
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
static int tensor_rank(const struct gguf_tensor *t) {
    int r = 1;
    for (int i = 1; i < GGUF_MAX_DIMS; i++)
        if (t->ne[i] > 1) r = i + 1;
    return r;
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

static int allows_quantization(const struct gguf_tensor *t) {
    if (tensor_rank(t) < 2 || !ends_with(t->name, "weight")) return 0;
    for (size_t i = 0; i < sizeof keep_substrings / sizeof keep_substrings[0]; i++)
        if (strstr(t->name, keep_substrings[i])) return 0;
    /* BERT-style absolute position and token-type embeddings. */
    return strcmp(t->name, "position_embd.weight") && strcmp(t->name, "token_types.weight");
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

/* What the choice depends on besides the tensor: model shape and counters
 * that advance as tensors are visited in file order. */
struct policy {
    int ftype;
    int falcon, tied, n_expert, n_gqa, n_layer;
    int n_attn_v, i_attn_v, i_ffn_down, i_ffn_gate, i_ffn_up;
};

/* llama-quantize's "more bits" layers: the first and last eighth, and every
 * third layer in between. */
static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* The layer of an FFN tensor: from its name in MoE models (experts need not
 * be stored in layer order), else the running count. -1 if it has none. */
static int ffn_layer(const struct policy *p, const char *name, int counter) {
    if (p->n_expert <= 1) return counter;
    int layer = -1;
    if (sscanf(name, "blk.%d.", &layer) != 1 || layer < 0 || layer >= p->n_layer) return -1;
    return layer;
}

static int block_of(uint32_t type) { return lmoe_dtype_get(type)->block_size; }

/* The mix's choice for one quantizable tensor (llama_tensor_get_type_impl,
 * for the file types above). Returns LMOE_DTYPE_COUNT when an FFN tensor of
 * an MoE model has no usable layer number. */
static uint32_t mix_type(struct policy *p, uint32_t t, const struct gguf_tensor *ten, enum category c) {
    const int ft = p->ftype;
    if (c == CAT_OUTPUT || (p->tied && c == CAT_TOKEN_EMBD)) {
        if (p->falcon || ten->ne[0] % block_of(t))
            t = LMOE_DTYPE_Q8_0;
        else if (t != LMOE_DTYPE_Q8_0)
            t = LMOE_DTYPE_Q6_K;
    } else if (c == CAT_TOKEN_EMBD) {
        /* untied embeddings keep the base type */
    } else if (is_attn_v_like(c)) {
        if (ft == FT_Q2_K)
            t = p->n_gqa >= 4 ? LMOE_DTYPE_Q4_K : LMOE_DTYPE_Q3_K;
        else if (ft == FT_Q3_K_M)
            t = p->i_attn_v < 2 ? LMOE_DTYPE_Q5_K : LMOE_DTYPE_Q4_K;
        else if (ft == FT_Q3_K_L)
            t = LMOE_DTYPE_Q5_K;
        else if ((ft == FT_Q4_K_M || ft == FT_Q5_K_M) && use_more_bits(p->i_attn_v, p->n_attn_v))
            t = LMOE_DTYPE_Q6_K;
        else if (ft == FT_Q4_K_S && p->i_attn_v < 4)
            t = LMOE_DTYPE_Q5_K;
        if (p->n_expert == 8) t = LMOE_DTYPE_Q8_0;
        p->i_attn_v++;
    } else if (c == CAT_ATTN_K) {
        if (p->n_expert == 8) t = LMOE_DTYPE_Q8_0;
    } else if (c == CAT_FFN_DOWN) {
        const int i = ffn_layer(p, ten->name, p->i_ffn_down), n = p->n_layer;
        if (i < 0) return LMOE_DTYPE_COUNT;
        if (ft == FT_Q2_K)
            t = LMOE_DTYPE_Q3_K;
        else if (ft == FT_Q3_K_M)
            t = i < n / 16 ? LMOE_DTYPE_Q5_K : !p->falcon || use_more_bits(i, n) ? LMOE_DTYPE_Q4_K : LMOE_DTYPE_Q3_K;
        else if (ft == FT_Q3_K_L)
            t = p->falcon ? LMOE_DTYPE_Q4_K : LMOE_DTYPE_Q5_K;
        else if (ft == FT_Q4_K_M) {
            if (p->falcon)
                t = i < n / 16 ? LMOE_DTYPE_Q6_K : use_more_bits(i, n) ? LMOE_DTYPE_Q5_K : LMOE_DTYPE_Q4_K;
            else if (use_more_bits(i, n))
                t = LMOE_DTYPE_Q6_K;
        } else if (ft == FT_Q5_K_M && use_more_bits(i, n))
            t = LMOE_DTYPE_Q6_K;
        else if (ft == FT_Q4_K_S && !p->falcon && i < n / 8)
            t = LMOE_DTYPE_Q5_K;
        p->i_ffn_down++;
    } else if (c == CAT_ATTN_OUTPUT) {
        if (!p->falcon && p->n_expert == 8) {
            if (ft == FT_Q2_K || ft == FT_Q3_K_S || ft == FT_Q3_K_M || ft == FT_Q4_K_S || ft == FT_Q4_K_M)
                t = LMOE_DTYPE_Q5_K;
        } else if (!p->falcon) {
            if (ft == FT_Q2_K)
                t = LMOE_DTYPE_Q3_K;
            else if (ft == FT_Q3_K_M)
                t = LMOE_DTYPE_Q4_K;
            else if (ft == FT_Q3_K_L)
                t = LMOE_DTYPE_Q5_K;
        } else if (ft == FT_Q3_K_L) {
            t = LMOE_DTYPE_Q4_K;
        }
    } else if (c == CAT_ATTN_QKV) {
        if (ft == FT_Q3_K_M || ft == FT_Q3_K_L)
            t = LMOE_DTYPE_Q4_K;
        else if (ft == FT_Q4_K_M)
            t = LMOE_DTYPE_Q5_K;
        else if (ft == FT_Q5_K_M)
            t = LMOE_DTYPE_Q6_K;
    } else if (c == CAT_FFN_GATE || c == CAT_FFN_UP) {
        int *counter = c == CAT_FFN_GATE ? &p->i_ffn_gate : &p->i_ffn_up;
        if (ffn_layer(p, ten->name, *counter) < 0) return LMOE_DTYPE_COUNT;
        (*counter)++;
    }
    return t;
}

/* A type whose block does not divide the row length falls back to a
 * 32-block type, then to F16 (llama-quant.cpp's tensor_type_fallback). */
static uint32_t fallback_type(uint32_t t, int64_t ncols, const char *name) {
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
    fprintf(stderr, "leanmoe: %s: %" PRId64 " columns are not a multiple of %d (%s): using %s\n", name, ncols,
            block_of(t), lmoe_dtype_get(t)->name, lmoe_dtype_get(r)->name);
    return r;
}

/* ---- Reading the model's shape from metadata ------------------------------ */

/* A u32 key, or element 0 of an array key (per-layer head counts); def if
 * absent. */
static uint32_t meta_u32(const struct gguf_file *f, const char *arch, const char *suffix, uint32_t def) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return def;
    if (kv->type == GGUF_TYPE_ARRAY) {
        if (kv->arr_n == 0 || kv->arr_type == GGUF_TYPE_STRING || kv->arr_type == GGUF_TYPE_ARRAY) return def;
        double v = gguf_arr_num(kv, 0);
        return v >= 0 && v < 4294967296.0 ? (uint32_t)v : def;
    }
    uint32_t v;
    char err[128];
    return gguf_get_u32(f, key, &v, err, sizeof err) ? def : v;
}

/* ---- Converting tensor data while the file is written --------------------- */

/* Elements one worker converts per step: 256 super-blocks. */
#define QUANT_PIECE_ELEMS (256 * LMOE_QK_K)

struct out_tensor {
    const struct gguf_tensor *src;
    uint32_t type; /* output type */
};

struct convert_job {
    struct out_tensor *ot; /* indexed by the writer's tensor index */
    struct lmoe_pool *pool;
    float *scratch; /* QUANT_PIECE_ELEMS floats per thread */
    /* the chunk being filled */
    const struct out_tensor *cur;
    uint8_t *dst;
    int64_t block0; /* first output block of the chunk */
};

/* Converts output blocks [begin, end) of the current chunk: source elements
 * to f32 through the source type's dequantizer, then the quantizer. */
static void convert_range(void *arg, int begin, int end, int ith) {
    struct convert_job *j = arg;
    const struct lmoe_dtype_traits *st = lmoe_dtype_get(j->cur->src->type);
    const struct lmoe_dtype_traits *dt = lmoe_dtype_get(j->cur->type);
    float *buf = j->scratch + (size_t)ith * QUANT_PIECE_ELEMS;
    const int per_piece = QUANT_PIECE_ELEMS / dt->block_size;
    for (int b = begin; b < end; b += per_piece) {
        const int nb = end - b < per_piece ? end - b : per_piece;
        const int64_t e0 = (j->block0 + b) * dt->block_size, ne = (int64_t)nb * dt->block_size;
        /* Float sources have block size 1, so any element offset is a block. */
        st->dequantize((const uint8_t *)j->cur->src->data + e0 * st->type_size, buf, ne);
        lmoe_quantize(j->cur->type, buf, j->dst + (size_t)b * dt->type_size, ne);
    }
}

static int fill_tensor(void *ctx, int64_t index, void *dst, uint64_t offset, size_t nbytes) {
    struct convert_job *j = ctx;
    j->cur = &j->ot[index];
    const struct lmoe_dtype_traits *dt = lmoe_dtype_get(j->cur->type);
    j->dst = dst;
    j->block0 = (int64_t)(offset / (uint64_t)dt->type_size);
    const int n_blocks = (int)(nbytes / (size_t)dt->type_size);
    const int min_chunk = dt->block_size >= LMOE_QK_K ? 16 : 128;
    lmoe_pool_for(j->pool, n_blocks, min_chunk, convert_range, j);
    return 0;
}

/* llama-quantize's tensor order: by layer number (non-layer tensors
 * first), then by name. */
static int tensor_layer(const char *name) {
    int layer = -1;
    return sscanf(name, "blk.%d.", &layer) == 1 ? layer : -1;
}

static int cmp_tensor_order(const void *a, const void *b) {
    const struct gguf_tensor *x = *(const struct gguf_tensor *const *)a, *y = *(const struct gguf_tensor *const *)b;
    const int lx = tensor_layer(x->name), ly = tensor_layer(y->name);
    if (lx != ly) return lx < ly ? -1 : 1;
    return strcmp(x->name, y->name);
}

static const struct ftype_def *find_ftype(const char *name) {
    for (size_t i = 0; i < sizeof ftypes / sizeof ftypes[0]; i++)
        if (!strcasecmp(name, ftypes[i].name)) return &ftypes[i];
    return NULL;
}

static int is_float_type(uint32_t t) { return t == LMOE_DTYPE_F32 || t == LMOE_DTYPE_F16 || t == LMOE_DTYPE_BF16; }

int cmd_quantize(const struct args *a) {
    const char *in = a->text ? a->text : a->model;
    const char *out = a->n_pos > 0 ? a->pos[0] : a->out;
    const char *type = a->n_pos > 1 ? a->pos[1] : NULL;
    if (!in || !out || !type || a->n_pos > 2) {
        fprintf(stderr, "leanmoe: usage: leanmoe quantize IN.gguf OUT.gguf TYPE [--pure] [-t N]\n");
        return 1;
    }
    const struct ftype_def *fd = find_ftype(type);
    if (!fd) {
        fprintf(stderr,
                "leanmoe: unknown quantization type '%s' (F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K "
                "Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q3_K Q4_K Q5_K)\n",
                type);
        return 1;
    }
    const int pure = fd->pure || a->quant_pure;
    char err[512];
    struct gguf_file *f;
    if (gguf_open(&f, in, err, sizeof err)) {
        fprintf(stderr, "leanmoe: %s\n", err);
        return 1;
    }
    int rc = 1;
    struct gguf_writer *w = NULL;
    struct lmoe_pool *pool = NULL;
    struct convert_job job = {0};
    const struct gguf_tensor **order = malloc(sizeof(*order) * (f->n_tensors ? f->n_tensors : 1));
    job.ot = malloc(sizeof(*job.ot) * (f->n_tensors ? f->n_tensors : 1));
    if (!order || !job.ot || gguf_writer_open(&w)) {
        fprintf(stderr, "leanmoe: out of memory\n");
        goto done;
    }

    /* The model's shape, for the mixes. */
    char arch[128] = "";
    struct gguf_str s;
    if (!gguf_get_str(f, "general.architecture", &s, err, sizeof err))
        snprintf(arch, sizeof arch, "%.*s", (int)(s.len < 127 ? s.len : 127), s.ptr);
    struct policy p = {.ftype = fd->ftype, .falcon = !strcmp(arch, "falcon"), .tied = 1};
    p.n_layer = (int)meta_u32(f, arch, "block_count", 0);
    p.n_expert = (int)meta_u32(f, arch, "expert_count", 0);
    const uint32_t n_head = meta_u32(f, arch, "attention.head_count", 1);
    const uint32_t n_head_kv = meta_u32(f, arch, "attention.head_count_kv", n_head);
    p.n_gqa = n_head_kv ? (int)(n_head / n_head_kv) : 1;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        order[i] = &f->tensors[i];
        const enum category c = category_of(f->tensors[i].name);
        if (is_attn_v_like(c)) p.n_attn_v++;
        if (c == CAT_OUTPUT) p.tied = 0;
    }
    qsort(order, f->n_tensors, sizeof(*order), cmp_tensor_order);

    /* Metadata: everything, then the file type. */
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const char *k = f->kv[i].key;
        if (!strcmp(k, "split.no") || !strcmp(k, "split.count") || !strcmp(k, "split.tensors.count")) continue;
        gguf_writer_copy_kv(w, &f->kv[i]);
    }
    /* Set as llama.cpp does: removed, then appended at the end. */
    gguf_writer_del_kv(w, "general.quantization_version");
    gguf_writer_del_kv(w, "general.file_type");
    gguf_writer_set_u32(w, "general.quantization_version", QUANT_VERSION);
    gguf_writer_set_u32(w, "general.file_type", (uint32_t)fd->ftype);

    /* Tensors: choose each type, in llama-quantize's order. */
    uint64_t bytes_in = 0, bytes_out = 0;
    int n_converted = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = order[i];
        uint32_t nt = t->type;
        if (allows_quantization(t)) {
            nt = fd->base;
            if (!is_float_type(fd->base)) {
                if (!pure) nt = mix_type(&p, nt, t, category_of(t->name));
                if (nt == LMOE_DTYPE_COUNT) {
                    fprintf(stderr, "leanmoe: %s: cannot tell its layer (blk.N.) in a %d-expert model\n", t->name,
                            p.n_expert);
                    goto done;
                }
                nt = fallback_type(nt, t->ne[0], t->name);
            }
        }
        if (nt != t->type && !is_float_type(t->type)) {
            fprintf(stderr, "leanmoe: %s is %s already; requantizing to %s is not supported\n", t->name,
                    lmoe_dtype_get(t->type) ? lmoe_dtype_get(t->type)->name : "an unknown type",
                    lmoe_dtype_get(nt)->name);
            goto done;
        }
        const int64_t idx = gguf_writer_add_tensor(w, t->name, nt, t->n_dims, t->ne, nt == t->type ? t->data : NULL);
        if (idx < 0) break; /* the writer's sticky error is reported below */
        job.ot[idx].src = t;
        job.ot[idx].type = nt;
        bytes_in += t->nbytes;
        bytes_out += gguf_writer_tensor_nbytes(w, idx);
        n_converted += nt != t->type;
        fprintf(stderr, "[%4" PRIu64 "/%4" PRIu64 "] %-36s %-5s -> %s\n", i + 1, f->n_tensors, t->name,
                lmoe_dtype_get(t->type) ? lmoe_dtype_get(t->type)->name : "?", lmoe_dtype_get(nt)->name);
    }
    if (gguf_writer_status(w)) {
        fprintf(stderr, "leanmoe: %s\n", gguf_writer_error(w));
        goto done;
    }

    const int n_threads = a->threads > 0 ? a->threads : lmoe_physical_cores();
    pool = lmoe_pool_open(n_threads);
    job.pool = pool;
    job.scratch = malloc(sizeof(float) * QUANT_PIECE_ELEMS * (size_t)(n_threads > 0 ? n_threads : 1));
    if (!pool || !job.scratch) {
        fprintf(stderr, "leanmoe: out of memory\n");
        goto done;
    }
    /* Whole pieces per fill call keep every thread busy on big tensors. */
    gguf_writer_set_chunk_size(w, (size_t)8 << 20);
    if (gguf_writer_write(w, out, fill_tensor, &job)) {
        fprintf(stderr, "leanmoe: %s\n", gguf_writer_error(w));
        goto done;
    }
    fprintf(stderr, "leanmoe: %s: %d of %" PRIu64 " tensors converted, file type %s (%d), %.2f MiB -> %.2f MiB\n", out,
            n_converted, f->n_tensors, fd->name, fd->ftype, bytes_in / 1048576.0, bytes_out / 1048576.0);
    rc = 0;
done:
    free(job.scratch);
    lmoe_pool_close(pool);
    gguf_writer_close(w);
    free(job.ot);
    free(order);
    gguf_close(f);
    return rc;
}
