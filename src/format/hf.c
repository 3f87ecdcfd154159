/*
 * hf.c - a Hugging Face checkpoint folder seen as a GGUF tensor directory.
 *
 * hf_model_open reads config.json and the safetensors shards (mapped, never
 * copied; see safetensors.c) and builds a struct gguf_file in memory:
 *
 *   metadata  the keys llama.cpp's convert_hf_to_gguf.py writes for the
 *             architecture (general.architecture, <arch>.block_count, ...,
 *             rope.scaling.*, expert_gating_func, ...), from config.json,
 *             plus "leanmoe.rope_neox" where the published q/k layout
 *             rotates halves (llama: the converter would permute rows);
 *   tensors   under GGUF names with GGUF shapes (ne[0] = the row length),
 *             pointing into the shards. Per-expert HF tensors become one
 *             3-D tensor whose experts are reached through expert_data;
 *             FP8 weights keep their bytes and their weight_scale_inv
 *             blocks (block_scale / expert_scale); vectors that are not
 *             aligned F32 are converted to F32 (the only copies).
 *
 * model/arch.c then binds it exactly as it binds a GGUF file, with the same
 * shape checks against the metadata. Multi-token-prediction layers past
 * num_hidden_layers are left out, and so are names no architecture uses.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "format/safetensors.h"
#include "leanmoe.h"
#include "quant/quant.h"

/* Config sizes above this are treated as corrupt (the binder's bound). */
#define HF_MAX_DIM (1 << 30)

enum hf_arch { HF_LLAMA, HF_QWEN2, HF_QWEN3, HF_QWEN3MOE, HF_DEEPSEEK2 };

/* Which matrix of an expert. */
enum { EXP_GATE, EXP_UP, EXP_DOWN, EXP_KINDS };

/* The per-expert HF tensors of one (layer, kind), gathered while scanning. */
struct expert_group {
    const struct st_tensor **parts; /* [n_expert] */
    const struct st_tensor *fused;  /* transformers' in-memory layout: gate_up_proj / down_proj */
};

struct hf_model {
    struct gguf_file g;
    struct st_file **shards;
    int n_shards;
    const char **src; /* [n_tensors] HF name of each GGUF tensor (borrowed) */
    void **owned;     /* every allocation the directory points into */
    size_t n_owned, cap_owned;
    uint64_t cap_kv, cap_tensors;
    /* while opening */
    const char *dir;
    json_t *cfg;
    enum hf_arch arch;
    const char *arch_name;
    int n_layer, n_expert;
    const struct st_tensor **all; /* every shard's tensors, by name */
    size_t n_all;
    char *err;
    size_t errlen;
};

static int oom(struct hf_model *m) { return lmoe_errf(m->err, m->errlen, LMOE_ERR_NOMEM, "%s: out of memory", m->dir); }

/* malloc whose block the model frees at close. */
static void *own(struct hf_model *m, size_t n) {
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **p = realloc(m->owned, cap * sizeof(*p));
        if (!p) return NULL;
        m->owned = p;
        m->cap_owned = cap;
    }
    void *p = malloc(n ? n : 1);
    if (p) m->owned[m->n_owned++] = p;
    return p;
}

static char *own_str(struct hf_model *m, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = own(m, n);
    if (p) memcpy(p, s, n);
    return p;
}

int hf_is_dir(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- Metadata ---------------------------------------------------------- */

static struct gguf_kv *kv_new(struct hf_model *m, const char *key, uint32_t type) {
    struct gguf_file *g = &m->g;
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (!strcmp(g->kv[i].key, key)) return NULL; /* programmer error: set twice */
    if (g->n_kv == m->cap_kv) {
        uint64_t cap = m->cap_kv ? 2 * m->cap_kv : 32;
        struct gguf_kv *p = realloc(g->kv, cap * sizeof(*p));
        if (!p) return NULL;
        g->kv = p;
        m->cap_kv = cap;
    }
    struct gguf_kv *kv = &g->kv[g->n_kv];
    memset(kv, 0, sizeof(*kv));
    if (!(kv->key = strdup(key))) return NULL;
    kv->type = type;
    g->n_kv++;
    return kv;
}

/* <arch>.<suffix> keys, as the binder reads them. */
static int set_u32(struct hf_model *m, const char *suffix, int64_t v) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    struct gguf_kv *kv = kv_new(m, key, GGUF_TYPE_UINT32);
    if (!kv) return oom(m);
    kv->v.u64 = (uint64_t)v;
    return 0;
}

static int set_f32(struct hf_model *m, const char *suffix, double v) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    struct gguf_kv *kv = kv_new(m, key, GGUF_TYPE_FLOAT32);
    if (!kv) return oom(m);
    kv->v.f64 = (float)v;
    return 0;
}

static int set_bool_key(struct hf_model *m, const char *key, int v) {
    struct gguf_kv *kv = kv_new(m, key, GGUF_TYPE_BOOL);
    if (!kv) return oom(m);
    kv->v.u64 = v != 0;
    return 0;
}

static int set_str_key(struct hf_model *m, const char *key, const char *v) {
    struct gguf_kv *kv = kv_new(m, key, GGUF_TYPE_STRING);
    char *s = kv ? own_str(m, v) : NULL;
    if (!s) return oom(m);
    kv->v.str.ptr = s;
    kv->v.str.len = strlen(s);
    return 0;
}

/* config.json field `name` of object o (the config itself or rope_scaling)
 * as a size: 1 if present, 0 if absent or null, an error if not a size. */
static int cfg_size(struct hf_model *m, json_t *o, const char *name, int64_t *out, int64_t lo) {
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > HF_MAX_DIM) {
        lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s/config.json: '%s' must be an integer from %" PRId64 " to %d",
                  m->dir, name, lo, HF_MAX_DIM);
        return -1;
    }
    *out = (int64_t)json_integer_value(v);
    return 1;
}

