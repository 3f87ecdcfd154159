/*
 * engine.c - lmoe_engine: opens a model file, binds its architecture,
 * starts the worker threads, and answers questions about the model.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine.h"
#include "error.h"
#include "format/safetensors.h"
#include "chat.h"
#include "jinja.h"
#include "quant/quant.h"
#include "tokenizer.h"

/* The widest row any matmul decodes: every weight's ne[0]. */
static int max_cols(const struct gguf_file *f) {
    int64_t mx = 1;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].ne[0] > mx) mx = f->tensors[i].ne[0];
    return (int)mx;
}

/* The vocabulary and chat format, when the file has them. A bad or
 * unsupported vocabulary does not stop the weights from loading: it is
 * reported when text is first needed. */
static void open_text(struct lmoe_engine *e) {
    struct gguf_str arch = {"", 0}, tmpl = {NULL, 0};
    gguf_get_str(e->gguf, "general.architecture", &arch, NULL, 0);
    gguf_get_str(e->gguf, "tokenizer.chat_template", &tmpl, NULL, 0);
    char arch_name[32];
    snprintf(arch_name, sizeof arch_name, "%.*s", (int)(arch.len < 31 ? arch.len : 31), arch.ptr);
    e->chat_format = lmoe_chat_detect(tmpl.ptr, tmpl.len, arch_name);
    e->chat_template = tmpl.ptr; /* borrowed from the mapping */
    e->chat_template_len = tmpl.len;
    if (!gguf_find_kv(e->gguf, "tokenizer.ggml.model")) {
        snprintf(e->tok_err, sizeof e->tok_err, "the model file has no vocabulary (tokenizer.ggml.model)");
        return;
    }
    if (lmoe_tokenizer_open(&e->tok, e->gguf, e->tok_err, sizeof e->tok_err)) e->tok = NULL;
    lmoe_chat_template_load(e);
}

/* A Hugging Face model folder (config.json, *.safetensors, tokenizer.json,
 * tokenizer_config.json). Vocabulary-only opens need just the tokenizer
 * files. A full open reads the weights as published (format/safetensors.h)
 * into a GGUF-style directory that the binder takes like a file; a missing
 * or unusable tokenizer.json then only matters once text is needed. */
static int open_folder(struct lmoe_engine *e, const char *path, const struct lmoe_engine_options *opt,
                       char *err, size_t errlen) {
    int vocab_only = opt && opt->vocab_only;
    int rc = lmoe_tokenizer_open_json(&e->tok, path, vocab_only ? err : e->tok_err,
                                      vocab_only ? errlen : sizeof e->tok_err);
    if (rc) {
        e->tok = NULL;
        if (vocab_only) return rc;
    }
    const char *tmpl = e->tok ? lmoe_tokenizer_chat_template(e->tok) : NULL;
    e->chat_template = tmpl;
    e->chat_template_len = tmpl ? strlen(tmpl) : 0;
    e->chat_format = lmoe_chat_detect(tmpl, e->chat_template_len, "");
    lmoe_chat_template_load(e);
    if (vocab_only) {
        e->vocab_only = 1;
        return 0;
    }
    if ((rc = hf_model_open(&e->hf, path, err, errlen))) return rc;
    e->gguf = hf_model_gguf(e->hf);
    struct gguf_str arch = {"", 0};
    gguf_get_str(e->gguf, "general.architecture", &arch, NULL, 0);
    char arch_name[32];
    snprintf(arch_name, sizeof arch_name, "%.*s", (int)(arch.len < 31 ? arch.len : 31), arch.ptr);
    e->chat_format = lmoe_chat_detect(tmpl, e->chat_template_len, arch_name);
    return 0;
}

