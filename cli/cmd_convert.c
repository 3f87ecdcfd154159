/*
 * cmd_convert.c - `leanmoe convert`: a Hugging Face checkpoint folder
 * written as a GGUF file that llama.cpp loads.
 *
 *   leanmoe convert DIR OUT.gguf [--type T]
 *
 * The folder is read as the engine reads it (format/safetensors.h: the
 * metadata keys llama.cpp's convert_hf_to_gguf.py writes, GGUF tensor
 * names), and the file gets the converter's layout where the published one
 * differs:
 *   - the experts of a layer stacked into one [n_embd, n_ff, n_expert]
 *     tensor (streamed expert by expert, never held whole);
 *   - llama q/k rows permuted for NORM rotation (LlamaModel.permute), so
 *     the file says nothing of "leanmoe.rope_neox";
 *   - DeepSeek's kv_b_proj split into attn_k_b (per head, transposed) and
 *     attn_v_b, as DeepseekV2Model.modify_tensors does;
 *   - FP8 weights dequantized (f8 * block scale) and written as T.
 * T is one type for every matrix (f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0
 * q2_k q3_k q4_k q5_k q6_k; `leanmoe quantize` makes the per-tensor mixes):
 * vectors, *_norm weights and the MoE router stay F32 as the converter
 * keeps them, and a row length the type's block does not divide falls back
 * to F16 as gguf-py does. The default T is bf16 when the checkpoint holds
 * bf16 or fp8 weights, else f16 for f16 weights, else f32. general.file_type
 * names T. The folder's tokenizer.json (with tokenizer_config.json) is
 * written as the tokenizer.* keys the converter writes for byte-level BPE
 * (tokenizer_gguf.c); a folder without one, or with a tokenizer that has
 * no GGUF form yet (SentencePiece-style, an unnamed pre-tokenizer), gets a
 * one-line warning and tokenizer.ggml.model "none" (llama.cpp then loads
 * the weights without a vocabulary).
 *
 * Like `leanmoe quantize`, this is a file tool and reaches below leanmoe.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "format/gguf.h"
#include "format/gguf_write.h"
#include "format/safetensors.h"
#include "quant/quant.h"
#include "tokenizer.h"

/* llama.cpp's llama_ftype of each pure type (general.file_type). */
static const struct {
    const char *name;
    uint32_t type;
    int ftype;
} out_types[] = {
    {"f32", LMOE_DTYPE_F32, 0},   {"f16", LMOE_DTYPE_F16, 1},   {"bf16", LMOE_DTYPE_BF16, 32},
    {"q4_0", LMOE_DTYPE_Q4_0, 2}, {"q4_1", LMOE_DTYPE_Q4_1, 3}, {"q5_0", LMOE_DTYPE_Q5_0, 8},
    {"q5_1", LMOE_DTYPE_Q5_1, 9}, {"q8_0", LMOE_DTYPE_Q8_0, 7}, {"q2_k", LMOE_DTYPE_Q2_K, 10},
    {"q3_k", LMOE_DTYPE_Q3_K, 12}, {"q4_k", LMOE_DTYPE_Q4_K, 15}, {"q5_k", LMOE_DTYPE_Q5_K, 17},
    {"q6_k", LMOE_DTYPE_Q6_K, 18},
};

/* How an output tensor's rows come from its source. */
enum source_kind { SRC_PLAIN, SRC_PERMUTE, SRC_K_B, SRC_V_B };

