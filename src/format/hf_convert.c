/*
 * hf_convert.c - lmoe_convert: a Hugging Face checkpoint folder written as
 * a GGUF file that llama.cpp loads (leanmoe convert DIR OUT.gguf).
 *
 * The folder is read as the engine reads it (format/hf.c: the metadata keys
 * llama.cpp's convert_hf_to_gguf.py writes, GGUF tensor names), and the file
 * gets the converter's layout where the published one differs:
 *   - the experts of a layer stacked into one [n_embd, n_ff, n_expert]
 *     tensor (streamed expert by expert, never held whole);
 *   - llama q/k rows permuted for NORM rotation (LlamaModel.permute), so
 *     the file says nothing of "leanmoe.rope_neox";
 *   - DeepSeek's kv_b_proj split into attn_k_b (per head, transposed) and
 *     attn_v_b, as DeepseekV2Model.modify_tensors does;
 *   - FP8 weights dequantized (f8 * block scale) and written as the type;
 *   - the vocabulary of tokenizer.json / tokenizer_config.json as the
 *     converter writes it (format/hf_vocab.c).
 *
 * Types. A pure type (f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k
 * q5_k q6_k) is used for every matrix, as the converter's --outtype is:
 * vectors, *_norm weights and the MoE router stay F32, and a row length the
 * type's block does not divide falls back to F16 as gguf-py does. A
 * llama-quantize mix (Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M)
 * chooses per tensor by the rules `leanmoe quantize` uses (quant/mix.c), so
 * converting straight to Q4_K_M gives the tensor types of converting to F16
 * and then quantizing to Q4_K_M; tensors the mix keeps get the folder's
 * float type (F32 for vectors, norms and the router). The default is bf16
 * when the checkpoint holds bf16 or fp8 weights, else f16 for f16 weights,
 * else f32. general.file_type names the type.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "format/gguf.h"
#include "format/gguf_write.h"
#include "format/hf_vocab.h"
#include "format/safetensors.h"
#include "leanmoe.h"
#include "quant/mix.h"
#include "quant/quant.h"

#define GGUF_CONVERT_NAME_MAX 160

/* llama.cpp's llama_ftype of each pure type (general.file_type). */
static const struct {
    const char *name;
    uint32_t type;
    int ftype;
} pure_types[] = {
    {"f32", LMOE_DTYPE_F32, 0},   {"f16", LMOE_DTYPE_F16, 1},   {"bf16", LMOE_DTYPE_BF16, 32},
    {"q4_0", LMOE_DTYPE_Q4_0, 2}, {"q4_1", LMOE_DTYPE_Q4_1, 3}, {"q5_0", LMOE_DTYPE_Q5_0, 8},
    {"q5_1", LMOE_DTYPE_Q5_1, 9}, {"q8_0", LMOE_DTYPE_Q8_0, 7}, {"q2_k", LMOE_DTYPE_Q2_K, 10},
    {"q3_k", LMOE_DTYPE_Q3_K, 12}, {"q4_k", LMOE_DTYPE_Q4_K, 15}, {"q5_k", LMOE_DTYPE_Q5_K, 17},
    {"q6_k", LMOE_DTYPE_Q6_K, 18},
};

/* The mixes convert offers (llama-quantize names; the pure names above win
 * where they coincide, e.g. q4_0 and q6_k). */
static const char *const mix_names[] = {"Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M"};

#define CONVERT_TYPE_NAMES "f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k q3_k_s q3_k_m q3_k_l " \
                           "q4_k_s q4_k_m q5_k_s q5_k_m"

/* How an output tensor's rows come from its source. */
enum source_kind { SRC_PLAIN, SRC_PERMUTE, SRC_K_B, SRC_V_B };

struct out_tensor {
    const struct gguf_tensor *src;
    enum source_kind kind;
    uint32_t type;
    int64_t ne[3];    /* output shape */
    int n_head;       /* permute: heads of the q/k rows; k_b/v_b: heads */
    int nope, v_head; /* k_b/v_b: rows of each head in kv_b */
    int n_dims;
    char name[GGUF_CONVERT_NAME_MAX];
};

struct convert {
    struct out_tensor *ot;
    int n;
    float *row;       /* one output row */
    float *head;      /* k_b: one head's nope source rows, [nope][kv_lora] */
    int64_t row_at, head_at, row_tensor, head_tensor; /* what row/head hold (-1: nothing) */
};