/* A size that must be present. */
static int cfg_need(struct hf_model *m, const char *name, int64_t *out) {
    int r = cfg_size(m, m->cfg, name, out, 1);
    if (r == 0)
        lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s/config.json: missing '%s'", m->dir, name);
    return r == 1 ? 0 : -1;
}

/* A number: 1 if present, 0 if absent or null, -1 (message set) if not a
 * finite number. */
static int cfg_num(struct hf_model *m, json_t *o, const char *name, double *out) {
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v) || !isfinite(json_number_value(v))) {
        lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s/config.json: '%s' must be a number", m->dir, name);
        return -1;
    }
    *out = json_number_value(v);
    return 1;
}

/* A boolean: 1/0 into *out when present (returns 1), 0 when absent. */
static int cfg_bool(struct hf_model *m, const char *name, int *out) {
    json_t *v = json_object_get(m->cfg, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) {
        lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s/config.json: '%s' must be true or false", m->dir, name);
        return -1;
    }
    *out = json_is_true(v);
    return 1;
}

static const char *cfg_str(json_t *o, const char *name) { return json_string_value(json_object_get(o, name)); }

/* The first of several aliases that is present (sizes). */
static int cfg_size_any(struct hf_model *m, const char *const *names, int64_t *out) {
    for (int i = 0; names[i]; i++) {
        int r = cfg_size(m, m->cfg, names[i], out, 0);
        if (r) return r;
    }
    return 0;
}

/* Where rope settings live: transformers 5 writes rope_parameters
 * {rope_theta, rope_type, factor, ...}; published configs rope_theta and
 * rope_scaling {type or rope_type, factor, ...}. */
static int set_rope(struct hf_model *m) {
    json_t *params = json_object_get(m->cfg, "rope_parameters");
    json_t *scaling = json_object_get(m->cfg, "rope_scaling");
    if (!json_is_object(params)) params = NULL;
    if (!json_is_object(scaling)) scaling = params;
    double theta = 10000.0;
    int r = cfg_num(m, m->cfg, "rope_theta", &theta);
    if (r == 0 && params) r = cfg_num(m, params, "rope_theta", &theta);
    if (r < 0 || (r = set_f32(m, "rope.freq_base", theta))) return r < 0 ? LMOE_ERR_FORMAT : r;
    if (!scaling) return 0;
    const char *type = cfg_str(scaling, "rope_type");
    if (!type) type = cfg_str(scaling, "type");
    if (!type || !strcmp(type, "default")) return 0;
    double factor = 0;
    if (cfg_num(m, scaling, "factor", &factor) != 1 || factor <= 0)
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s/config.json: rope scaling '%s' needs a positive factor",
                         m->dir, type);
    int rc;
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch_name);
    if (!strcmp(type, "linear")) {
        if ((rc = set_str_key(m, key, "linear")) || (rc = set_f32(m, "rope.scaling.factor", factor))) return rc;
        return 0;
    }
    if (strcmp(type, "yarn") && strcmp(type, "deepseek_yarn"))
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_UNSUPPORTED,
                         "%s/config.json: rope scaling type '%.40s' is not supported (linear and yarn are)", m->dir,
                         type);
    int64_t orig = 0;
    if ((r = cfg_size(m, scaling, "original_max_position_embeddings", &orig, 1)) < 0) return LMOE_ERR_FORMAT;
    if (r == 0)
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT,
                         "%s/config.json: yarn rope scaling needs original_max_position_embeddings", m->dir);
    if ((rc = set_str_key(m, key, "yarn")) || (rc = set_f32(m, "rope.scaling.factor", factor)) ||
        (rc = set_u32(m, "rope.scaling.original_context_length", orig)))
        return rc;
    double v;
    if ((r = cfg_num(m, scaling, "beta_fast", &v)) < 0 || (r == 1 && (rc = set_f32(m, "rope.scaling.yarn_beta_fast", v))))
        return r < 0 ? LMOE_ERR_FORMAT : rc;
    if ((r = cfg_num(m, scaling, "beta_slow", &v)) < 0 || (r == 1 && (rc = set_f32(m, "rope.scaling.yarn_beta_slow", v))))
        return r < 0 ? LMOE_ERR_FORMAT : rc;
    /* DeepSeek's attention-scale law: the converter carries mscale_all_dim
     * as 0.1 * mscale_all_dim (see arch.c load_deepseek2). */
    if (m->arch == HF_DEEPSEEK2) {
        if ((r = cfg_num(m, scaling, "mscale_all_dim", &v)) < 0 ||
            (r == 1 && (rc = set_f32(m, "rope.scaling.yarn_log_multiplier", 0.1 * v))))
            return r < 0 ? LMOE_ERR_FORMAT : rc;
    }
    return 0;
}

/* The keys every family shares (TextModel.set_gguf_parameters). */
static int set_common(struct hf_model *m) {
    int64_t n_embd, n_head, n_ctx, n_ff = 0, n_head_kv, v;
    double eps = 1e-6;
    int rc;
    if (cfg_need(m, "hidden_size", &n_embd) || cfg_need(m, "num_attention_heads", &n_head) ||
        cfg_need(m, "max_position_embeddings", &n_ctx) || cfg_size(m, m->cfg, "intermediate_size", &n_ff, 1) < 0 ||
        cfg_num(m, m->cfg, "rms_norm_eps", &eps) < 0)
        return LMOE_ERR_FORMAT;
    n_head_kv = n_head;
    if (cfg_size(m, m->cfg, "num_key_value_heads", &n_head_kv, 1) < 0) return LMOE_ERR_FORMAT;
    if (m->arch == HF_DEEPSEEK2) n_head_kv = 1; /* MLA is written as MQA over the latent */
    if ((rc = set_u32(m, "block_count", m->n_layer)) || (rc = set_u32(m, "context_length", n_ctx)) ||
        (rc = set_u32(m, "embedding_length", n_embd)) || (n_ff && (rc = set_u32(m, "feed_forward_length", n_ff))) ||
        (rc = set_u32(m, "attention.head_count", n_head)) || (rc = set_u32(m, "attention.head_count_kv", n_head_kv)) ||
        (rc = set_f32(m, "attention.layer_norm_rms_epsilon", eps)) || (rc = set_rope(m)))
        return rc;
    if (m->n_expert && (rc = set_u32(m, "expert_count", m->n_expert))) return rc;
    static const char *const used[] = {"num_experts_per_tok", "num_experts_per_token", NULL};
    int r = cfg_size_any(m, used, &v);
    if (r < 0 || (r == 1 && m->n_expert && (rc = set_u32(m, "expert_used_count", v)))) return r < 0 ? LMOE_ERR_FORMAT : rc;
    if (m->arch != HF_DEEPSEEK2 && (r = cfg_size(m, m->cfg, "head_dim", &v, 1)) != 0) {
        if (r < 0 || (rc = set_u32(m, "attention.key_length", v)) || (rc = set_u32(m, "attention.value_length", v)))
            return r < 0 ? LMOE_ERR_FORMAT : rc;
    }
    return 0;
}