struct out_tensor {
    const struct gguf_tensor *src;
    enum source_kind kind;
    uint32_t type;
    int64_t ne[3];    /* output shape */
    int n_head;       /* permute: heads of the q/k rows; k_b/v_b: heads */
    int nope, v_head; /* k_b/v_b: rows of each head in kv_b */
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

/* The type a tensor gets: F32 for vectors, norms and the router (as the
 * converter keeps them), F16 when the type's block does not divide a row. */
static uint32_t type_for(const char *name, int n_dims, int64_t ne0, uint32_t want) {
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

/* The folder's tokenizer as GGUF keys. Returns 0 when written; 1, after a
 * one-line warning, when there is none to write (the caller marks the file
 * "none"); -1, after a one-line error, for a tokenizer that is broken or
 * does not fit the model. */
static int write_vocab(struct gguf_writer *w, const char *dir, int n_vocab) {
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "leanmoe: convert: warning: no %s: the file gets no vocabulary\n", path);
        return 1;
    }
    fclose(f);
    struct lmoe_tokenizer *t = NULL;
    int rc = lmoe_tokenizer_open_json(&t, path, err, sizeof err);
    if (rc == 0) rc = lmoe_tokenizer_write_gguf(t, w, n_vocab, err, sizeof err);
    lmoe_tokenizer_close(t);
    if (rc == LMOE_ERR_UNSUPPORTED) {
        fprintf(stderr, "leanmoe: convert: warning: %s: the file gets no vocabulary\n", err);
        return 1;
    }
    if (rc) fprintf(stderr, "leanmoe: convert: %s\n", err);
    return rc ? -1 : 0;
}

