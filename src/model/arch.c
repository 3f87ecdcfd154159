/*
 * arch.c - hyperparameters and tensor binding for each model family.
 *
 * Everything a forward step needs is read and checked here, once, at open:
 * every metadata key by name, and every tensor by name and exact shape, so
 * the forward code can trust its inputs. A missing key or tensor, or a shape
 * that disagrees with the metadata, is one error line naming it.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "leanmoe.h"
#include "model/model.h"
#include "quant/quant.h"

/* Defaults of llama.cpp for keys that files may leave out. */
#define LMOE_DEFAULT_ROPE_BASE 10000.0f
#define LMOE_DEFAULT_RMS_EPS 1e-5f
#define LMOE_YARN_BETA_FAST 32.0f
#define LMOE_YARN_BETA_SLOW 1.0f

/* How much of a file string to quote in an error line: at most max bytes,
 * and none from the first control byte on, so the message stays one line. */
static int quote_len(struct gguf_str s, int max) {
    int n = 0;
    while ((uint64_t)n < s.len && n < max && (unsigned char)s.ptr[n] >= 0x20 && s.ptr[n] != 0x7f)
        n++;
    return n;
}

struct loader {
    const struct gguf_file *f;
    const char *arch; /* key prefix */
    char *err;
    size_t errlen;
};

static int key_u32(struct loader *l, const char *suffix, int *out, int def) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", l->arch, suffix);
    uint32_t v;
    if (!gguf_find_kv(l->f, key)) {
        if (def >= 0) { *out = def; return 0; }
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                         "model: missing metadata key '%s'", key);
    }
    int rc = gguf_get_u32(l->f, key, &v, l->err, l->errlen);
    if (rc) return rc;
    if (v > (1u << 30))
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                         "model: metadata '%s' = %u is implausibly large", key, v);
    *out = (int)v;
    return 0;
}

static int key_f32(struct loader *l, const char *suffix, float *out, float def) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", l->arch, suffix);
    if (!gguf_find_kv(l->f, key)) { *out = def; return 0; }
    int rc = gguf_get_f32(l->f, key, out, l->err, l->errlen);
    if (!rc && !isfinite(*out))
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                         "model: metadata '%s' is not a finite number", key);
    return rc;
}

static int has_key(struct loader *l, const char *suffix) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", l->arch, suffix);
    return gguf_find_kv(l->f, key) != NULL;
}

/* Binds tensor `name` into t, checking its shape against ne (0 entries and
 * trailing dims beyond n_dims must be 1). required = 0 leaves t empty when
 * the tensor is absent. */
static int bind(struct loader *l, struct lmoe_tensor *t, const char *name,
                int required, int64_t ne0, int64_t ne1, int64_t ne2) {
    memset(t, 0, sizeof(*t));
    const struct gguf_tensor *g = gguf_find_tensor(l->f, name);
    if (!g) {
        if (!required) return 0;
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                         "model: missing tensor '%s'", name);
    }
    int64_t want[4] = {ne0, ne1, ne2, 1};
    for (int d = 0; d < 4; d++)
        if (g->ne[d] != want[d])
            return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                             "model: tensor '%s' has shape [%" PRId64 ", %" PRId64
                             ", %" PRId64 ", %" PRId64 "], expected [%" PRId64
                             ", %" PRId64 ", %" PRId64 "]",
                             name, g->ne[0], g->ne[1], g->ne[2], g->ne[3], ne0, ne1, ne2);
    const struct lmoe_dtype_traits *tr = lmoe_dtype_get(g->type);
    if (!tr || !tr->dequantize)
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_UNSUPPORTED,
                         "model: tensor '%s' has type %s, which leanmoe cannot compute",
                         name, tr ? tr->name : "unknown");
    /* Norm weights, biases and router inputs are read as plain floats. */
    t->data = g->data;
    t->type = g->type;
    memcpy(t->ne, want, sizeof want);
    t->row_bytes = (size_t)lmoe_dtype_row_size(g->type, ne0);
    t->expert_data = g->expert_data;
    t->block_scale = g->block_scale;
    t->expert_scale = g->expert_scale;
    t->n_col_blocks = g->n_col_blocks;
    if ((g->block_scale || g->expert_scale) != (lmoe_fp8_traits(g->type) != NULL) ||
        (g->expert_data && ne2 <= 1))
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT, "model: tensor '%s' has inconsistent storage", name);
    return 0;
}