int lmoe_engine_open(lmoe_engine **out, const char *path, const struct lmoe_engine_options *opt,
                     char *err, size_t errlen) {
    *out = NULL;
    struct lmoe_engine *e = calloc(1, sizeof(*e));
    if (!e) return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "engine: out of memory");
    pthread_mutex_init(&e->step_lock, NULL);
    struct stat st;
    int rc;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        if ((rc = open_folder(e, path, opt, err, errlen))) goto fail;
        if (e->vocab_only) {
            *out = e;
            return 0;
        }
    } else if ((rc = gguf_open(&e->gguf, path, err, errlen))) {
        goto fail;
    } else {
        open_text(e);
    }
    if (opt && opt->vocab_only) {
        if (!e->tok) {
            rc = lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED, "%s: %s", path, e->tok_err);
            goto fail;
        }
        e->vocab_only = 1;
        *out = e;
        return 0;
    }
    char sub[400];
    if (e->gguf->n_tensors == 0) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                       "%s: the file has no tensors (a vocabulary-only file?); it cannot generate", path);
        goto fail;
    }
    if ((rc = lmoe_model_load(&e->model, e->gguf, sub, sizeof sub))) {
        lmoe_errf(err, errlen, rc, "%s: %s", path, sub);
        goto fail;
    }
    int n_threads = opt && opt->n_threads > 0 ? opt->n_threads : lmoe_physical_cores();
    const struct lmoe_kernels *k = opt && opt->isa ? lmoe_kernels_have(opt->isa) : lmoe_kernels_pick();
    if (!k) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED, "engine: kernels '%s' are not available on this CPU",
                       opt->isa);
        goto fail;
    }
    int compute_failed = op_compute_open(&e->compute, k, n_threads, max_cols(e->gguf));
    e->rope_freqs = malloc(sizeof(float) * (size_t)(e->model.hp.n_rot / 2 + 1));
    if (compute_failed || !e->rope_freqs) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "engine: out of memory starting %d threads", n_threads);
        goto fail;
    }
    op_rope_freqs(&e->model.hp, e->rope_freqs);
    const struct gguf_kv *name = gguf_find_kv(e->gguf, "general.name");
    if (name && name->type == GGUF_TYPE_STRING)
        snprintf(e->name, sizeof e->name, "%.*s", (int)(name->v.str.len < 127 ? name->v.str.len : 127),
                 name->v.str.ptr);
    *out = e;
    return 0;
fail:
    lmoe_engine_close(e);
    return rc;
}

void lmoe_engine_close(lmoe_engine *e) {
    if (!e) return;
    op_compute_close(&e->compute);
    lmoe_scratch_free(&e->s);
    free(e->rope_freqs);
    lmoe_model_free(&e->model);
    lmoe_tokenizer_close(e->tok);
    lmoe_jinja_free(e->chat_jinja);
    if (e->hf) hf_model_close(e->hf); /* owns e->gguf */
    else gguf_close(e->gguf);
    pthread_mutex_destroy(&e->step_lock);
    free(e);
}

int lmoe_engine_n_vocab(const lmoe_engine *e) { return e->model.hp.n_vocab; }
int lmoe_engine_n_threads(const lmoe_engine *e) { return lmoe_pool_n_threads(e->compute.pool); }