/* Row r (of matrix e) of source tensor t as floats. */
static void source_row(const struct gguf_tensor *t, int64_t e, int64_t r, float *dst) {
    size_t row_bytes = (size_t)lmoe_dtype_row_size(t->type, t->ne[0]);
    const uint8_t *m = t->expert_data ? t->expert_data[e]
                                      : (const uint8_t *)t->data + (size_t)(e * t->ne[1]) * row_bytes;
    if (t->block_scale || t->expert_scale) {
        int64_t rb = (t->ne[1] + LMOE_FP8_BLOCK - 1) / LMOE_FP8_BLOCK;
        const float *sc = t->expert_scale ? t->expert_scale[e] : t->block_scale + e * rb * t->n_col_blocks;
        lmoe_dequantize_row_fp8(t->type, m + (size_t)r * row_bytes, sc, t->n_col_blocks, r, dst, t->ne[0]);
    } else {
        lmoe_dtype_get(t->type)->dequantize(m + (size_t)r * row_bytes, dst, t->ne[0]);
    }
}

/* Output row g (over all of its matrices) of o into c->row. */
static void output_row(struct convert *c, int ti, int64_t g) {
    const struct out_tensor *o = &c->ot[ti];
    if (c->row_tensor == ti && c->row_at == g) return;
    int64_t e = g / o->ne[1], r = g % o->ne[1];
    switch (o->kind) {
    case SRC_PLAIN: source_row(o->src, e, r, c->row); break;
    case SRC_PERMUTE: {
        /* LlamaModel.permute: rows of head h, viewed as [2][hd/2], become
         * [hd/2][2]; output row h*hd + 2i + j is source row h*hd + j*hd/2 + i. */
        int64_t hd = o->ne[1] / o->n_head, h = r / hd, i = (r % hd) / 2, j = r % 2;
        source_row(o->src, 0, h * hd + j * (hd / 2) + i, c->row);
        break;
    }
    case SRC_V_B: /* head e's v rows follow its nope rows in kv_b */
        source_row(o->src, 0, e * (o->nope + o->v_head) + o->nope + r, c->row);
        break;
    case SRC_K_B: { /* row (head e, latent r) = column r of head e's nope rows */
        int64_t kv_lora = o->src->ne[0];
        if (c->head_tensor != ti || c->head_at != e) {
            for (int i = 0; i < o->nope; i++)
                source_row(o->src, 0, e * (o->nope + o->v_head) + i, c->head + (size_t)i * (size_t)kv_lora);
            c->head_tensor = ti;
            c->head_at = e;
        }
        for (int i = 0; i < o->nope; i++) c->row[i] = c->head[(size_t)i * (size_t)kv_lora + (size_t)r];
        break;
    }
    }
    c->row_tensor = ti;
    c->row_at = g;
}

/* gguf_fill_fn: bytes [offset, offset + nbytes) of output tensor ti, row
 * segment by row segment (chunks end on block boundaries, rows are whole
 * blocks). */
static int fill(void *ctx, int64_t ti, void *dst, uint64_t offset, size_t nbytes) {
    struct convert *c = ctx;
    const struct out_tensor *o = &c->ot[ti];
    const struct lmoe_dtype_traits *tr = lmoe_dtype_get(o->type);
    int64_t e0 = (int64_t)(offset / (uint64_t)tr->type_size) * tr->block_size;
    int64_t e1 = e0 + (int64_t)(nbytes / (size_t)tr->type_size) * tr->block_size;
    uint8_t *out = dst;
    for (int64_t at = e0; at < e1;) {
        int64_t g = at / o->ne[0], c0 = at % o->ne[0], c1 = o->ne[0];
        if (c1 - c0 > e1 - at) c1 = c0 + (e1 - at);
        output_row(c, (int)ti, g);
        int64_t w = lmoe_quantize(o->type, c->row + c0, out, c1 - c0);
        if (w < 0) return LMOE_ERR_ARG;
        out += w;
        at += c1 - c0;
    }
    return 0;
}

/* The type of a tensor under a pure type: F32 for vectors, norms and the
 * router (as the converter keeps them), F16 when the type's block does not
 * divide a row. */
