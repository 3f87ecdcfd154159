/*
 * moe.h - feed-forward blocks. Both read c->s.xn (T rows) and write
 * c->s.ffn_out.
 */
#ifndef LMOE_MOE_H
#define LMOE_MOE_H

struct lmoe_ctx;

void lmoe_ffn_dense(struct lmoe_ctx *c, int il, int T);
void lmoe_ffn_moe(struct lmoe_ctx *c, int il, int T);

#endif