/* bind() with a printf-formatted layer tensor name. */
static int bindl(struct loader *l, struct lmoe_tensor *t, int il, const char *suffix,
                 int required, int64_t ne0, int64_t ne1, int64_t ne2) {
    char name[128];
    snprintf(name, sizeof name, "blk.%d.%s", il, suffix);
    return bind(l, t, name, required, ne0, ne1, ne2);
}

/* A vector (norm weight, bias) must be stored as F32 so the forward code can
 * read it directly; llama.cpp writes them so. */
static int need_f32(struct loader *l, const struct lmoe_tensor *t, const char *what, int il) {
    if (t->data && t->type != LMOE_DTYPE_F32)
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_UNSUPPORTED,
                         "model: layer %d %s is stored as %s; leanmoe expects f32",
                         il, what, lmoe_dtype_get(t->type)->name);
    return 0;
}

static int load_rope(struct loader *l, struct lmoe_hparams *hp) {
    int rc = key_f32(l, "rope.freq_base", &hp->rope_base, LMOE_DEFAULT_ROPE_BASE);
    if (rc) return rc;
    hp->rope_scale = 1.0f;
    hp->rope_mag = 1.0f;
    hp->yarn_beta_fast = LMOE_YARN_BETA_FAST;
    hp->yarn_beta_slow = LMOE_YARN_BETA_SLOW;
    hp->rope_orig_ctx = hp->n_ctx_train;
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", l->arch);
    struct gguf_str type = {"none", 4};
    if (gguf_find_kv(l->f, key) && (rc = gguf_get_str(l->f, key, &type, l->err, l->errlen)))
        return rc;
    float factor = 1.0f;
    if ((rc = key_f32(l, "rope.scaling.factor", &factor, 1.0f))) return rc;
    if (type.len == 4 && !memcmp(type.ptr, "none", 4)) return 0;
    if (factor <= 0)
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                         "model: rope.scaling.factor must be positive, is %g", factor);
    hp->rope_scale = factor;
    if (type.len == 6 && !memcmp(type.ptr, "linear", 6)) return 0;
    if (!(type.len == 4 && !memcmp(type.ptr, "yarn", 4)))
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_UNSUPPORTED,
                         "model: rope scaling type '%.*s' is not supported",
                         quote_len(type, 64), type.ptr);
    hp->rope_yarn = 1;
    if ((rc = key_u32(l, "rope.scaling.original_context_length", &hp->rope_orig_ctx,
                      hp->n_ctx_train)))
        return rc;
    if ((rc = key_f32(l, "rope.scaling.yarn_beta_fast", &hp->yarn_beta_fast, LMOE_YARN_BETA_FAST))) return rc;
    if ((rc = key_f32(l, "rope.scaling.yarn_beta_slow", &hp->yarn_beta_slow, LMOE_YARN_BETA_SLOW))) return rc;
    /* YaRN scales cos/sin by 0.1 ln(s) + 1 unless the model gives its own
     * attention-scale law (DeepSeek's mscale_all_dim, carried as
     * yarn_log_multiplier), in which case the rotary magnitude cancels to 1
     * and the correction moves into kq_scale (see load_deepseek2). */
    if (!has_key(l, "rope.scaling.yarn_log_multiplier") && factor > 1.0f)
        hp->rope_mag = 0.1f * logf(factor) + 1.0f;
    return 0;
}