static uint32_t pure_type_for(const char *name, int n_dims, int64_t ne0, uint32_t want) {
    size_t n = strlen(name);
    if (n_dims < 2 || (n > 12 && !strcmp(name + n - 12, "_norm.weight")) || strstr(name, "ffn_gate_inp.weight"))
        return LMOE_DTYPE_F32;
    if (ne0 % lmoe_dtype_get(want)->block_size) return LMOE_DTYPE_F16;
    return want;
}

/* The default output type: the checkpoint's widest 16-bit kind. */
static const char *default_type(const struct gguf_file *g) {
    int bf = 0, f16 = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        uint32_t t = g->tensors[i].type;
        bf |= t == LMOE_DTYPE_BF16 || lmoe_fp8_traits(t) != NULL;
        f16 |= t == LMOE_DTYPE_F16;
    }
    return bf ? "bf16" : f16 ? "f16" : "f32";
}

/* Metadata u32 <arch>.<suffix>, or def. */
static int meta_u32(const struct gguf_file *g, const char *arch, const char *suffix, int def) {
    char key[160];
    uint32_t v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_u32(g, key, &v, NULL, 0) ? def : (int)v;
}

/* What --type names: a pure type (pure >= 0, its index) or a mix. */
struct out_type {
    int pure;                     /* index into pure_types, or -1 */
    const struct lmoe_ftype *mix; /* when pure < 0 */
    const char *name;
    int ftype;
};

static int parse_type(const char *name, struct out_type *t) {
    for (int i = 0; i < (int)(sizeof pure_types / sizeof pure_types[0]); i++)
        if (!strcasecmp(name, pure_types[i].name) && lmoe_quantize_supported(pure_types[i].type)) {
            *t = (struct out_type){i, NULL, pure_types[i].name, pure_types[i].ftype};
            return 0;
        }
    for (size_t i = 0; i < sizeof mix_names / sizeof mix_names[0]; i++)
        if (!strcasecmp(name, mix_names[i])) {
            const struct lmoe_ftype *ft = lmoe_ftype_find(mix_names[i]);
            *t = (struct out_type){-1, ft, ft->name, ft->ftype};
            return 0;
        }
    return -1;
}

/* The output tensors of g: one per source tensor, two for a joined MLA
 * kv_b (k_b and v_b), in the directory's name order. */
static int plan_tensors(const struct gguf_file *g, const char *arch, struct convert *c, char *err, size_t errlen) {
    int permute = gguf_find_kv(g, "leanmoe.rope_neox") != NULL && !strcmp(arch, "llama");
    int n_head = meta_u32(g, arch, "attention.head_count", 1);
    int n_head_kv = meta_u32(g, arch, "attention.head_count_kv", n_head);
    int kv_lora = meta_u32(g, arch, "attention.kv_lora_rank", 0);
    int qk_mla = meta_u32(g, arch, "attention.key_length_mla", 0);
    int v_mla = meta_u32(g, arch, "attention.value_length_mla", 0);
    int rope = meta_u32(g, arch, "rope.dimension_count", 0);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const struct gguf_tensor *t = g->by_name[i];
        size_t n = strlen(t->name);
        if (n >= GGUF_CONVERT_NAME_MAX - 8)
            return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "convert: tensor name '%.64s...' is too long", t->name);
        int is_kvb = n > 16 && !strcmp(t->name + n - 16, "attn_kv_b.weight") && kv_lora && qk_mla > rope;
        for (int p = 0; p < (is_kvb ? 2 : 1); p++) {
            struct out_tensor *o = &c->ot[c->n++];
            snprintf(o->name, sizeof o->name, "%s", t->name);
            o->src = t;
            o->ne[0] = t->ne[0];
            o->ne[1] = t->ne[1];
            o->ne[2] = t->ne[2];
            o->n_dims = t->n_dims;
            if (is_kvb) {
                /* [kv_lora] -> n_head*(nope+v) rows becomes k_b [nope, kv_lora, H]
                 * and v_b [kv_lora, v, H]. */
                o->nope = qk_mla - rope;
                o->v_head = v_mla;
                o->n_head = n_head;
                o->kind = p == 0 ? SRC_K_B : SRC_V_B;
                snprintf(o->name + n - 16, sizeof o->name - (n - 16), "%s",
                         p == 0 ? "attn_k_b.weight" : "attn_v_b.weight");
                o->ne[0] = p == 0 ? o->nope : kv_lora;
                o->ne[1] = p == 0 ? kv_lora : v_mla;
                o->ne[2] = n_head;
                o->n_dims = 3;
                if ((int64_t)n_head * (o->nope + o->v_head) != t->ne[1] || t->ne[0] != kv_lora)
                    return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                                     "convert: %s does not have the MLA shape of the metadata", t->name);
            } else if (permute && (strstr(t->name, "attn_q.weight") || strstr(t->name, "attn_k.weight"))) {
                o->kind = SRC_PERMUTE;
                o->n_head = strstr(t->name, "attn_q.weight") ? n_head : n_head_kv;
                if (o->n_dims != 2 || o->ne[1] % (2 * o->n_head))
                    return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "convert: cannot permute %s for %d heads",
                                     t->name, o->n_head);
            }
        }
    }
    return 0;
}

