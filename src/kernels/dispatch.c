/*
 * dispatch.c - picks the kernel table for this CPU.
 *
 * Only the reference table exists so far; the AVX2/AVX-512/NEON tables of
 * the speed work plug in here behind a run-time CPU check, and LMOE_ISA=ref
 * forces the reference for comparisons.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

const struct lmoe_kernels *lmoe_kernels_pick(void) {
    return &lmoe_kernels_ref;
}
