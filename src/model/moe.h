/*
 * moe.h - feed-forward blocks. Both read e->s.xn (T rows) and write
 * e->s.ffn_out.
 */
#ifndef LMOE_MOE_H
#define LMOE_MOE_H

struct lmoe_engine;

void lmoe_ffn_dense(struct lmoe_engine *e, int il, int T);
void lmoe_ffn_moe(struct lmoe_engine *e, int il, int T);

#endif
