/*
 * dispatch.c - picks the kernel table for this CPU.
 *
 * The best table whose instructions the CPU has (avx512 > avx2 > ref),
 * checked at run time with __builtin_cpu_supports, so one binary runs on
 * any x86-64. LMOE_ISA=ref|avx2|avx512 asks for one table, for comparisons
 * and debugging; asking for one the CPU lacks gives the best available.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define LMOE_X86 1
#include <cpuid.h>

/* CPUID leaf 1, ECX bit 29. Asked directly: clang's
 * __builtin_cpu_supports does not know "f16c". Every CPU with AVX2 so far
 * has it, but the kernels use it, so check. */
static int has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

/* Whether this CPU can run the table `name` (and the build has it). */
static int cpu_can(const char *name) {
#ifdef LMOE_X86
    __builtin_cpu_init();
    if (strcmp(name, "avx2") == 0)
        return lmoe_kernels_avx2.name && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    if (strcmp(name, "avx512") == 0)
        return lmoe_kernels_avx512.name && cpu_can("avx2") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
#endif
    return strcmp(name, "ref") == 0;
}

const struct lmoe_kernels *lmoe_kernels_have(const char *name) {
    if (!cpu_can(name)) return NULL;
#ifdef LMOE_X86
    if (strcmp(name, "avx2") == 0) return &lmoe_kernels_avx2;
    if (strcmp(name, "avx512") == 0) return &lmoe_kernels_avx512;
#endif
    return &lmoe_kernels_ref;
}

const struct lmoe_kernels *lmoe_kernels_pick(void) {
    const char *want = getenv("LMOE_ISA");
    const struct lmoe_kernels *k = want && *want ? lmoe_kernels_have(want) : NULL;
    if (k) return k;
    static const char *const best_first[] = {"avx512", "avx2"};
    for (size_t i = 0; i < sizeof best_first / sizeof best_first[0]; i++)
        if ((k = lmoe_kernels_have(best_first[i]))) return k;
    return &lmoe_kernels_ref;
}