/* The SwiGLU FFN of a dense layer: gate, up [n_embd -> n_ff], down back. */
static int bind_dense_ffn(struct loader *l, const struct lmoe_hparams *hp, struct lmoe_layer *L, int il) {
    int rc;
    if (hp->n_ff <= 0)
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT, "model: missing metadata key '%s.feed_forward_length'",
                         l->arch);
    if ((rc = bindl(l, &L->ffn_gate, il, "ffn_gate.weight", 1, hp->n_embd, hp->n_ff, 1)) ||
        (rc = bindl(l, &L->ffn_up, il, "ffn_up.weight", 1, hp->n_embd, hp->n_ff, 1)) ||
        (rc = bindl(l, &L->ffn_down, il, "ffn_down.weight", 1, hp->n_ff, hp->n_embd, 1)))
        return rc;
    return 0;
}

/* Plain attention + dense or MoE FFN: llama, qwen2, qwen3, qwen3moe. */
static int load_gqa_family(struct loader *l, struct lmoe_model *m) {
    struct lmoe_hparams *hp = &m->hp;
    int rc;
    if ((rc = key_u32(l, "attention.head_count_kv", &hp->n_head_kv, hp->n_head))) return rc;
    if (hp->n_head_kv <= 0 || hp->n_head % hp->n_head_kv)
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                         "model: %d heads cannot share %d kv heads", hp->n_head, hp->n_head_kv);
    int hd = hp->n_embd / hp->n_head;
    if ((rc = key_u32(l, "attention.key_length", &hp->head_dim_k, hd))) return rc;
    if ((rc = key_u32(l, "attention.value_length", &hp->head_dim_v, hp->head_dim_k))) return rc;
    if ((rc = key_u32(l, "rope.dimension_count", &hp->n_rot, hp->head_dim_k))) return rc;
    if (hp->n_rot > hp->head_dim_k || hp->n_rot % 2)
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                         "model: rope.dimension_count %d does not fit head size %d",
                         hp->n_rot, hp->head_dim_k);
    hp->rope_mode = hp->arch == LMOE_ARCH_LLAMA ? LMOE_ROPE_NORM : LMOE_ROPE_NEOX;
    /* Llama weights as published (not permuted by the converter) rotate
     * halves; the safetensors reader says so. */
    if (gguf_find_kv(l->f, "leanmoe.rope_neox")) hp->rope_mode = LMOE_ROPE_NEOX;
    if ((rc = key_u32(l, "feed_forward_length", &hp->n_ff, 0))) return rc;
    if ((rc = key_u32(l, "expert_count", &hp->n_expert, 0))) return rc;
    if ((rc = key_u32(l, "expert_used_count", &hp->n_expert_used, 0))) return rc;
    if ((rc = key_u32(l, "expert_feed_forward_length", &hp->n_ff_exp, hp->n_ff))) return rc;
    if (hp->arch == LMOE_ARCH_QWEN3MOE && hp->n_expert == 0)
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT, "model: qwen3moe without expert_count");
    hp->gating = LMOE_GATING_SOFTMAX;
    hp->expert_norm = 1; /* Mixtral and Qwen3-MoE renormalise the top-k */
    hp->expert_scale = 1.0f;
    hp->n_group = hp->n_group_used = 1;
    hp->kq_scale = 1.0f / sqrtf((float)hp->head_dim_k);
    /* Sizes from the file are each below 2^30; their products need 64 bits. */
    int64_t nq = (int64_t)hp->n_head * hp->head_dim_k, nk = (int64_t)hp->n_head_kv * hp->head_dim_k,
            nv = (int64_t)hp->n_head_kv * hp->head_dim_v;
    for (int il = 0; il < hp->n_layer; il++) {
        struct lmoe_layer *L = &m->layers[il];
        if ((rc = bindl(l, &L->attn_norm, il, "attn_norm.weight", 1, hp->n_embd, 1, 1)) ||
            (rc = bindl(l, &L->wq, il, "attn_q.weight", 1, hp->n_embd, nq, 1)) ||
            (rc = bindl(l, &L->wk, il, "attn_k.weight", 1, hp->n_embd, nk, 1)) ||
            (rc = bindl(l, &L->wv, il, "attn_v.weight", 1, hp->n_embd, nv, 1)) ||
            (rc = bindl(l, &L->wo, il, "attn_output.weight", 1, (int64_t)hp->n_head * hp->head_dim_v, hp->n_embd, 1)) ||
            (rc = bindl(l, &L->bq, il, "attn_q.bias", 0, nq, 1, 1)) ||
            (rc = bindl(l, &L->bk, il, "attn_k.bias", 0, nk, 1, 1)) ||
            (rc = bindl(l, &L->bv, il, "attn_v.bias", 0, nv, 1, 1)) ||
            (rc = bindl(l, &L->q_norm, il, "attn_q_norm.weight", hp->arch >= LMOE_ARCH_QWEN3, hp->head_dim_k, 1, 1)) ||
            (rc = bindl(l, &L->k_norm, il, "attn_k_norm.weight", hp->arch >= LMOE_ARCH_QWEN3, hp->head_dim_k, 1, 1)) ||
            (rc = bindl(l, &L->ffn_norm, il, "ffn_norm.weight", 1, hp->n_embd, 1, 1)))
            return rc;
        if ((rc = need_f32(l, &L->attn_norm, "attn_norm", il)) || (rc = need_f32(l, &L->ffn_norm, "ffn_norm", il)) ||
            (rc = need_f32(l, &L->bq, "attn_q.bias", il)) || (rc = need_f32(l, &L->bk, "attn_k.bias", il)) ||
            (rc = need_f32(l, &L->bv, "attn_v.bias", il)) || (rc = need_f32(l, &L->q_norm, "attn_q_norm", il)) ||
            (rc = need_f32(l, &L->k_norm, "attn_k_norm", il)))
            return rc;
        L->is_moe = hp->n_expert > 0;
        if (L->is_moe) {
            if (hp->n_expert_used <= 0 || hp->n_expert_used > hp->n_expert)
                return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                                 "model: expert_used_count %d with %d experts",
                                 hp->n_expert_used, hp->n_expert);
            if ((rc = bindl(l, &L->gate_inp, il, "ffn_gate_inp.weight", 1, hp->n_embd, hp->n_expert, 1)) ||
                (rc = bindl(l, &L->gate_exps, il, "ffn_gate_exps.weight", 1, hp->n_embd, hp->n_ff_exp, hp->n_expert)) ||
                (rc = bindl(l, &L->up_exps, il, "ffn_up_exps.weight", 1, hp->n_embd, hp->n_ff_exp, hp->n_expert)) ||
                (rc = bindl(l, &L->down_exps, il, "ffn_down_exps.weight", 1, hp->n_ff_exp, hp->n_embd, hp->n_expert)))
                return rc;
        } else if ((rc = bind_dense_ffn(l, hp, L, il))) {
            return rc;
        }
    }
    return 0;
}

