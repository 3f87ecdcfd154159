/*
 * x86_avx512.c - the AVX-512 kernel table: not written yet.
 *
 * The AVX2 table is what runs on AVX-512 machines for now. This file
 * defines an empty table (NULL name) so that dispatch.c links and skips it;
 * a real one would widen the hottest entries (q4_K, q6_K, q8_0, f32, f16)
 * to 512 bits, point the rest at the AVX2 ones, and be tested by
 * tests/test_kernels.c like every table.
 */
#include "kernels/kernels.h"

const struct lmoe_kernels lmoe_kernels_avx512 = {.name = NULL};