int lmoe_engine_info(const lmoe_engine *e, struct lmoe_model_info *o) {
    const struct lmoe_hparams *hp = &e->model.hp;
    memset(o, 0, sizeof(*o));
    o->architecture = e->model.arch_name;
    o->name = e->name;
    o->n_layer = hp->n_layer;
    o->n_embd = hp->n_embd;
    o->n_vocab = hp->n_vocab;
    o->n_head = hp->n_head;
    o->n_head_kv = hp->n_head_kv;
    o->context_length = hp->n_ctx_train;
    o->n_expert = hp->n_expert;
    o->n_expert_used = hp->n_expert_used;
    o->n_expert_shared = hp->n_expert_shared;
    o->n_layer_dense_lead = hp->n_layer_dense_lead;
    o->kv_lora_rank = hp->kv_lora_rank;
    o->q_lora_rank = hp->q_lora_rank;
    lmoe_model_count_params(&e->model, &o->params_total, &o->params_active, &o->bytes_per_token);
    if (!e->gguf) return 0; /* a tokenizer-only folder */
    /* The total counts every tensor in the file, MTP layers included. */
    o->params_total = 0;
    for (uint64_t i = 0; i < e->gguf->n_tensors; i++) {
        const struct gguf_tensor *t = &e->gguf->tensors[i];
        o->weight_bytes += t->nbytes;
        o->params_total += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    o->n_tensors = (int)e->gguf->n_tensors;
    /* F16 cache: 2 bytes an element. MLA keeps latent + rope key per layer;
     * a plain cache keeps per-head keys and values. */
    uint64_t L = (uint64_t)hp->n_layer;
    if (hp->arch == LMOE_ARCH_DEEPSEEK2) {
        o->kv_bytes_per_token = L * 2 * (uint64_t)(hp->kv_lora_rank + hp->qk_rope);
        o->kv_bytes_per_token_full =
            L * 2 * (uint64_t)hp->n_head * (uint64_t)(hp->qk_nope + hp->qk_rope + hp->v_head_dim);
    } else {
        o->kv_bytes_per_token = L * 2 * (uint64_t)hp->n_head_kv * (uint64_t)(hp->head_dim_k + hp->head_dim_v);
        o->kv_bytes_per_token_full = o->kv_bytes_per_token;
    }
    return 0;
}

int lmoe_engine_tensor_types(const lmoe_engine *e, const char **names, int *counts, int max) {
    int n = 0;
    /* The GGUF ids, then the internal FP8 types of checkpoint folders. */
    for (uint32_t k = 0; k < LMOE_DTYPE_COUNT + 2; k++) {
        uint32_t type = k < LMOE_DTYPE_COUNT ? k : LMOE_DTYPE_F8_E4M3_B128 + (k - LMOE_DTYPE_COUNT);
        int count = 0;
        for (uint64_t i = 0; e->gguf && i < e->gguf->n_tensors; i++) count += e->gguf->tensors[i].type == type;
        if (!count) continue;
        if (n < max) {
            names[n] = lmoe_dtype_get(type)->name;
            counts[n] = count;
        }
        n++;
    }
    return n;
}

/* Renders a string for display: printable ASCII kept, the rest escaped. */
static size_t put_str(char *buf, size_t len, size_t at, const char *s, uint64_t n) {
    for (uint64_t i = 0; i < n && at + 5 < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') buf[at++] = (char)ch;
        else if (ch >= 0x80) buf[at++] = (char)ch; /* UTF-8 passes through */
        else at += (size_t)snprintf(buf + at, len - at, "\\x%02x", ch);
    }
    if (at < len) buf[at] = 0;
    return at;
}

int lmoe_engine_meta(const lmoe_engine *e, int i, const char **key, char *buf, size_t len) {
    if (!e->gguf) return i < 0 ? 0 : LMOE_ERR_ARG;
    if (i < 0) return (int)e->gguf->n_kv;
    if ((uint64_t)i >= e->gguf->n_kv || !len) return LMOE_ERR_ARG;
    const struct gguf_kv *kv = &e->gguf->kv[i];
    *key = kv->key;
    buf[0] = 0;
    switch (kv->type) {
    case GGUF_TYPE_STRING: put_str(buf, len, 0, kv->v.str.ptr, kv->v.str.len > 200 ? 200 : kv->v.str.len); break;
    case GGUF_TYPE_FLOAT32: case GGUF_TYPE_FLOAT64: snprintf(buf, len, "%g", kv->v.f64); break;
    case GGUF_TYPE_BOOL: snprintf(buf, len, "%s", kv->v.u64 ? "true" : "false"); break;
    case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: case GGUF_TYPE_INT64:
        snprintf(buf, len, "%" PRId64, kv->v.i64); break;
    case GGUF_TYPE_ARRAY: {
        size_t at = (size_t)snprintf(buf, len, "[%s x %" PRIu64 "]", gguf_type_name(kv->arr_type), kv->arr_n);
        if (at >= len) break;
        for (uint64_t j = 0; j < kv->arr_n && j < 4 && at + 40 < len; j++) {
            at += (size_t)snprintf(buf + at, len - at, j ? ", " : " ");
            if (kv->arr_type == GGUF_TYPE_STRING) {
                struct gguf_str s = gguf_arr_str(kv, j);
                at = put_str(buf, len, at, s.ptr, s.len > 24 ? 24 : s.len);
            } else if (kv->arr_type != GGUF_TYPE_ARRAY) {
                at += (size_t)snprintf(buf + at, len - at, "%g", gguf_arr_num(kv, j));
            }
        }
        if (kv->arr_n > 4 && at + 5 < len) snprintf(buf + at, len - at, ", ...");
        break;
    }
    default: snprintf(buf, len, "%" PRIu64, kv->v.u64); break;
    }
    return 0;
}