static int cmp_out_tensor(const void *a, const void *b) {
    const struct out_tensor *x = *(const struct out_tensor *const *)a, *y = *(const struct out_tensor *const *)b;
    return lmoe_mix_cmp_names(x->name, y->name);
}

/* Every output tensor's type. A mix is asked in llama-quantize's order
 * (its counters advance as tensors are visited). */
static int choose_types(const struct gguf_file *g, const char *arch, struct convert *c, const struct out_type *ty,
                        const char *float_name, char *err, size_t errlen) {
    if (ty->pure >= 0) {
        for (int i = 0; i < c->n; i++) {
            struct out_tensor *o = &c->ot[i];
            o->type = pure_type_for(o->name, o->n_dims, o->ne[0], pure_types[ty->pure].type);
        }
        return 0;
    }
    struct out_type ft;
    parse_type(float_name, &ft);
    const uint32_t keep = pure_types[ft.pure].type;
    const int n_head = meta_u32(g, arch, "attention.head_count", 1);
    struct lmoe_mix mix;
    lmoe_mix_init(&mix, ty->mix, 0, arch, meta_u32(g, arch, "block_count", 0), meta_u32(g, arch, "expert_count", 0),
                  n_head, meta_u32(g, arch, "attention.head_count_kv", n_head));
    struct out_tensor **order = malloc(sizeof(*order) * (size_t)(c->n ? c->n : 1));
    if (!order) return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "convert: out of memory");
    for (int i = 0; i < c->n; i++) {
        order[i] = &c->ot[i];
        lmoe_mix_count(&mix, c->ot[i].name);
    }
    qsort(order, (size_t)c->n, sizeof(*order), cmp_out_tensor);
    int rc = 0;
    for (int i = 0; i < c->n && !rc; i++) {
        struct out_tensor *o = order[i];
        const uint32_t kept = pure_type_for(o->name, o->n_dims, o->ne[0], keep);
        o->type = lmoe_mix_type(&mix, o->name, o->n_dims, o->ne, kept, NULL);
        if (o->type == LMOE_DTYPE_COUNT)
            rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "convert: %s: cannot tell its layer in a %d-expert model",
                           o->name, mix.n_expert);
    }
    free(order);
    return rc;
}