/* DeepseekV2Model.set_gguf_parameters. */
static int set_deepseek2(struct hf_model *m) {
    int64_t vocab, kv_lora, nope, rope, vdim, q_lora = 0, dense = 0, ff_exp = 0, shared = 0, ng = 0, tg = 0;
    int rc, r;
    if (cfg_need(m, "vocab_size", &vocab) || cfg_need(m, "kv_lora_rank", &kv_lora) ||
        cfg_need(m, "qk_nope_head_dim", &nope) || cfg_need(m, "qk_rope_head_dim", &rope) ||
        cfg_need(m, "v_head_dim", &vdim) || cfg_size(m, m->cfg, "q_lora_rank", &q_lora, 1) < 0 ||
        cfg_size(m, m->cfg, "first_k_dense_replace", &dense, 0) < 0 ||
        cfg_size(m, m->cfg, "moe_intermediate_size", &ff_exp, 1) < 0 ||
        cfg_size(m, m->cfg, "n_shared_experts", &shared, 0) < 0 || cfg_size(m, m->cfg, "n_group", &ng, 1) < 0 ||
        cfg_size(m, m->cfg, "topk_group", &tg, 1) < 0)
        return LMOE_ERR_FORMAT;
    if (!m->n_expert) dense = m->n_layer;
    if ((rc = set_u32(m, "leading_dense_block_count", dense)) || (rc = set_u32(m, "vocab_size", vocab)) ||
        (q_lora && (rc = set_u32(m, "attention.q_lora_rank", q_lora))) ||
        (rc = set_u32(m, "attention.kv_lora_rank", kv_lora)) || (rc = set_u32(m, "attention.key_length", kv_lora + rope)) ||
        (rc = set_u32(m, "attention.value_length", kv_lora)) ||
        (rc = set_u32(m, "attention.key_length_mla", nope + rope)) ||
        (rc = set_u32(m, "attention.value_length_mla", vdim)) || (rc = set_u32(m, "rope.dimension_count", rope)) ||
        (ff_exp && (rc = set_u32(m, "expert_feed_forward_length", ff_exp))) ||
        (rc = set_u32(m, "expert_shared_count", shared)))
        return rc;
    /* Group-limited routing applies unless the method is plain greedy. */
    const char *method = cfg_str(m->cfg, "topk_method");
    if (method && !strcmp(method, "greedy")) ng = tg = 0;
    if ((ng && (rc = set_u32(m, "expert_group_count", ng))) || (tg && (rc = set_u32(m, "expert_group_used_count", tg))))
        return rc;
    double scale;
    if ((r = cfg_num(m, m->cfg, "routed_scaling_factor", &scale)) < 0 ||
        (r == 1 && (rc = set_f32(m, "expert_weights_scale", scale))))
        return r < 0 ? LMOE_ERR_FORMAT : rc;
    int norm = 0;
    if ((r = cfg_bool(m, "norm_topk_prob", &norm)) < 0) return LMOE_ERR_FORMAT;
    char key[160];
    snprintf(key, sizeof key, "%s.expert_weights_norm", m->arch_name);
    if (norm && (rc = set_bool_key(m, key, 1))) return rc;
    /* DeepseekV3ForCausalLM always scores with a sigmoid; V2 with a
     * softmax. scoring_func, when given, says which (as the converter
     * reads it). */
    const char *score = cfg_str(m->cfg, "scoring_func");
    const char *hf_arch = json_string_value(json_array_get(json_object_get(m->cfg, "architectures"), 0));
    int sigmoid = score ? !strcmp(score, "sigmoid") : hf_arch && strstr(hf_arch, "V3") != NULL;
    if (score && strcmp(score, "sigmoid") && strcmp(score, "softmax"))
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_UNSUPPORTED,
                         "%s/config.json: scoring_func '%.40s' is not supported (softmax, sigmoid are)", m->dir, score);
    if (m->n_expert && (rc = set_u32(m, "expert_gating_func", sigmoid ? 2 : 1))) return rc;
    return 0;
}

