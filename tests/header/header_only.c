/*
 * header_only.c - include/leanmoe.h alone must be valid, warning-free C99
 * and C++ (checked by `make test`), so any program can include it.
 */
#include "leanmoe.h"

int main(void) {
    lmoe_engine *e = 0;
    struct lmoe_engine_options opt = {LMOE_DEFAULT_N_THREADS, 0, 0};
    struct lmoe_sampler_options so = LMOE_SAMPLER_DEFAULTS;
    (void)opt;
    (void)so;
    lmoe_engine_close(e);
    return lmoe_strerror(LMOE_OK)[0] == 'o' ? 0 : 1;
}