int cmd_convert(const struct args *a) {
    const char *dir = a->text, *out = a->n_pos > 0 ? a->pos[0] : a->out;
    if (!dir || !out || a->n_pos > 1) {
        fprintf(stderr, "leanmoe: usage: leanmoe convert DIR OUT.gguf [--type T]\n");
        return 1;
    }
    if (!hf_is_dir(dir)) {
        fprintf(stderr, "leanmoe: convert: '%s' is not a checkpoint folder (config.json + *.safetensors)\n", dir);
        return 1;
    }
    char err[768];
    struct hf_model *hf;
    if (hf_model_open(&hf, dir, err, sizeof err)) {
        fprintf(stderr, "leanmoe: %s\n", err);
        return 1;
    }
    const struct gguf_file *g = hf_model_gguf(hf);
    const char *tname = a->synth_type ? a->synth_type : default_type(g);
    int ti = -1;
    for (int i = 0; i < (int)(sizeof out_types / sizeof out_types[0]); i++)
        if (!strcasecmp(tname, out_types[i].name)) ti = i;
    if (ti < 0 || !lmoe_quantize_supported(out_types[ti].type)) {
        fprintf(stderr, "leanmoe: convert: unknown type '%s' (f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k "
                        "q5_k q6_k)\n", tname);
        hf_model_close(hf);
        return 1;
    }
    struct gguf_str arch = {"", 0};
    gguf_get_str(g, "general.architecture", &arch, NULL, 0);
    char arch_name[32];
    snprintf(arch_name, sizeof arch_name, "%.*s", (int)(arch.len < 31 ? arch.len : 31), arch.ptr);
    int permute = gguf_find_kv(g, "leanmoe.rope_neox") != NULL && !strcmp(arch_name, "llama");
    int n_head = meta_u32(g, arch_name, "attention.head_count", 1);
    int n_head_kv = meta_u32(g, arch_name, "attention.head_count_kv", n_head);
    int kv_lora = meta_u32(g, arch_name, "attention.kv_lora_rank", 0);
    int qk_mla = meta_u32(g, arch_name, "attention.key_length_mla", 0);
    int v_mla = meta_u32(g, arch_name, "attention.value_length_mla", 0);
    int rope = meta_u32(g, arch_name, "rope.dimension_count", 0);

    struct gguf_writer *w = NULL;
    struct convert c = {.row_at = -1, .head_at = -1, .row_tensor = -1, .head_tensor = -1};
    int64_t max_ne0 = 1;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].ne[0] > max_ne0) max_ne0 = g->tensors[i].ne[0];
    c.ot = calloc(2 * g->n_tensors + 1, sizeof(*c.ot));
    c.row = malloc(sizeof(float) * (size_t)(max_ne0 + qk_mla + 1));
    c.head = malloc(sizeof(float) * (size_t)(qk_mla + 1) * (size_t)(kv_lora + 1));
    int rc = 1;
    if (!c.ot || !c.row || !c.head || gguf_writer_open(&w)) {
        fprintf(stderr, "leanmoe: out of memory\n");
        goto done;
    }
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (strncmp(g->kv[i].key, "leanmoe.", 8)) gguf_writer_copy_kv(w, &g->kv[i]);
    gguf_writer_set_u32(w, "general.file_type", (uint32_t)out_types[ti].ftype);
    const struct gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    int vocab = write_vocab(w, dir, emb ? (int)emb->ne[1] : 0);
    if (vocab < 0) goto done;
    if (vocab > 0) {
        /* No vocabulary: llama.cpp then wants the model named "none" and
         * takes the vocabulary size from <arch>.vocab_size. */
        gguf_writer_set_str(w, "tokenizer.ggml.model", "none");
        char vkey[64];
        snprintf(vkey, sizeof vkey, "%s.vocab_size", arch_name);
        if (!gguf_find_kv(g, vkey) && emb) gguf_writer_set_u32(w, vkey, (uint32_t)emb->ne[1]);
    }
    if (out_types[ti].type != LMOE_DTYPE_F32 && out_types[ti].type != LMOE_DTYPE_F16 &&
        out_types[ti].type != LMOE_DTYPE_BF16)
        gguf_writer_set_u32(w, "general.quantization_version", 2);
    /* Tensors in name order (the directory's by_name). */
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const struct gguf_tensor *t = g->by_name[i];
        size_t n = strlen(t->name);
        int is_kvb = n > 16 && !strcmp(t->name + n - 16, "attn_kv_b.weight") && kv_lora && qk_mla > rope;
        int n_parts = is_kvb ? 2 : 1;
        for (int p = 0; p < n_parts; p++) {
            struct out_tensor *o = &c.ot[c.n];
            char name[160];
            snprintf(name, sizeof name, "%s", t->name);
            o->src = t;
            o->ne[0] = t->ne[0];
            o->ne[1] = t->ne[1];
            o->ne[2] = t->ne[2];
            int n_dims = t->n_dims;
            if (is_kvb) {
                /* [kv_lora] -> n_head*(nope+v) rows becomes k_b [nope, kv_lora, H]
                 * and v_b [kv_lora, v, H]. */
                o->nope = qk_mla - rope;
                o->v_head = v_mla;
                o->n_head = n_head;
                o->kind = p == 0 ? SRC_K_B : SRC_V_B;
                snprintf(name + n - 16, sizeof name - (n - 16), "%s", p == 0 ? "attn_k_b.weight" : "attn_v_b.weight");
                o->ne[0] = p == 0 ? o->nope : kv_lora;
                o->ne[1] = p == 0 ? kv_lora : v_mla;
                o->ne[2] = n_head;
                n_dims = 3;
                if ((int64_t)n_head * (o->nope + o->v_head) != t->ne[1] || t->ne[0] != kv_lora) {
                    fprintf(stderr, "leanmoe: convert: %s does not have the MLA shape of the metadata\n", t->name);
                    goto done;
                }
            } else if (permute && (strstr(t->name, "attn_q.weight") || strstr(t->name, "attn_k.weight"))) {
                o->kind = SRC_PERMUTE;
                o->n_head = strstr(t->name, "attn_q.weight") ? n_head : n_head_kv;
                if (n_dims != 2 || o->ne[1] % (2 * o->n_head)) {
                    fprintf(stderr, "leanmoe: convert: cannot permute %s for %d heads\n", t->name, o->n_head);
                    goto done;
                }
            }
            o->type = type_for(name, n_dims, o->ne[0], out_types[ti].type);
            int64_t idx = gguf_writer_add_tensor(w, name, o->type, n_dims, o->ne, NULL);
            if (idx != c.n) {
                fprintf(stderr, "leanmoe: convert: %s\n", gguf_writer_error(w));
                goto done;
            }
            c.n++;
        }
    }
    if (gguf_writer_write(w, out, fill, &c)) {
        fprintf(stderr, "leanmoe: convert: %s\n", gguf_writer_error(w));
        goto done;
    }
    fprintf(stderr, "leanmoe: wrote %s: %d tensors, %s, %" PRIu64 " bytes\n", out, c.n, out_types[ti].name,
            gguf_writer_file_size(w));
    rc = 0;
done:
    gguf_writer_close(w);
    free(c.ot);
    free(c.row);
    free(c.head);
    hf_model_close(hf);
    return rc;
}