/* LlamaModel / Qwen*Model extras. */
static int set_gqa_extras(struct hf_model *m) {
    int64_t v, n_embd = 0, n_head = 1;
    int rc, r;
    if (m->arch == HF_LLAMA) {
        if (cfg_need(m, "vocab_size", &v) || (rc = set_u32(m, "vocab_size", v))) return LMOE_ERR_FORMAT;
        cfg_size(m, m->cfg, "hidden_size", &n_embd, 1);
        cfg_size(m, m->cfg, "num_attention_heads", &n_head, 1);
        if ((r = cfg_size(m, m->cfg, "head_dim", &v, 1)) < 0) return LMOE_ERR_FORMAT;
        if (r == 0) v = n_embd / n_head;
        if ((rc = set_u32(m, "rope.dimension_count", v))) return rc;
        /* The converter permutes q/k rows for NORM rotation; the published
         * rows rotate halves. */
        if ((rc = set_bool_key(m, "leanmoe.rope_neox", 1))) return rc;
    }
    if (m->arch == HF_QWEN3MOE) {
        if ((r = cfg_size(m, m->cfg, "moe_intermediate_size", &v, 1)) < 0) return LMOE_ERR_FORMAT;
        if (r == 1 && (rc = set_u32(m, "expert_feed_forward_length", v))) return rc;
        /* The binder renormalises the top-k of Qwen3-MoE (as llama.cpp
         * does); a config that says otherwise would be computed wrongly. */
        int norm = 1;
        if (cfg_bool(m, "norm_topk_prob", &norm) < 0) return LMOE_ERR_FORMAT;
        if (!norm)
            return lmoe_errf(m->err, m->errlen, LMOE_ERR_UNSUPPORTED,
                             "%s/config.json: qwen3moe with norm_topk_prob false is not supported", m->dir);
    }
    return 0;
}

/* ---- Architecture ------------------------------------------------------ */

static int pick_arch(struct hf_model *m) {
    static const struct {
        const char *hf;
        enum hf_arch arch;
        const char *gguf;
    } archs[] = {
        {"LlamaForCausalLM", HF_LLAMA, "llama"},          {"MistralForCausalLM", HF_LLAMA, "llama"},
        {"MixtralForCausalLM", HF_LLAMA, "llama"},        {"Qwen2ForCausalLM", HF_QWEN2, "qwen2"},
        {"Qwen3ForCausalLM", HF_QWEN3, "qwen3"},          {"Qwen3MoeForCausalLM", HF_QWEN3MOE, "qwen3moe"},
        {"DeepseekV2ForCausalLM", HF_DEEPSEEK2, "deepseek2"}, {"DeepseekV3ForCausalLM", HF_DEEPSEEK2, "deepseek2"},
    };
    const char *name = json_string_value(json_array_get(json_object_get(m->cfg, "architectures"), 0));
    for (size_t i = 0; name && i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(name, archs[i].hf)) {
            m->arch = archs[i].arch;
            m->arch_name = archs[i].gguf;
            return 0;
        }
    return lmoe_errf(m->err, m->errlen, LMOE_ERR_UNSUPPORTED,
                     "%s/config.json: architecture '%.60s' is not supported (Llama, Mistral, Mixtral, Qwen2, Qwen3, "
                     "Qwen3Moe, DeepseekV2, DeepseekV3 ForCausalLM are)",
                     m->dir, name ? name : "(none)");
}

/* quantization_config: absent, or DeepSeek-style FP8 with 128 x 128 blocks. */
static int check_quant(struct hf_model *m) {
    json_t *q = json_object_get(m->cfg, "quantization_config");
    if (!q || json_is_null(q)) return 0;
    const char *method = cfg_str(q, "quant_method");
    if (!method || strcmp(method, "fp8"))
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_UNSUPPORTED,
                         "%s/config.json: quantization '%.40s' is not supported (fp8 with 128x128 blocks is)", m->dir,
                         method ? method : "(none)");
    json_t *bs = json_object_get(q, "weight_block_size");
    if (!json_is_array(bs) || json_array_size(bs) != 2 || json_integer_value(json_array_get(bs, 0)) != LMOE_FP8_BLOCK ||
        json_integer_value(json_array_get(bs, 1)) != LMOE_FP8_BLOCK)
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_UNSUPPORTED,
                         "%s/config.json: fp8 weight_block_size must be [128, 128]", m->dir);
    return 0;
}

/* ---- Shards ------------------------------------------------------------ */

static int cmp_tensor_ptr(const void *x, const void *y) {
    return strcmp((*(const struct st_tensor *const *)x)->name, (*(const struct st_tensor *const *)y)->name);
}

static int cmp_str(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

/* A shard name from the index must be a plain file name in the folder. */
static int plain_file_name(const char *s) {
    return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static int open_shard(struct hf_model *m, const char *file) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", m->dir, file);
    struct st_file **p = realloc(m->shards, (size_t)(m->n_shards + 1) * sizeof(*p));
    if (!p) return oom(m);
    m->shards = p;
    int rc = st_open(&m->shards[m->n_shards], path, m->err, m->errlen);
    if (rc == LMOE_ERR_IO)
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_IO, "%s: shard '%.200s' cannot be opened: %s", m->dir, file,
                         strerror(errno ? errno : ENOENT));
    if (rc) return rc;
    m->n_shards++;
    return 0;
}

/* The shard files: those model.safetensors.index.json names, or
 * model.safetensors, or every *.safetensors in the folder. */
