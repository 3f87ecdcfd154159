/*
 * mix.h - which type each tensor of a model gets in a llama.cpp file type
 * (Q4_K_M, Q5_K_S, ...): llama-quantize's per-tensor rules, shared by
 * `leanmoe quantize` (a GGUF file in, src/../cli/cmd_quantize.c) and
 * `leanmoe convert` (a Hugging Face folder in, format/hf_convert.c), so both
 * give a tensor the same type.
 *
 * Usage: find the file type, describe the model, tell the mix every tensor
 * name once (it counts the attn_v-like tensors and sees whether the
 * embeddings are tied), then ask for each tensor's type in llama-quantize's
 * order (by layer, then by name; lmoe_mix_cmp_names), because some rules
 * count tensors as they are visited:
 *
 *   const struct lmoe_ftype *ft = lmoe_ftype_find("Q4_K_M");
 *   struct lmoe_mix m;
 *   lmoe_mix_init(&m, ft, 0, "deepseek2", n_layer, n_expert, n_head, n_head_kv);
 *   for (each name) lmoe_mix_count(&m, name);
 *   for (each tensor, sorted) type = lmoe_mix_type(&m, name, n_dims, ne, src_type, &from);
 */
#ifndef LMOE_QUANT_MIX_H
#define LMOE_QUANT_MIX_H

#include <stdint.h>

/* llama.cpp's llama_ftype ids (general.file_type). */
enum lmoe_ftype_id {
    LMOE_FTYPE_ALL_F32 = 0,
    LMOE_FTYPE_F16 = 1,
    LMOE_FTYPE_Q4_0 = 2,
    LMOE_FTYPE_Q4_1 = 3,
    LMOE_FTYPE_Q8_0 = 7,
    LMOE_FTYPE_Q5_0 = 8,
    LMOE_FTYPE_Q5_1 = 9,
    LMOE_FTYPE_Q2_K = 10,
    LMOE_FTYPE_Q3_K_S = 11,
    LMOE_FTYPE_Q3_K_M = 12,
    LMOE_FTYPE_Q3_K_L = 13,
    LMOE_FTYPE_Q4_K_S = 14,
    LMOE_FTYPE_Q4_K_M = 15,
    LMOE_FTYPE_Q5_K_S = 16,
    LMOE_FTYPE_Q5_K_M = 17,
    LMOE_FTYPE_Q6_K = 18,
    LMOE_FTYPE_BF16 = 32,
};

/* A file type by its llama-quantize name. */
struct lmoe_ftype {
    const char *name; /* "Q4_K_M" */
    int ftype;        /* enum lmoe_ftype_id */
    uint32_t base;    /* enum lmoe_dtype most tensors get */
    int pure;         /* 1: every quantizable tensor gets base (bare Q3_K, Q4_K, Q5_K) */
};

/* The file type named `name` (any case), or NULL. Static. */
const struct lmoe_ftype *lmoe_ftype_find(const char *name);

/* The names lmoe_ftype_find knows, space-separated, for error messages. */
#define LMOE_FTYPE_NAMES                                                                                             \
    "F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q3_K Q4_K " \
    "Q5_K"

/* What the choice depends on besides the tensor: the model's shape and
 * counters that advance as tensors are visited. Fill with lmoe_mix_init. */
struct lmoe_mix {
    const struct lmoe_ftype *ft;
    int pure;
    int falcon, tied, n_expert, n_gqa, n_layer;
    int n_attn_v, i_attn_v, i_ffn_down, i_ffn_gate, i_ffn_up;
};

/* Starts a mix for file type ft (pure: as llama-quantize --pure) on a model
 * of architecture `arch` (general.architecture) with these sizes. */
void lmoe_mix_init(struct lmoe_mix *m, const struct lmoe_ftype *ft, int pure, const char *arch, int n_layer,
                   int n_expert, int n_head, int n_head_kv);

/* Tells the mix that the model has a tensor of this name (once each, all
 * of them before the first lmoe_mix_type). */
void lmoe_mix_count(struct lmoe_mix *m, const char *name);

/* Whether llama-quantize may quantize the tensor at all: 2-D or more (a
 * trailing 1 does not count), named "*weight", and not a norm, the MoE
 * router or one of a few small special tensors. */
int lmoe_mix_quantizable(const char *name, int n_dims, const int64_t *ne);

/* The type of one tensor (ne[0] its row length). Tensors the mix does not
 * quantize keep src_type; float file types give base to every quantizable
 * tensor. A type whose block does not divide the row falls back (Q2_K,
 * Q3_K -> Q4_0; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0; then F16), and
 * *fell_back_from (if not NULL) gets the type that did not fit, else
 * LMOE_DTYPE_COUNT. Returns LMOE_DTYPE_COUNT when an FFN tensor of an MoE
 * model has no usable layer number (blk.N.). */
uint32_t lmoe_mix_type(struct lmoe_mix *m, const char *name, int n_dims, const int64_t *ne, uint32_t src_type,
                       uint32_t *fell_back_from);

/* llama-quantize's tensor order: by layer number (tensors outside the
 * blocks first), then by name; a strcmp-like comparison of two names. */
int lmoe_mix_cmp_names(const char *a, const char *b);

#endif