/* DeepSeek-V2/V3 family: MLA attention, leading dense layers, then MoE with
 * shared experts. */
static int load_deepseek2(struct loader *l, struct lmoe_model *m) {
    struct lmoe_hparams *hp = &m->hp;
    int rc, qk_head, v_head;
    if ((rc = key_u32(l, "attention.q_lora_rank", &hp->q_lora_rank, 0)) ||
        (rc = key_u32(l, "attention.kv_lora_rank", &hp->kv_lora_rank, -1)) ||
        (rc = key_u32(l, "rope.dimension_count", &hp->qk_rope, -1)))
        return rc;
    /* Newer converters describe MLA as MQA over the latent (key_length =
     * kv_lora_rank + rope dims) and give the per-head sizes in *_mla keys;
     * older files give the per-head sizes in key_length/value_length. */
    if (has_key(l, "attention.key_length_mla")) {
        if ((rc = key_u32(l, "attention.key_length_mla", &qk_head, -1)) ||
            (rc = key_u32(l, "attention.value_length_mla", &v_head, -1)))
            return rc;
    } else if ((rc = key_u32(l, "attention.key_length", &qk_head, -1)) ||
               (rc = key_u32(l, "attention.value_length", &v_head, -1))) {
        return rc;
    }
    hp->qk_nope = qk_head - hp->qk_rope;
    hp->v_head_dim = v_head;
    hp->n_head_kv = hp->n_head;
    hp->head_dim_k = qk_head;
    hp->head_dim_v = v_head;
    hp->n_rot = hp->qk_rope;
    if (hp->qk_nope <= 0 || hp->qk_rope <= 0 || hp->qk_rope % 2 || v_head <= 0 ||
        hp->kv_lora_rank <= 0)
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                         "model: inconsistent MLA sizes (key %d, rope %d, value %d, kv_lora %d)",
                         qk_head, hp->qk_rope, v_head, hp->kv_lora_rank);
    hp->rope_mode = gguf_find_kv(l->f, "leanmoe.rope_neox") ? LMOE_ROPE_NEOX : LMOE_ROPE_NORM;
    if ((rc = key_u32(l, "feed_forward_length", &hp->n_ff, 0)) ||
        (rc = key_u32(l, "leading_dense_block_count", &hp->n_layer_dense_lead, 0)) ||
        (rc = key_u32(l, "expert_count", &hp->n_expert, 0)) ||
        (rc = key_u32(l, "expert_used_count", &hp->n_expert_used, 0)) ||
        (rc = key_u32(l, "expert_shared_count", &hp->n_expert_shared, 0)) ||
        (rc = key_u32(l, "expert_feed_forward_length", &hp->n_ff_exp, 0)) ||
        (rc = key_u32(l, "expert_group_count", &hp->n_group, 1)) ||
        (rc = key_u32(l, "expert_group_used_count", &hp->n_group_used, 1)) ||
        (rc = key_f32(l, "expert_weights_scale", &hp->expert_scale, 1.0f)))
        return rc;
    int gating = LMOE_GATING_SOFTMAX;
    if ((rc = key_u32(l, "expert_gating_func", &gating, LMOE_GATING_SOFTMAX))) return rc;
    if (gating != LMOE_GATING_SOFTMAX && gating != LMOE_GATING_SIGMOID)
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_UNSUPPORTED,
                         "model: expert_gating_func %d is not supported (1 softmax, 2 sigmoid)", gating);
    hp->gating = (enum lmoe_gating)gating;
    char key[160];
    snprintf(key, sizeof key, "%s.expert_weights_norm", l->arch);
    hp->expert_norm = 0;
    if (gguf_find_kv(l->f, key) && (rc = gguf_get_bool(l->f, key, &hp->expert_norm, l->err, l->errlen)))
        return rc;
    if (hp->n_group < 1) hp->n_group = 1;
    if (hp->n_group_used < 1 || hp->n_group_used > hp->n_group) hp->n_group_used = hp->n_group;
    if (hp->n_expert && (hp->n_expert % hp->n_group ||
                         hp->n_expert_used > hp->n_group_used * (hp->n_expert / hp->n_group)))
        return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                         "model: %d experts in %d groups (%d used) cannot give %d experts per token",
                         hp->n_expert, hp->n_group, hp->n_group_used, hp->n_expert_used);
    /* Attention scale: 1/sqrt(qk_head), times mscale^2 under YaRN, where
     * mscale = 1 + 0.1 * mscale_all_dim * ln(factor) and the file carries
     * 0.1 * mscale_all_dim as yarn_log_multiplier. */
    float log_mul = 0.0f;
    if ((rc = key_f32(l, "rope.scaling.yarn_log_multiplier", &log_mul, 0.0f))) return rc;
    float mscale = 1.0f;
    if (hp->rope_yarn && hp->rope_scale > 1.0f) mscale = 1.0f + log_mul * logf(hp->rope_scale);
    hp->kq_scale = mscale * mscale / sqrtf((float)qk_head);

    int nh = hp->n_head;
    for (int il = 0; il < hp->n_layer; il++) {
        struct lmoe_layer *L = &m->layers[il];
        if ((rc = bindl(l, &L->attn_norm, il, "attn_norm.weight", 1, hp->n_embd, 1, 1)) ||
            (rc = bindl(l, &L->ffn_norm, il, "ffn_norm.weight", 1, hp->n_embd, 1, 1)) ||
            (rc = bindl(l, &L->wkv_a_mqa, il, "attn_kv_a_mqa.weight", 1, hp->n_embd, (int64_t)hp->kv_lora_rank + hp->qk_rope, 1)) ||
            (rc = bindl(l, &L->kv_a_norm, il, "attn_kv_a_norm.weight", 1, hp->kv_lora_rank, 1, 1)) ||
            (rc = bindl(l, &L->wo, il, "attn_output.weight", 1, (int64_t)nh * v_head, hp->n_embd, 1)))
            return rc;
        if (hp->q_lora_rank > 0) {
            if ((rc = bindl(l, &L->wq_a, il, "attn_q_a.weight", 1, hp->n_embd, hp->q_lora_rank, 1)) ||
                (rc = bindl(l, &L->q_a_norm, il, "attn_q_a_norm.weight", 1, hp->q_lora_rank, 1, 1)) ||
                (rc = bindl(l, &L->wq_b, il, "attn_q_b.weight", 1, hp->q_lora_rank, (int64_t)nh * qk_head, 1)))
                return rc;
        } else if ((rc = bindl(l, &L->wq, il, "attn_q.weight", 1, hp->n_embd, (int64_t)nh * qk_head, 1))) {
            return rc;
        }
        /* Either the split absorbed-form tensors or the joined kv_b. */
        if ((rc = bindl(l, &L->wk_b, il, "attn_k_b.weight", 0, hp->qk_nope, hp->kv_lora_rank, nh)) ||
            (rc = bindl(l, &L->wv_b, il, "attn_v_b.weight", 0, hp->kv_lora_rank, v_head, nh)))
            return rc;
        if (!L->wk_b.data || !L->wv_b.data) {
            if ((rc = bindl(l, &L->wkv_b, il, "attn_kv_b.weight", 1, hp->kv_lora_rank,
                            (int64_t)nh * ((int64_t)hp->qk_nope + v_head), 1)))
                return rc;
        }
        if ((rc = need_f32(l, &L->attn_norm, "attn_norm", il)) || (rc = need_f32(l, &L->ffn_norm, "ffn_norm", il)) ||
            (rc = need_f32(l, &L->kv_a_norm, "attn_kv_a_norm", il)) || (rc = need_f32(l, &L->q_a_norm, "attn_q_a_norm", il)))
            return rc;
        L->is_moe = il >= hp->n_layer_dense_lead && hp->n_expert > 0;
        if (!L->is_moe) {
            if ((rc = bind_dense_ffn(l, hp, L, il))) return rc;
            continue;
        }
        if (hp->n_expert_used <= 0 || hp->n_ff_exp <= 0)
            return lmoe_errf(l->err, l->errlen, LMOE_ERR_FORMAT,
                             "model: MoE layer %d needs expert_used_count and expert_feed_forward_length", il);
        int64_t n_sh = (int64_t)hp->n_ff_exp * hp->n_expert_shared;
        if ((rc = bindl(l, &L->gate_inp, il, "ffn_gate_inp.weight", 1, hp->n_embd, hp->n_expert, 1)) ||
            (rc = bindl(l, &L->exp_probs_b, il, "exp_probs_b.bias", 0, hp->n_expert, 1, 1)) ||
            (rc = bindl(l, &L->gate_exps, il, "ffn_gate_exps.weight", 1, hp->n_embd, hp->n_ff_exp, hp->n_expert)) ||
            (rc = bindl(l, &L->up_exps, il, "ffn_up_exps.weight", 1, hp->n_embd, hp->n_ff_exp, hp->n_expert)) ||
            (rc = bindl(l, &L->down_exps, il, "ffn_down_exps.weight", 1, hp->n_ff_exp, hp->n_embd, hp->n_expert)) ||
            (rc = need_f32(l, &L->exp_probs_b, "exp_probs_b", il)))
            return rc;
        if (n_sh > 0 &&
            ((rc = bindl(l, &L->gate_shexp, il, "ffn_gate_shexp.weight", 1, hp->n_embd, n_sh, 1)) ||
             (rc = bindl(l, &L->up_shexp, il, "ffn_up_shexp.weight", 1, hp->n_embd, n_sh, 1)) ||
             (rc = bindl(l, &L->down_shexp, il, "ffn_down_shexp.weight", 1, n_sh, hp->n_embd, 1))))
            return rc;
    }
    return 0;
}