static int open_shards(struct hf_model *m) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", m->dir);
    json_error_t je;
    json_t *idx = NULL;
    char **files = NULL;
    size_t n_files = 0;
    int rc = 0;
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!(idx = json_load_file(path, JSON_REJECT_DUPLICATES, &je)))
            return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s: not valid JSON (line %d: %s)", path, je.line,
                             je.text);
        json_t *wm = json_object_get(idx, "weight_map");
        if (!json_is_object(wm)) {
            json_decref(idx);
            return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s: no weight_map object", path);
        }
        files = calloc(json_object_size(wm) + 1, sizeof(*files));
        if (!files) rc = oom(m);
        const char *key;
        json_t *v;
        json_object_foreach(wm, key, v) {
            if (rc) break;
            const char *f = json_string_value(v);
            if (!f || !plain_file_name(f)) {
                rc = lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s: tensor '%.80s' names a bad shard file", path, key);
                break;
            }
            files[n_files++] = (char *)f;
        }
        if (!rc) {
            qsort(files, n_files, sizeof(*files), cmp_str);
            size_t u = 0;
            for (size_t i = 0; i < n_files; i++)
                if (!u || strcmp(files[u - 1], files[i])) files[u++] = files[i];
            n_files = u;
        }
        for (size_t i = 0; i < n_files && !rc; i++) rc = open_shard(m, files[i]);
        /* Every indexed tensor must be in the shard the index names
         * (shards were opened in the order of the sorted names). */
        json_object_foreach(wm, key, v) {
            if (rc) break;
            const char *f = json_string_value(v);
            char **at = bsearch(&f, files, n_files, sizeof(*files), cmp_str);
            if (!at || !st_find(m->shards[at - files], key))
                rc = lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT,
                               "%s: tensor '%.120s' is not in shard '%.120s' as the index says", m->dir, key, f);
        }
        free(files);
        json_decref(idx);
        return rc;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", m->dir);
    if (stat(path, &st) == 0) return open_shard(m, "model.safetensors");
    DIR *d = opendir(m->dir);
    if (!d) return lmoe_errf(m->err, m->errlen, LMOE_ERR_IO, "%s: cannot list: %s", m->dir, strerror(errno));
    struct dirent *de;
    size_t cap = 0;
    while (!rc && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 12 || strcmp(de->d_name + n - 12, ".safetensors")) continue;
        if (n_files == cap) {
            char **p = realloc(files, (cap = cap ? 2 * cap : 16) * sizeof(*p));
            if (!p) { rc = oom(m); break; }
            files = p;
        }
        if (!(files[n_files] = strdup(de->d_name))) rc = oom(m);
        else n_files++;
    }
    closedir(d);
    if (!rc && !n_files)
        rc = lmoe_errf(m->err, m->errlen, LMOE_ERR_IO,
                       "%s: no model.safetensors, model.safetensors.index.json or *.safetensors file", m->dir);
    if (!rc) qsort(files, n_files, sizeof(*files), cmp_str);
    for (size_t i = 0; i < n_files && !rc; i++) rc = open_shard(m, files[i]);
    for (size_t i = 0; i < n_files; i++) free(files[i]);
    free(files);
    return rc;
}

/* Every shard's tensors in one name-sorted list; a name in two shards is
 * an error. */
static int index_tensors(struct hf_model *m) {
    size_t n = 0;
    for (int s = 0; s < m->n_shards; s++) n += m->shards[s]->n_tensors;
    if (!(m->all = malloc((n ? n : 1) * sizeof(*m->all)))) return oom(m);
    for (int s = 0; s < m->n_shards; s++)
        for (size_t i = 0; i < m->shards[s]->n_tensors; i++) m->all[m->n_all++] = &m->shards[s]->tensors[i];
    qsort(m->all, m->n_all, sizeof(*m->all), cmp_tensor_ptr);
    for (size_t i = 1; i < m->n_all; i++)
        if (!strcmp(m->all[i - 1]->name, m->all[i]->name))
            return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s: tensor '%.120s' is in two shards", m->dir,
                             m->all[i]->name);
    return 0;
}

