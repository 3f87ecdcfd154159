/*
 * attention.h - self-attention over the context's KV cache. Both read
 * c->s.xn (normalised input, T rows) and write c->s.attn_out, after storing
 * the T new tokens at positions pos0.. in the cache of layer il.
 */
#ifndef LMOE_ATTENTION_H
#define LMOE_ATTENTION_H

struct lmoe_ctx;

void lmoe_attention_gqa(struct lmoe_ctx *c, int il, int T, int pos0);
void lmoe_attention_mla(struct lmoe_ctx *c, int il, int T, int pos0);

#endif