int lmoe_model_load(struct lmoe_model *m, const struct gguf_file *f, char *err, size_t errlen) {
    memset(m, 0, sizeof(*m));
    struct gguf_str arch;
    int rc = gguf_get_str(f, "general.architecture", &arch, err, errlen);
    if (rc) return rc;
    static const struct { const char *name; enum lmoe_arch arch; } archs[] = {
        {"llama", LMOE_ARCH_LLAMA},         {"qwen2", LMOE_ARCH_QWEN2},
        {"qwen3", LMOE_ARCH_QWEN3},         {"qwen3moe", LMOE_ARCH_QWEN3MOE},
        {"deepseek2", LMOE_ARCH_DEEPSEEK2},
    };
    int found = -1;
    for (int i = 0; i < (int)(sizeof archs / sizeof archs[0]); i++)
        if (strlen(archs[i].name) == arch.len && !memcmp(archs[i].name, arch.ptr, arch.len))
            found = i;
    if (found < 0)
        return lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED,
                         "model: architecture '%.*s' is not supported (llama, qwen2, "
                         "qwen3, qwen3moe, deepseek2 are)",
                         quote_len(arch, 64), arch.ptr);
    snprintf(m->arch_name, sizeof m->arch_name, "%s", archs[found].name);
    struct lmoe_hparams *hp = &m->hp;
    hp->arch = archs[found].arch;
    struct loader l = {f, m->arch_name, err, errlen};
    if ((rc = key_u32(&l, "block_count", &hp->n_layer, -1)) ||
        (rc = key_u32(&l, "embedding_length", &hp->n_embd, -1)) ||
        (rc = key_u32(&l, "attention.head_count", &hp->n_head, -1)) ||
        (rc = key_u32(&l, "context_length", &hp->n_ctx_train, -1)) ||
        (rc = key_f32(&l, "attention.layer_norm_rms_epsilon", &hp->rms_eps, LMOE_DEFAULT_RMS_EPS)))
        return rc;
    /* Multi-token-prediction layers sit after the main stack and are not
     * part of the next-token forward pass: leave them out. */
    int n_nextn = 0;
    if ((rc = key_u32(&l, "nextn_predict_layers", &n_nextn, 0))) return rc;
    if (n_nextn > 0 && n_nextn < hp->n_layer) hp->n_layer -= n_nextn;
    if (hp->n_layer <= 0 || hp->n_embd <= 0 || hp->n_head <= 0 || hp->n_ctx_train <= 0)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                         "model: block_count, embedding_length, head_count and "
                         "context_length must be positive");
    /* Every layer binds several tensors: a larger count is corrupt, and
     * must not size the allocation below. */
    if ((uint64_t)hp->n_layer > f->n_tensors)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                         "model: %s.block_count is %d but the file has %" PRIu64 " tensors",
                         m->arch_name, hp->n_layer, f->n_tensors);
    const struct gguf_tensor *te = gguf_find_tensor(f, "token_embd.weight");
    if (!te) return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "model: missing tensor 'token_embd.weight'");
    hp->n_vocab = (int)te->ne[1];
    if ((rc = load_rope(&l, hp))) return rc;
    if (!(m->layers = calloc((size_t)hp->n_layer, sizeof(*m->layers))))
        return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "model: out of memory");
    if ((rc = bind(&l, &m->tok_embd, "token_embd.weight", 1, hp->n_embd, hp->n_vocab, 1)) ||
        (rc = bind(&l, &m->output_norm, "output_norm.weight", 1, hp->n_embd, 1, 1)) ||
        (rc = bind(&l, &m->output, "output.weight", 0, hp->n_embd, hp->n_vocab, 1)) ||
        (rc = need_f32(&l, &m->output_norm, "output_norm", -1)))
        goto fail;
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    rc = hp->arch == LMOE_ARCH_DEEPSEEK2 ? load_deepseek2(&l, m) : load_gqa_family(&l, m);
    if (rc) goto fail;
    if (hp->n_expert > 0 && hp->n_expert_used > hp->n_expert) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "model: more experts used than exist");
        goto fail;
    }
    return 0;