static const struct st_tensor *find(const struct hf_model *m, const char *name) {
    size_t lo = 0, hi = m->n_all;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->all[mid]->name, name);
        if (c == 0) return m->all[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* ---- Tensors ----------------------------------------------------------- */

/* HF layer suffix -> GGUF suffix, for every family. */
static const struct {
    const char *hf, *gguf;
} layer_names[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
    {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
    {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
    {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
    {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
    {"self_attn.kv_b_proj.weight", "attn_kv_b.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.gate.e_score_correction_bias", "exp_probs_b.bias"},
    {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
    {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
};

static const char *const exp_gguf[EXP_KINDS] = {"ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"};

/* The enum lmoe_dtype of a safetensors dtype, or -1. */
static int dtype_of(int st) {
    switch (st) {
    case ST_F32: return LMOE_DTYPE_F32;
    case ST_F16: return LMOE_DTYPE_F16;
    case ST_BF16: return LMOE_DTYPE_BF16;
    case ST_F8_E4M3: return LMOE_DTYPE_F8_E4M3_B128;
    case ST_F8_E5M2: return LMOE_DTYPE_F8_E5M2_B128;
    }
    return -1;
}

static struct gguf_tensor *tensor_new(struct hf_model *m, const char *name, const char *src) {
    struct gguf_file *g = &m->g;
    if (g->n_tensors == m->cap_tensors) {
        uint64_t cap = m->cap_tensors ? 2 * m->cap_tensors : 64;
        struct gguf_tensor *p = realloc(g->tensors, cap * sizeof(*p));
        const char **q = realloc(m->src, cap * sizeof(*q));
        if (p) g->tensors = p;
        if (q) m->src = q;
        if (!p || !q) return NULL;
        m->cap_tensors = cap;
    }
    struct gguf_tensor *t = &g->tensors[g->n_tensors];
    memset(t, 0, sizeof(*t));
    if (!(t->name = strdup(name))) return NULL;
    m->src[g->n_tensors++] = src;
    return t;
}

/* The f32 values of a vector (any float dtype), as an owned copy. */
static const float *vector_f32(struct hf_model *m, const struct st_tensor *s, int64_t n) {
    float *f = own(m, sizeof(float) * (size_t)n);
    if (!f) return NULL;
    const uint8_t *p = s->data;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        switch (s->dtype) {
        case ST_F32: memcpy(&f[i], p + 4 * i, 4); break;
        case ST_F16: memcpy(&h, p + 2 * i, 2); f[i] = lmoe_f16_to_f32(h); break;
        case ST_BF16: memcpy(&h, p + 2 * i, 2); f[i] = lmoe_bf16_to_f32(h); break;
        case ST_F8_E4M3: f[i] = lmoe_f8_e4m3_to_f32(p[i]); break;
        case ST_F8_E5M2: f[i] = lmoe_f8_e5m2_to_f32(p[i]); break;
        default: f[i] = 0;
        }
    }
    return f;
}

/* The block scales of FP8 weight `s` (rows x cols): its weight_scale_inv
 * sibling, checked against the weight's shape, or all ones without one. */
static const float *fp8_scales(struct hf_model *m, const struct st_tensor *s, int64_t rows, int64_t cols) {
    int64_t rb = (rows + LMOE_FP8_BLOCK - 1) / LMOE_FP8_BLOCK, cb = (cols + LMOE_FP8_BLOCK - 1) / LMOE_FP8_BLOCK;
    char name[512];
    size_t n = strlen(s->name);
    if (n > 7 && !strcmp(s->name + n - 7, ".weight")) snprintf(name, sizeof name, "%s_scale_inv", s->name);
    else snprintf(name, sizeof name, "%s.weight_scale_inv", s->name);
    const struct st_tensor *sc = find(m, name);
    if (!sc) {
        float *one = own(m, sizeof(float) * (size_t)(rb * cb));
        for (int64_t i = 0; one && i < rb * cb; i++) one[i] = 1.0f;
        if (!one) oom(m);
        return one;
    }
    if (sc->n_dims != 2 || sc->shape[0] != rb || sc->shape[1] != cb ||
        (sc->dtype != ST_F32 && sc->dtype != ST_BF16 && sc->dtype != ST_F16)) {
        lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT,
                  "%s: tensor '%.120s' must be float [%" PRId64 ", %" PRId64 "] (128x128 blocks of a [%" PRId64
                  ", %" PRId64 "] weight), is %s with %d dims",
                  m->dir, name, rb, cb, rows, cols, st_dtype_name(sc->dtype), sc->n_dims);
        return NULL;
    }
    if (sc->dtype == ST_F32 && (uintptr_t)sc->data % sizeof(float) == 0) return sc->data;
    const float *f = vector_f32(m, sc, rb * cb);
    if (!f) oom(m);
    return f;
}

/* Checks that a matrix's data can be read in place as its type. */
static int check_matrix(struct hf_model *m, const struct st_tensor *s) {
    if (dtype_of(s->dtype) < 0)
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_UNSUPPORTED,
                         "%s: tensor '%.120s' has dtype %s; leanmoe computes with F32, F16, BF16, F8_E4M3, F8_E5M2",
                         m->dir, s->name, st_dtype_name(s->dtype));
    if ((uintptr_t)s->data % (uintptr_t)st_dtype_size(s->dtype))
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s: tensor '%.120s' data is not aligned to its dtype",
                         m->dir, s->name);
    return 0;
}

/* One HF tensor as one GGUF tensor (the shape reversed). */
static int add_plain(struct hf_model *m, const char *gname, const struct st_tensor *s) {
    if (s->n_dims < 1 || s->n_dims > 2)
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s: tensor '%.120s' has %d dims, expected 1 or 2", m->dir,
                         s->name, s->n_dims);
    int rc = check_matrix(m, s);
    if (rc && !(rc == LMOE_ERR_FORMAT && s->n_dims == 1)) return rc;
    struct gguf_tensor *t = tensor_new(m, gname, s->name);
    if (!t) return oom(m);
    t->n_dims = s->n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < s->n_dims ? s->shape[s->n_dims - 1 - d] : 1;
    t->type = (uint32_t)dtype_of(s->dtype);
    t->data = s->data;
    t->nbytes = s->end - s->begin;
    if (s->n_dims == 1 && (s->dtype != ST_F32 || rc)) {
        /* Norms and biases are read as f32 by the forward code. */
        if (!(t->data = vector_f32(m, s, s->shape[0]))) return oom(m);
        t->type = LMOE_DTYPE_F32;
        t->nbytes = sizeof(float) * (uint64_t)s->shape[0];
    } else if (lmoe_fp8_traits(t->type)) {
        if (s->n_dims != 2)
            return lmoe_errf(m->err, m->errlen, LMOE_ERR_UNSUPPORTED, "%s: FP8 tensor '%.120s' is not a matrix", m->dir,
                             s->name);
        if (!(t->block_scale = fp8_scales(m, s, s->shape[0], s->shape[1]))) return LMOE_ERR_FORMAT;
        t->n_col_blocks = (s->shape[1] + LMOE_FP8_BLOCK - 1) / LMOE_FP8_BLOCK;
    }
    return 0;
}

/* The experts of one (layer, kind) as one 3-D tensor [cols, rows, n_expert]
 * reached through per-expert pointers. */
static int add_experts(struct hf_model *m, int il, int kind, struct expert_group *gr) {
    char gname[96];
    snprintf(gname, sizeof gname, "blk.%d.%s", il, exp_gguf[kind]);
    const struct st_tensor *s0 = gr->parts[0];
    for (int e = 0; e < m->n_expert; e++) {
        const struct st_tensor *s = gr->parts[e];
        if (!s) {
            static const char *const hf_kind[EXP_KINDS] = {"gate_proj", "up_proj", "down_proj"};
            return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT,
                             "%s: missing tensor 'model.layers.%d.mlp.experts.%d.%s.weight' (of %d experts)", m->dir,
                             il, e, hf_kind[kind], m->n_expert);
        }
        int rc = check_matrix(m, s);
        if (rc) return rc;
        if (s->n_dims != 2 || s->dtype != s0->dtype || s->shape[0] != s0->shape[0] || s->shape[1] != s0->shape[1])
            return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT,
                             "%s: expert tensor '%.120s' differs in dtype or shape from '%.120s'", m->dir, s->name,
                             s0->name);
    }
    struct gguf_tensor *t = tensor_new(m, gname, s0->name);
    const void **ptrs = own(m, sizeof(void *) * (size_t)m->n_expert);
    if (!t || !ptrs) return oom(m);
    t->n_dims = 3;
    t->ne[0] = s0->shape[1];
    t->ne[1] = s0->shape[0];
    t->ne[2] = m->n_expert;
    t->ne[3] = 1;
    t->type = (uint32_t)dtype_of(s0->dtype);
    t->nbytes = (s0->end - s0->begin) * (uint64_t)m->n_expert;
    for (int e = 0; e < m->n_expert; e++) ptrs[e] = gr->parts[e]->data;
    t->data = ptrs[0];
    t->expert_data = ptrs;
    if (lmoe_fp8_traits(t->type)) {
        const float **sc = own(m, sizeof(float *) * (size_t)m->n_expert);
        if (!sc) return oom(m);
        for (int e = 0; e < m->n_expert; e++)
            if (!(sc[e] = fp8_scales(m, gr->parts[e], s0->shape[0], s0->shape[1]))) return LMOE_ERR_FORMAT;
        t->expert_scale = sc;
        t->n_col_blocks = (s0->shape[1] + LMOE_FP8_BLOCK - 1) / LMOE_FP8_BLOCK;
    }
    return 0;
}