/* Whether the folder has a tokenizer.json to write. */
static int has_tokenizer(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

int lmoe_convert(const char *dir, const char *out_path, const struct lmoe_convert_options *opt,
                 struct lmoe_convert_report *report, char *err, size_t errlen) {
    const struct lmoe_convert_options dflt = {0};
    if (!opt) opt = &dflt;
    if (report) memset(report, 0, sizeof *report);
    if (!dir || !out_path) return lmoe_errf(err, errlen, LMOE_ERR_ARG, "convert: a folder and an output path are needed");
    if (!hf_is_dir(dir))
        return lmoe_errf(err, errlen, LMOE_ERR_ARG, "convert: '%s' is not a checkpoint folder (config.json + "
                                                    "*.safetensors)", dir);
    struct hf_model *hf;
    int rc = opt->vocab_only ? hf_model_open_config(&hf, dir, err, errlen) : hf_model_open(&hf, dir, err, errlen);
    if (rc) return rc;
    const struct gguf_file *g = hf_model_gguf(hf);
    const char *float_name = default_type(g);
    struct out_type ty;
    if (parse_type(opt->type ? opt->type : float_name, &ty)) {
        hf_model_close(hf);
        return lmoe_errf(err, errlen, LMOE_ERR_ARG, "convert: unknown type '%s' (" CONVERT_TYPE_NAMES ")", opt->type);
    }
    struct gguf_str arch = {"", 0};
    gguf_get_str(g, "general.architecture", &arch, NULL, 0);
    char arch_name[32];
    snprintf(arch_name, sizeof arch_name, "%.*s", (int)(arch.len < 31 ? arch.len : 31), arch.ptr);

    struct gguf_writer *w = NULL;
    struct convert c = {.row_at = -1, .head_at = -1, .row_tensor = -1, .head_tensor = -1};
    int64_t max_ne0 = 1;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].ne[0] > max_ne0) max_ne0 = g->tensors[i].ne[0];
    const int kv_lora = meta_u32(g, arch_name, "attention.kv_lora_rank", 0);
    const int qk_mla = meta_u32(g, arch_name, "attention.key_length_mla", 0);
    c.ot = calloc(2 * g->n_tensors + 1, sizeof(*c.ot));
    c.row = malloc(sizeof(float) * (size_t)(max_ne0 + qk_mla + 1));
    c.head = malloc(sizeof(float) * (size_t)(qk_mla + 1) * (size_t)(kv_lora + 1));
    if (!c.ot || !c.row || !c.head || gguf_writer_open(&w)) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "convert: out of memory");
        goto done;
    }
    if ((rc = plan_tensors(g, arch_name, &c, err, errlen)) ||
        (rc = choose_types(g, arch_name, &c, &ty, float_name, err, errlen)))
        goto done;

    for (uint64_t i = 0; i < g->n_kv; i++)
        if (strncmp(g->kv[i].key, "leanmoe.", 8)) gguf_writer_copy_kv(w, &g->kv[i]);
    gguf_writer_set_u32(w, "general.file_type", (uint32_t)ty.ftype);
    const int quantized = ty.mix || (pure_types[ty.pure].type != LMOE_DTYPE_F32 &&
                                     pure_types[ty.pure].type != LMOE_DTYPE_F16 &&
                                     pure_types[ty.pure].type != LMOE_DTYPE_BF16);
    if (quantized) gguf_writer_set_u32(w, "general.quantization_version", 2);

    const struct gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    int64_t n_tokens = 0;
    if (has_tokenizer(dir)) {
        if ((rc = hf_vocab_write(w, dir, arch_name, emb ? emb->ne[1] : 0, &n_tokens, err, errlen))) goto done;
    } else if (opt->vocab_only) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_IO, "convert: %s has no tokenizer.json", dir);
        goto done;
    } else {
        /* No vocabulary: llama.cpp then wants the model named "none" and
         * takes the vocabulary size from <arch>.vocab_size. */
        gguf_writer_set_str(w, "tokenizer.ggml.model", "none");
        char vkey[64];
        snprintf(vkey, sizeof vkey, "%s.vocab_size", arch_name);
        if (!gguf_find_kv(g, vkey) && emb) gguf_writer_set_u32(w, vkey, (uint32_t)emb->ne[1]);
    }
    for (int i = 0; i < c.n && !opt->vocab_only; i++) {
        const struct out_tensor *o = &c.ot[i];
        if (gguf_writer_add_tensor(w, o->name, o->type, o->n_dims, o->ne, NULL) != i) {
            rc = lmoe_errf(err, errlen, gguf_writer_status(w) ? gguf_writer_status(w) : LMOE_ERR_ARG,
                           "convert: %s", gguf_writer_error(w));
            goto done;
        }
    }
    if ((rc = gguf_writer_write(w, out_path, fill, &c))) {
        lmoe_errf(err, errlen, rc, "convert: %s", gguf_writer_error(w));
        goto done;
    }
    if (report) {
        report->n_tensors = opt->vocab_only ? 0 : c.n;
        report->n_tokens = n_tokens;
        report->file_bytes = gguf_writer_file_size(w);
        report->type = ty.name;
    }
done:
    gguf_writer_close(w);
    free(c.ot);
    free(c.row);
    free(c.head);
    hf_model_close(hf);
    return rc;
}
