/*
 * convert.c - half (IEEE binary16) and bfloat16 to and from f32, exactly.
 *
 * Plain integer bit manipulation, no processor-specific instructions (those
 * live in src/kernels/), so every machine gives the same bits. Widening is
 * exact for every input, subnormals, infinities and NaN included. Narrowing
 * rounds to nearest, ties to even; values too large become infinity, and a
 * NaN stays a NaN (made quiet, keeping its top payload bits), as ggml's
 * ggml_compute_fp32_to_bf16 and the F16C instructions do.
 */
#include <string.h>

#include "quant/quant.h"

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/*
 * binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
 * Exponent 0 is zero or subnormal (mantissa * 2^-24), 31 is inf or NaN.
 */
float lmoe_f16_to_f32(lmoe_f16 h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1F;
    uint32_t man = h & 0x3FF;
    if (exp == 0x1F) return f32_from_bits(sign | 0x7F800000 | (man << 13)); /* inf, NaN */
    if (exp != 0) return f32_from_bits(sign | ((exp + 127 - 15) << 23) | (man << 13));
    if (man == 0) return f32_from_bits(sign); /* signed zero */
    /* Subnormal: shift the mantissa up until its leading 1 is the implicit
     * bit; each shift lowers the exponent by one from that of 2^-14. */
    int e = 127 - 15 + 1;
    while (!(man & 0x400)) {
        man <<= 1;
        e--;
    }
    return f32_from_bits(sign | ((uint32_t)e << 23) | ((man & 0x3FF) << 13));
}

/* Rounds v >> shift to nearest, ties to even (shift >= 1). */
static uint32_t shift_round_even(uint32_t v, int shift) {
    const uint32_t q = v >> shift, rem = v & ((1u << shift) - 1), half = 1u << (shift - 1);
    return q + (rem > half || (rem == half && (q & 1)));
}

lmoe_f16 lmoe_f32_to_f16(float f) {
    const uint32_t u = f32_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    const uint32_t a = u & 0x7FFFFFFF;
    if (a > 0x7F800000) return (lmoe_f16)(sign | 0x7E00 | ((a >> 13) & 0x3FF)); /* NaN */
    /* 65520 is halfway between 65504 (the largest half, odd mantissa) and
     * 65536, so it and everything above round to infinity. */
    if (a >= 0x477FF000) return (lmoe_f16)(sign | 0x7C00);
    if (a >= 0x38800000) {
        /* Normal half: rebias the exponent (127 - 15) and drop 13 mantissa
         * bits. A carry out of the mantissa correctly bumps the exponent. */
        return (lmoe_f16)(sign | shift_round_even(a - 0x38000000, 13));
    }
    /* Below 2^-25 (and 2^-25 itself, a tie to the even 0): zero. */
    if (a <= 0x33000000) return sign;
    /* Subnormal half: the value in units of 2^-24 is the 24-bit significand
     * shifted right by 126 - exp (14 .. 24). Rounding up from the largest
     * subnormal gives 0x400, the smallest normal, which is correct. */
    const int exp = (int)(a >> 23);
    const uint32_t sig = (a & 0x7FFFFF) | 0x800000;
    return (lmoe_f16)(sign | shift_round_even(sig, 126 - exp));
}

/* bfloat16 is the top 16 bits of a binary32, so widening is a shift. */
float lmoe_bf16_to_f32(lmoe_bf16 h) {
    return f32_from_bits((uint32_t)h << 16);
}

lmoe_bf16 lmoe_f32_to_bf16(float f) {
    const uint32_t u = f32_bits(f);
    /* NaN: truncate and set the quiet bit, so the result cannot become inf. */
    if ((u & 0x7FFFFFFF) > 0x7F800000) return (lmoe_bf16)((u >> 16) | 0x40);
    /* Round to nearest even on the 16 dropped bits; overflow reaches
     * 0x7F80 (infinity) through the carry, as it should. */
    return (lmoe_bf16)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

/*
 * FP8 (OCP 8-bit floats), as DeepSeek and Qwen publish weights in.
 * E4M3 "fn": 1 sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0
 * is subnormal (m * 2^-9); S.1111.111 is NaN and there is no infinity, so
 * the largest finite value is 1.75 * 2^8 = 448. E5M2 is the top byte of an
 * IEEE half, so widening goes through lmoe_f16_to_f32.
 */
float lmoe_f8_e4m3_to_f32(uint8_t b) {
    const uint32_t sign = (uint32_t)(b & 0x80) << 24;
    const uint32_t exp = (b >> 3) & 0xF, man = b & 0x7;
    if (exp == 0xF && man == 0x7) return f32_from_bits(sign | 0x7FC00000); /* NaN */
    if (exp != 0) return f32_from_bits(sign | ((exp + 127 - 7) << 23) | (man << 20));
    /* Subnormal (or zero): man units of 2^-9, exact in f32. */
    return f32_from_bits(sign | f32_bits((float)man * (1.0f / 512.0f)));
}

float lmoe_f8_e5m2_to_f32(uint8_t b) { return lmoe_f16_to_f32((lmoe_f16)((unsigned)b << 8)); }

uint8_t lmoe_f32_to_f8_e4m3(float f) {
    const uint32_t u = f32_bits(f);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    const uint32_t a = u & 0x7FFFFFFF;
    if (a > 0x7F800000) return 0x7F;                    /* NaN */
    if (a >= 0x43E00000) return (uint8_t)(sign | 0x7E); /* >= 448 (and inf): saturate */
    if (a >= 0x3C800000) {
        /* Normal (>= 2^-6): rebias the exponent (127 - 7) and keep 3
         * mantissa bits; a carry correctly bumps the exponent, and values
         * rounding up past 448 were handled above. */
        uint32_t q = shift_round_even(a - 0x3C000000, 20);
        return (uint8_t)(sign | (q > 0x7E ? 0x7E : q));
    }
    /* Subnormal: units of 2^-9, rounded to nearest even; 8 units is the
     * smallest normal (0x08), which the same bits encode. */
    const float units = f32_from_bits(a) * 512.0f;
    uint32_t q = (uint32_t)units;
    const float rem = units - (float)q;
    if (rem > 0.5f || (rem == 0.5f && (q & 1))) q++;
    return (uint8_t)(sign | q);
}