/* transformers' fused layout: gate_up_proj [n_expert, 2 n_ff, n_embd]
 * (gate rows first) or down_proj [n_expert, n_embd, n_ff]. */
static int add_fused(struct hf_model *m, int il, int kind, const struct st_tensor *s) {
    int rc = check_matrix(m, s);
    if (rc) return rc;
    if (s->n_dims != 3 || s->shape[0] != m->n_expert || (kind != EXP_DOWN && s->shape[1] % 2) ||
        lmoe_fp8_traits((uint32_t)dtype_of(s->dtype)))
        return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT,
                         "%s: fused expert tensor '%.120s' must be a non-FP8 [%d, rows, cols] tensor", m->dir, s->name,
                         m->n_expert);
    int n_kinds = kind == EXP_DOWN ? 1 : 2;
    int64_t rows = kind == EXP_DOWN ? s->shape[1] : s->shape[1] / 2, cols = s->shape[2];
    size_t es = (size_t)st_dtype_size(s->dtype), mat = (size_t)(s->shape[1] * cols) * es;
    for (int k = 0; k < n_kinds; k++) {
        char gname[96];
        snprintf(gname, sizeof gname, "blk.%d.%s", il, exp_gguf[kind == EXP_DOWN ? EXP_DOWN : k]);
        struct gguf_tensor *t = tensor_new(m, gname, s->name);
        const void **ptrs = own(m, sizeof(void *) * (size_t)m->n_expert);
        if (!t || !ptrs) return oom(m);
        for (int e = 0; e < m->n_expert; e++)
            ptrs[e] = (const uint8_t *)s->data + (size_t)e * mat + (size_t)k * (size_t)(rows * cols) * es;
        t->n_dims = 3;
        t->ne[0] = cols;
        t->ne[1] = rows;
        t->ne[2] = m->n_expert;
        t->ne[3] = 1;
        t->type = (uint32_t)dtype_of(s->dtype);
        t->nbytes = (uint64_t)(rows * cols) * es * (uint64_t)m->n_expert;
        t->data = ptrs[0];
        t->expert_data = ptrs;
    }
    return 0;
}

/* Parses "model.layers.<il>.<rest>"; returns rest or NULL. */
static const char *layer_of(const char *name, int *il) {
    static const char pre[] = "model.layers.";
    if (strncmp(name, pre, sizeof pre - 1)) return NULL;
    const char *p = name + sizeof pre - 1;
    long v = 0;
    if (*p < '0' || *p > '9') return NULL;
    while (*p >= '0' && *p <= '9' && v < HF_MAX_DIM) v = v * 10 + (*p++ - '0');
    if (*p != '.') return NULL;
    *il = (int)v;
    return p + 1;
}

/* "experts.<e>.<proj>.weight" after the given prefix: the expert and its
 * kind, or -1. */
static int expert_of(const char *rest, const char *prefix, int *e) {
    size_t n = strlen(prefix);
    if (strncmp(rest, prefix, n)) return -1;
    const char *p = rest + n;
    long v = 0;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9' && v < HF_MAX_DIM) v = v * 10 + (*p++ - '0');
    if (*p++ != '.') return -1;
    *e = (int)v;
    static const char *const kinds[][EXP_KINDS] = {{"gate_proj.weight", "up_proj.weight", "down_proj.weight"},
                                                   {"w1.weight", "w3.weight", "w2.weight"}};
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < EXP_KINDS; k++)
            if (!strcmp(p, kinds[s][k])) return k;
    return -1;
}

static int map_tensors(struct hf_model *m) {
    size_t n_groups = (size_t)m->n_layer * EXP_KINDS;
    struct expert_group *groups = calloc(n_groups ? n_groups : 1, sizeof(*groups));
    if (!groups) return oom(m);
    int rc = 0;
    for (size_t i = 0; i < m->n_all && !rc; i++) {
        const struct st_tensor *s = m->all[i];
        int il, e, kind;
        const char *rest;
        if (!strcmp(s->name, "model.embed_tokens.weight")) rc = add_plain(m, "token_embd.weight", s);
        else if (!strcmp(s->name, "model.norm.weight")) rc = add_plain(m, "output_norm.weight", s);
        else if (!strcmp(s->name, "lm_head.weight")) rc = add_plain(m, "output.weight", s);
        else if ((rest = layer_of(s->name, &il)) && il < m->n_layer) {
            /* Layers from num_hidden_layers on are MTP modules: skipped. */
            if ((kind = expert_of(rest, "mlp.experts.", &e)) >= 0 ||
                (kind = expert_of(rest, "block_sparse_moe.experts.", &e)) >= 0) {
                struct expert_group *gr = &groups[(size_t)il * EXP_KINDS + (size_t)kind];
                if (e >= m->n_expert) {
                    rc = lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT,
                                   "%s: tensor '%.120s' is expert %d, but config.json has %d experts", m->dir, s->name, e,
                                   m->n_expert);
                    break;
                }
                if (!gr->parts && !(gr->parts = calloc((size_t)m->n_expert, sizeof(*gr->parts)))) rc = oom(m);
                else gr->parts[e] = s;
                continue;
            }
            if (!strcmp(rest, "mlp.experts.gate_up_proj")) {
                if (m->n_expert) rc = add_fused(m, il, EXP_GATE, s);
                continue;
            }
            if (!strcmp(rest, "mlp.experts.down_proj")) {
                if (m->n_expert) rc = add_fused(m, il, EXP_DOWN, s);
                continue;
            }
            for (size_t k = 0; k < sizeof layer_names / sizeof layer_names[0]; k++)
                if (!strcmp(rest, layer_names[k].hf)) {
                    char gname[96];
                    snprintf(gname, sizeof gname, "blk.%d.%s", il, layer_names[k].gguf);
                    rc = add_plain(m, gname, s);
                    break;
                }
        }
    }
    for (size_t g = 0; g < n_groups; g++) {
        if (!rc && groups[g].parts) rc = add_experts(m, (int)(g / EXP_KINDS), (int)(g % EXP_KINDS), &groups[g]);
        free(groups[g].parts);
    }
    free(groups);
    return rc;
}