fail:
    lmoe_model_free(m);
    return rc;
}

void lmoe_model_free(struct lmoe_model *m) {
    free(m->layers);
    m->layers = NULL;
}

static uint64_t numel(const struct lmoe_tensor *t) {
    return t->data ? (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]) : 0;
}

static uint64_t nbytes(const struct lmoe_tensor *t) {
    return t->data ? (uint64_t)t->row_bytes * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]) : 0;
}

void lmoe_model_count_params(const struct lmoe_model *m, uint64_t *total, uint64_t *active,
                             uint64_t *bytes_active) {
    /* Every weight of a layer but the routed experts counts for every token;
     * of the routed experts, n_expert_used of n_expert do. Of the token
     * embedding a decode step reads one row. */
    uint64_t all = numel(&m->tok_embd) + numel(&m->output_norm), act, bytes;
    if (m->output.data != m->tok_embd.data) all += numel(&m->output);
    act = all;
    bytes = m->tok_embd.row_bytes + nbytes(&m->output_norm) + nbytes(&m->output);
    for (int il = 0; il < m->hp.n_layer; il++) {
        const struct lmoe_layer *L = &m->layers[il];
        const struct lmoe_tensor *ts[] = {
            &L->attn_norm, &L->ffn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->bq, &L->bk,
            &L->bv, &L->q_norm, &L->k_norm, &L->wq_a, &L->q_a_norm, &L->wq_b,
            &L->wkv_a_mqa, &L->kv_a_norm, &L->wkv_b, &L->wk_b, &L->wv_b, &L->ffn_gate,
            &L->ffn_up, &L->ffn_down, &L->gate_inp, &L->exp_probs_b, &L->gate_shexp,
            &L->up_shexp, &L->down_shexp};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            all += numel(ts[i]);
            act += numel(ts[i]);
            bytes += nbytes(ts[i]);
        }
        uint64_t experts = numel(&L->gate_exps) + numel(&L->up_exps) + numel(&L->down_exps);
        uint64_t expert_bytes = nbytes(&L->gate_exps) + nbytes(&L->up_exps) + nbytes(&L->down_exps);
        all += experts;
        if (L->is_moe && m->hp.n_expert) {
            act += experts / (uint64_t)m->hp.n_expert * (uint64_t)m->hp.n_expert_used;
            bytes += expert_bytes / (uint64_t)m->hp.n_expert * (uint64_t)m->hp.n_expert_used;
        }
    }
    *total = all;
    *active = act;
    *bytes_active = bytes;
}
