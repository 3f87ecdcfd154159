/*
 * attention.h - self-attention over the KV caches. Both read e->s.xn (the
 * normalised input, T rows) and write e->s.attn_out, after storing token t
 * at position e->s.tok_pos[t] of context e->s.tok_ctx[t]'s cache of layer il.
 */
#ifndef LMOE_ATTENTION_H
#define LMOE_ATTENTION_H

struct lmoe_engine;

void lmoe_attention_gqa(struct lmoe_engine *e, int il, int T);
void lmoe_attention_mla(struct lmoe_engine *e, int il, int T);

#endif