static int cmp_gguf_name(const void *x, const void *y) {
    return strcmp((*(const struct gguf_tensor *const *)x)->name, (*(const struct gguf_tensor *const *)y)->name);
}

/* gguf_find_tensor searches by_name. */
static int sort_names(struct hf_model *m) {
    struct gguf_file *g = &m->g;
    if (!(g->by_name = malloc((g->n_tensors ? g->n_tensors : 1) * sizeof(*g->by_name)))) return oom(m);
    for (uint64_t i = 0; i < g->n_tensors; i++) g->by_name[i] = &g->tensors[i];
    qsort(g->by_name, g->n_tensors, sizeof(*g->by_name), cmp_gguf_name);
    for (uint64_t i = 1; i < g->n_tensors; i++)
        if (!strcmp(g->by_name[i - 1]->name, g->by_name[i]->name))
            return lmoe_errf(m->err, m->errlen, LMOE_ERR_FORMAT, "%s: two tensors map to '%s'", m->dir,
                             g->by_name[i]->name);
    return 0;
}

/* ---- Open and close ---------------------------------------------------- */

/* Both opens: with_tensors 0 stops after the metadata (no shards read). */
static int open_folder(struct hf_model **out, const char *dir, int with_tensors, char *err, size_t errlen) {
    *out = NULL;
    struct hf_model *m = calloc(1, sizeof(*m));
    if (!m) return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "%s: out of memory", dir);
    m->dir = dir;
    m->err = err;
    m->errlen = errlen;
    m->g.version = 3;
    m->g.alignment = GGUF_DEFAULT_ALIGNMENT;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    int rc = 0;
    if (!(m->cfg = json_load_file(path, JSON_REJECT_DUPLICATES, &je))) {
        rc = lmoe_errf(err, errlen, errno == ENOENT || strstr(je.text, "unable to open") ? LMOE_ERR_IO : LMOE_ERR_FORMAT,
                       "%s: %s", path, je.text);
    } else if (!json_is_object(m->cfg)) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: not a JSON object", path);
    }
    int64_t n_layer = 0, n_expert = 0;
    static const char *const expert_keys[] = {"n_routed_experts", "num_local_experts", "num_experts", NULL};
    if (!rc) rc = pick_arch(m);
    if (!rc) rc = check_quant(m);
    if (!rc && cfg_need(m, "num_hidden_layers", &n_layer)) rc = LMOE_ERR_FORMAT;
    if (!rc && cfg_size_any(m, expert_keys, &n_expert) < 0) rc = LMOE_ERR_FORMAT;
    m->n_layer = (int)n_layer;
    m->n_expert = (int)n_expert;
    if (!rc) {
        /* general.name: the folder's own name, trailing slashes ignored. */
        char base[256];
        size_t n = strlen(dir);
        while (n > 1 && dir[n - 1] == '/') n--;
        size_t b = n;
        while (b > 0 && dir[b - 1] != '/') b--;
        snprintf(base, sizeof base, "%.*s", (int)(n - b), dir + b);
        rc = set_str_key(m, "general.architecture", m->arch_name);
        if (!rc) rc = set_str_key(m, "general.name", base);
    }
    if (!rc) rc = set_common(m);
    if (!rc) rc = m->arch == HF_DEEPSEEK2 ? set_deepseek2(m) : set_gqa_extras(m);
    if (!rc && with_tensors) rc = open_shards(m);
    if (!rc && with_tensors) rc = index_tensors(m);
    if (!rc && with_tensors) rc = map_tensors(m);
    if (!rc && with_tensors) rc = sort_names(m);
    json_decref(m->cfg);
    m->cfg = NULL;
    free(m->all);
    m->all = NULL;
    m->err = NULL;
    if (rc) {
        hf_model_close(m);
        return rc;
    }
    m->dir = NULL;
    *out = m;
    return 0;
}

int hf_model_open(struct hf_model **out, const char *dir, char *err, size_t errlen) {
    return open_folder(out, dir, 1, err, errlen);
}

int hf_model_open_config(struct hf_model **out, const char *dir, char *err, size_t errlen) {
    return open_folder(out, dir, 0, err, errlen);
}

void hf_model_close(struct hf_model *m) {
    if (!m) return;
    struct gguf_file *g = &m->g;
    for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].key);
    for (uint64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(g->by_name);
    free(m->src);
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    for (int s = 0; s < m->n_shards; s++) st_close(m->shards[s]);
    free(m->shards);
    json_decref(m->cfg);
    free(m->all);
    free(m);
}

struct gguf_file *hf_model_gguf(const struct hf_model *m) { return (struct gguf_file *)&m->g; }

const char *hf_model_source_name(const struct hf_model *m, const char *gguf_name) {
    const struct gguf_tensor *t = gguf_find_tensor(&m->g, gguf_name);
    return t ? m->src[t - m->g.tensors] : NULL;
}
