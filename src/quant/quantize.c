/*
 * quantize.c - float weights to GGUF block types: the reference quantizers
 * behind `leanmoe quantize`.
 *
 * Two families, two aims.
 *
 * Legacy 32-blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) are round-to-nearest from
 * one block maximum (or min and max), in the float operation order of
 * ggml's reference quantizers and gguf-py's numpy versions, so that the
 * bytes are identical to both; tests/test_quantize.c checks that against
 * goldens made with gguf-py (tools/make_quantize_goldens.py).
 *
 * K-quants (Q2_K .. Q6_K) have two levels of scales: a super-block of 256
 * carries an f16 scale (and min) that multiplies a small integer scale per
 * group of 16 or 32. Rounding every group to its own max-abs grid wastes
 * range, so each group's scale (and min) is searched for: several candidate
 * grids are tried, each rounding is refitted by weighted least squares, and
 * the candidate with the smallest weighted error wins. The weights favour
 * large values, as ggml's do. Plain least squares would give 1-9% lower
 * RMSE on Gaussian data, but the weighted fits give 2-9% lower KL
 * divergence on a trained model (models/leanmoe-tiny.gguf, every K mix),
 * and a model's output is what quantization must preserve. The group scales are
 * then quantized to 4, 6 or 8 bits against the super-block scale, and every
 * code is re-rounded with the scale it will actually be decoded with. This
 * is the idea of ggml's make_qkx / make_qx quants, written afresh; the
 * bytes differ from llama-quantize's, the error is of the same size (the
 * test bounds each type's RMSE on Gaussian data against llama-quantize's).
 *
 * Every block is quantized independently of the others, so a caller may
 * split a tensor into block ranges and quantize them on several threads.
 * Inputs must be finite; a non-finite input gives unspecified codes but no
 * undefined behaviour.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "quant/quant.h"

/* ---- Small helpers ------------------------------------------------------ */

/* Round to nearest (ties to even) and clamp to [lo, hi]; NaN gives lo. The
 * float comparison comes first so the conversion is always defined. */
static int round_clamp(float v, int lo, int hi) {
    if (!(v > (float)lo)) return lo;
    if (!(v < (float)hi)) return hi;
    return (int)lrintf(v);
}

static void put_f16(uint8_t *b, size_t off, float v) {
    const lmoe_f16 h = lmoe_f32_to_f16(v);
    memcpy(b + off, &h, sizeof h);
}

/* The value an f16 field will decode to. */
static float f16_round(float v) { return lmoe_f16_to_f32(lmoe_f32_to_f16(v)); }

/* Truncates a non-negative float code the way ggml's (int8_t) cast and
 * gguf-py's np.trunc do, capped at hi (the cap first, so no conversion is
 * ever out of range). */
static int trunc_cap(float v, int hi) {
    if (!(v < (float)hi)) return hi;
    return v > 0.0f ? (int)v : 0;
}

/* ---- Legacy quants: blocks of 32, round to nearest ------------------------ */

/*
 * Q4_0 and Q5_0: the element of largest magnitude (the first on ties) maps
 * to code 0, i.e. d = max / -8 (or -16), and q = trunc(x / d + 8.5), capped
 * at 15 (31). 1/d is taken from the f32 d, d is stored as f16.
 */
static void quantize_q4_0(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK; i++, x += LMOE_QK, b += sizeof(struct lmoe_block_q4_0)) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < LMOE_QK; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(b, offsetof(struct lmoe_block_q4_0, d), d);
        uint8_t *qs = b + offsetof(struct lmoe_block_q4_0, qs);
        for (int j = 0; j < LMOE_QK / 2; j++) {
            const int q0 = trunc_cap(x[j] * id + 8.5f, 15);
            const int q1 = trunc_cap(x[j + LMOE_QK / 2] * id + 8.5f, 15);
            qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q5_0(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK; i++, x += LMOE_QK, b += sizeof(struct lmoe_block_q5_0)) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < LMOE_QK; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(b, offsetof(struct lmoe_block_q5_0, d), d);
        uint8_t *qh = b + offsetof(struct lmoe_block_q5_0, qh);
        uint8_t *qs = b + offsetof(struct lmoe_block_q5_0, qs);
        memset(qh, 0, 4);
        for (int j = 0; j < LMOE_QK / 2; j++) {
            const int q0 = trunc_cap(x[j] * id + 16.5f, 31);
            const int q1 = trunc_cap(x[j + LMOE_QK / 2] * id + 16.5f, 31);
            qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh[j / 8] |= (uint8_t)((q0 >> 4) << (j % 8));
            qh[(j + 16) / 8] |= (uint8_t)((q1 >> 4) << (j % 8));
        }
    }
}

/*
 * Q4_1 and Q5_1: min and max of the block, d = (max - min) / 15 (31), and
 * q = trunc((x - min) / d + 0.5), capped. d and m = min stored as f16.
 */
static void quantize_q4_1(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK; i++, x += LMOE_QK, b += sizeof(struct lmoe_block_q4_1)) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < LMOE_QK; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(b, offsetof(struct lmoe_block_q4_1, d), d);
        put_f16(b, offsetof(struct lmoe_block_q4_1, m), min);
        uint8_t *qs = b + offsetof(struct lmoe_block_q4_1, qs);
        for (int j = 0; j < LMOE_QK / 2; j++) {
            const int q0 = trunc_cap((x[j] - min) * id + 0.5f, 15);
            const int q1 = trunc_cap((x[j + LMOE_QK / 2] - min) * id + 0.5f, 15);
            qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q5_1(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK; i++, x += LMOE_QK, b += sizeof(struct lmoe_block_q5_1)) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < LMOE_QK; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(b, offsetof(struct lmoe_block_q5_1, d), d);
        put_f16(b, offsetof(struct lmoe_block_q5_1, m), min);
        uint8_t *qh = b + offsetof(struct lmoe_block_q5_1, qh);
        uint8_t *qs = b + offsetof(struct lmoe_block_q5_1, qs);
        memset(qh, 0, 4);
        for (int j = 0; j < LMOE_QK / 2; j++) {
            const int q0 = trunc_cap((x[j] - min) * id + 0.5f, 31);
            const int q1 = trunc_cap((x[j + LMOE_QK / 2] - min) * id + 0.5f, 31);
            qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh[j / 8] |= (uint8_t)((q0 >> 4) << (j % 8));
            qh[(j + 16) / 8] |= (uint8_t)((q1 >> 4) << (j % 8));
        }
    }
}

/* Q8_0 weights are quantized exactly as Q8_0 activations (quant_dot.c):
 * d = amax / 127, q = roundf(x / d). */

/* ---- K-quant building blocks ------------------------------------------------ */

/*
 * Fits x[0..n) as scale * q - min with integer codes q in 0..nmax and
 * min >= 0 (so that zero stays representable: a group of one sign keeps
 * its zero end), minimizing sum w * err^2, or sum w * |err| when use_abs.
 *
 * Candidates: the plain range grid (hi - lo) / nmax, then nstep + 1 grids
 * whose step is (hi - lo) / (nmax + rmin + 0.1 k). Each candidate's
 * rounding is refitted: with the codes fixed, scale and min have a closed
 * weighted least-squares solution. Writes the winning codes to q and its
 * min to *min_out; returns its scale (0 for a constant group).
 */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *q, float *min_out, float rmin,
                           int nstep, int use_abs) {
    float lo = x[0], hi = x[0], sw = 0.0f, swx = 0.0f;
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
        sw += w[i];
        swx += w[i] * x[i];
    }
    if (lo > 0.0f) lo = 0.0f;
    if (!(hi > lo)) { /* constant (or non-finite) group: codes 0, value -min */
        memset(q, 0, (size_t)n);
        *min_out = -lo;
        return 0.0f;
    }
    /* The baseline: min = lo, the range split into nmax steps. */
    float scale = (hi - lo) / (float)nmax, off = lo, best = 0.0f;
    for (int i = 0; i < n; i++) {
        q[i] = (uint8_t)round_clamp((x[i] - lo) / scale, 0, nmax);
        const float e = scale * q[i] + lo - x[i];
        best += w[i] * (use_abs ? fabsf(e) : e * e);
    }
    uint8_t cand[LMOE_QK_K];
    for (int k = 0; k <= nstep; k++) {
        const float iscale = (rmin + 0.1f * (float)k + (float)nmax) / (hi - lo);
        float sl = 0.0f, sl2 = 0.0f, sxl = 0.0f;
        for (int i = 0; i < n; i++) {
            const int l = round_clamp(iscale * (x[i] - lo), 0, nmax);
            cand[i] = (uint8_t)l;
            sl += w[i] * (float)l;
            sl2 += w[i] * (float)(l * l);
            sxl += w[i] * (float)l * x[i];
        }
        /* Normal equations of min over (s, m) of sum w (s*l + m - x)^2. */
        const float det = sw * sl2 - sl * sl;
        if (!(det > 0.0f)) continue;
        float s = (sw * sxl - swx * sl) / det;
        float m = (sl2 * swx - sl * sxl) / det;
        if (m > 0.0f) { /* the offset must not exceed zero: refit scale alone */
            m = 0.0f;
            s = sxl / sl2;
        }
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            const float e = s * cand[i] + m - x[i];
            err += w[i] * (use_abs ? fabsf(e) : e * e);
        }
        if (err < best) {
            best = err;
            scale = s;
            off = m;
            memcpy(q, cand, (size_t)n);
        }
    }
    *min_out = -off;
    return scale;
}

/*
 * Fits x[0..n) as scale * q with signed integer codes q in -nmax..nmax-1,
 * minimizing sum w (x - scale*q)^2 with w = x^2, so the large weights are
 * kept best. The element of largest magnitude is mapped near -nmax (the end
 * of the range that has room), over a grid of 19 candidate steps; each is
 * refitted in closed form (scale = sum w x q / sum w q^2), and the best is
 * then polished one code at a time: a code moves to its nearest value under
 * the current scale when that lowers the error. Returns the scale; 0 for an
 * all-zero group.
 */
static float fit_scale_sym(int n, int nmax, const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (!(amax > 0.0f)) return 0.0f;
    /* With the best scale sxl / sl2 the error is sum w x^2 - sxl^2 / sl2,
     * so the best candidate has the largest sxl^2 / sl2. */
    int q[LMOE_QK_K];
    float best_sxl = 0.0f, best_sl2 = 0.0f;
    for (int k = -9; k <= 9; k++) {
        const float iscale = -((float)nmax + 0.1f * (float)k) / max;
        float sxl = 0.0f, sl2 = 0.0f;
        for (int i = 0; i < n; i++) {
            const int l = round_clamp(iscale * x[i], -nmax, nmax - 1);
            const float w = x[i] * x[i];
            sxl += w * x[i] * (float)l;
            sl2 += w * (float)(l * l);
        }
        if (sl2 > 0.0f && (best_sl2 == 0.0f || sxl * sxl * best_sl2 > best_sxl * best_sxl * sl2)) {
            best_sxl = sxl;
            best_sl2 = sl2;
            for (int i = 0; i < n; i++) q[i] = round_clamp(iscale * x[i], -nmax, nmax - 1);
        }
    }
    if (!(best_sl2 > 0.0f)) return 0.0f;
    for (int it = 0; it < 5; it++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float scale = best_sxl / best_sl2;
            if (scale == 0.0f) break;
            const int l = round_clamp(x[i] / scale, -nmax, nmax - 1);
            if (l == q[i]) continue;
            const float w = x[i] * x[i];
            const float sxl = best_sxl + w * x[i] * (float)(l - q[i]);
            const float sl2 = best_sl2 + w * (float)(l * l - q[i] * q[i]);
            if (sl2 > 0.0f && sxl * sxl * best_sl2 > best_sxl * best_sxl * sl2) {
                best_sxl = sxl;
                best_sl2 = sl2;
                q[i] = l;
                changed = 1;
            }
        }
        if (!changed) break;
    }
    return best_sxl / best_sl2;
}

/* Index of the value of largest magnitude in v[0..n) (the first on ties). */
static int argmax_abs(const float *v, int n) {
    int k = 0;
    for (int i = 1; i < n; i++)
        if (fabsf(v[i]) > fabsf(v[k])) k = i;
    return k;
}

/* ---- K-quants: super-blocks of 256 ----------------------------------------- */

/*
 * Q2_K: 16 groups of 16, codes 0..3, a 4-bit scale and 4-bit min per group
 * against f16 d and dmin. Weights |x| and an absolute-error fit: with four
 * levels, fitting the bulk of the values matters more than the extremes.
 */
static void quantize_q2_k(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, x += LMOE_QK_K, b += sizeof(struct lmoe_block_q2_k)) {
        uint8_t L[LMOE_QK_K];
        float w[16], scale[16], min[16], max_scale = 0.0f, max_min = 0.0f;
        for (int g = 0; g < 16; g++) {
            for (int l = 0; l < 16; l++) w[l] = fabsf(x[16 * g + l]);
            scale[g] = fit_scale_min(16, 3, x + 16 * g, w, L + 16 * g, &min[g], -0.5f, 15, 1);
            max_scale = fmaxf(max_scale, scale[g]);
            max_min = fmaxf(max_min, min[g]);
        }
        uint8_t *sc = b + offsetof(struct lmoe_block_q2_k, scales);
        uint8_t *qs = b + offsetof(struct lmoe_block_q2_k, qs);
        const float iscale = max_scale > 0.0f ? 15.0f / max_scale : 0.0f;
        const float imin = max_min > 0.0f ? 15.0f / max_min : 0.0f;
        for (int g = 0; g < 16; g++)
            sc[g] = (uint8_t)(round_clamp(iscale * scale[g], 0, 15) | (round_clamp(imin * min[g], 0, 15) << 4));
        const float d = f16_round(max_scale / 15.0f), dmin = f16_round(max_min / 15.0f);
        put_f16(b, offsetof(struct lmoe_block_q2_k, d), d);
        put_f16(b, offsetof(struct lmoe_block_q2_k, dmin), dmin);
        /* Re-round every code against the scale it decodes with. */
        for (int g = 0; g < 16; g++) {
            const float dl = d * (float)(sc[g] & 0x0F), ml = dmin * (float)(sc[g] >> 4);
            for (int l = 0; l < 16; l++)
                L[16 * g + l] = dl != 0.0f ? (uint8_t)round_clamp((x[16 * g + l] + ml) / dl, 0, 3) : 0;
        }
        memset(qs, 0, LMOE_QK_K / 4);
        for (int e = 0; e < LMOE_QK_K; e++) {
            const int half = e / 128, k = (e % 128) / 32, l = e % 32;
            qs[half * 32 + l] |= (uint8_t)(L[e] << (2 * k));
        }
    }
}

/*
 * Q3_K: 16 groups of 16, signed codes -4..3, a signed 6-bit scale per group
 * against f16 d. The group with the largest scale magnitude maps to -32.
 */
static void quantize_q3_k(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, x += LMOE_QK_K, b += sizeof(struct lmoe_block_q3_k)) {
        float scale[16];
        for (int g = 0; g < 16; g++) scale[g] = fit_scale_sym(16, 4, x + 16 * g);
        const float max_scale = scale[argmax_abs(scale, 16)];
        uint8_t *hmask = b + offsetof(struct lmoe_block_q3_k, hmask);
        uint8_t *qs = b + offsetof(struct lmoe_block_q3_k, qs);
        uint8_t *sc = b + offsetof(struct lmoe_block_q3_k, scales);
        memset(sc, 0, 12);
        int ls[16];
        const float iscale = max_scale != 0.0f ? -32.0f / max_scale : 0.0f;
        for (int g = 0; g < 16; g++) {
            ls[g] = round_clamp(iscale * scale[g], -32, 31);
            const int v = ls[g] + 32; /* stored biased */
            if (g < 8)
                sc[g] |= (uint8_t)(v & 0x0F);
            else
                sc[g - 8] |= (uint8_t)((v & 0x0F) << 4);
            sc[8 + g % 4] |= (uint8_t)((v >> 4) << (2 * (g / 4)));
        }
        const float d = iscale != 0.0f ? f16_round(1.0f / iscale) : 0.0f;
        put_f16(b, offsetof(struct lmoe_block_q3_k, d), d);
        memset(hmask, 0, LMOE_QK_K / 8);
        memset(qs, 0, LMOE_QK_K / 4);
        for (int e = 0; e < LMOE_QK_K; e++) {
            const float dl = d * (float)ls[e / 16];
            const int code = (dl != 0.0f ? round_clamp(x[e] / dl, -4, 3) : 0) + 4; /* 0..7 */
            const int half = e / 128, k = (e % 128) / 32, l = e % 32;
            qs[half * 32 + l] |= (uint8_t)((code & 3) << (2 * k));
            hmask[l] |= (uint8_t)((code >> 2) << (half * 4 + k));
        }
    }
}

/*
 * Q4_K and Q5_K share everything but the code width: 8 groups of 32, codes
 * 0..nmax, 6-bit scales and mins packed in 12 bytes against f16 d and dmin.
 * Weights av + |x|, av the super-block's RMS, favour large values a little.
 */
static void pack_k4_scales(uint8_t *s, const int *ls, const int *lm) {
    memset(s, 0, 12);
    for (int g = 0; g < 8; g++) {
        if (g < 4) {
            s[g] |= (uint8_t)ls[g];
            s[g + 4] |= (uint8_t)lm[g];
        } else {
            s[g + 4] = (uint8_t)((ls[g] & 0x0F) | ((lm[g] & 0x0F) << 4));
            s[g - 4] |= (uint8_t)((ls[g] >> 4) << 6);
            s[g] |= (uint8_t)((lm[g] >> 4) << 6);
        }
    }
}

/* Codes (0..nmax) of one super-block, and its packed scales, d and dmin.
 * Returns d and dmin through the pointers (already f16-rounded). */
static void k4_block(const float *x, int nmax, float rmin, int nstep, uint8_t *scales, float *d_out, float *dmin_out,
                     uint8_t *L) {
    float sumx2 = 0.0f;
    for (int l = 0; l < LMOE_QK_K; l++) sumx2 += x[l] * x[l];
    const float av = sqrtf(sumx2 / LMOE_QK_K); /* the super-block's RMS */
    float w[32], scale[8], min[8], max_scale = 0.0f, max_min = 0.0f;
    for (int g = 0; g < 8; g++) {
        for (int l = 0; l < 32; l++) w[l] = av + fabsf(x[32 * g + l]);
        scale[g] = fit_scale_min(32, nmax, x + 32 * g, w, L + 32 * g, &min[g], rmin, nstep, 0);
        max_scale = fmaxf(max_scale, scale[g]);
        max_min = fmaxf(max_min, min[g]);
    }
    const float iscale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float imin = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    int ls[8], lm[8];
    for (int g = 0; g < 8; g++) {
        ls[g] = round_clamp(iscale * scale[g], 0, 63);
        lm[g] = round_clamp(imin * min[g], 0, 63);
    }
    pack_k4_scales(scales, ls, lm);
    const float d = f16_round(max_scale / 63.0f), dmin = f16_round(max_min / 63.0f);
    for (int g = 0; g < 8; g++) {
        const float dl = d * (float)ls[g], ml = dmin * (float)lm[g];
        for (int l = 0; l < 32; l++)
            L[32 * g + l] = dl != 0.0f ? (uint8_t)round_clamp((x[32 * g + l] + ml) / dl, 0, nmax) : 0;
    }
    *d_out = d;
    *dmin_out = dmin;
}

static void quantize_q4_k(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, x += LMOE_QK_K, b += sizeof(struct lmoe_block_q4_k)) {
        uint8_t L[LMOE_QK_K];
        float d, dmin;
        k4_block(x, 15, -1.0f, 20, b + offsetof(struct lmoe_block_q4_k, scales), &d, &dmin, L);
        put_f16(b, offsetof(struct lmoe_block_q4_k, d), d);
        put_f16(b, offsetof(struct lmoe_block_q4_k, dmin), dmin);
        uint8_t *qs = b + offsetof(struct lmoe_block_q4_k, qs);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) qs[c * 32 + l] = (uint8_t)(L[c * 64 + l] | (L[c * 64 + 32 + l] << 4));
    }
}

static void quantize_q5_k(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, x += LMOE_QK_K, b += sizeof(struct lmoe_block_q5_k)) {
        uint8_t L[LMOE_QK_K];
        float d, dmin;
        k4_block(x, 31, -0.5f, 15, b + offsetof(struct lmoe_block_q5_k, scales), &d, &dmin, L);
        put_f16(b, offsetof(struct lmoe_block_q5_k, d), d);
        put_f16(b, offsetof(struct lmoe_block_q5_k, dmin), dmin);
        uint8_t *qh = b + offsetof(struct lmoe_block_q5_k, qh);
        uint8_t *qs = b + offsetof(struct lmoe_block_q5_k, qs);
        memset(qh, 0, LMOE_QK_K / 8);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                qs[c * 32 + l] = (uint8_t)((L[c * 64 + l] & 0x0F) | ((L[c * 64 + 32 + l] & 0x0F) << 4));
        for (int e = 0; e < LMOE_QK_K; e++) qh[e % 32] |= (uint8_t)((L[e] >> 4) << (e / 32));
    }
}

/*
 * Q6_K: 16 groups of 16, signed codes -32..31, a signed 8-bit scale per
 * group against f16 d; the group with the largest scale magnitude maps to
 * -128 (clamped to 127 on the other side).
 */
static void quantize_q6_k(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, x += LMOE_QK_K, b += sizeof(struct lmoe_block_q6_k)) {
        float scale[16];
        for (int g = 0; g < 16; g++) scale[g] = fit_scale_sym(16, 32, x + 16 * g);
        const float max_scale = scale[argmax_abs(scale, 16)];
        uint8_t *ql = b + offsetof(struct lmoe_block_q6_k, ql);
        uint8_t *qh = b + offsetof(struct lmoe_block_q6_k, qh);
        int8_t *sc = (int8_t *)(b + offsetof(struct lmoe_block_q6_k, scales));
        const float iscale = max_scale != 0.0f ? -128.0f / max_scale : 0.0f;
        for (int g = 0; g < 16; g++) sc[g] = (int8_t)round_clamp(iscale * scale[g], -128, 127);
        const float d = iscale != 0.0f ? f16_round(1.0f / iscale) : 0.0f;
        put_f16(b, offsetof(struct lmoe_block_q6_k, d), d);
        memset(ql, 0, LMOE_QK_K / 2);
        memset(qh, 0, LMOE_QK_K / 4);
        for (int e = 0; e < LMOE_QK_K; e++) {
            const float dl = d * (float)sc[e / 16];
            const int code = (dl != 0.0f ? round_clamp(x[e] / dl, -32, 31) : 0) + 32; /* 0..63 */
            const int h = e / 128, k = (e % 128) / 32, l = e % 32;
            ql[h * 64 + (k % 2) * 32 + l] |= (uint8_t)((code & 0x0F) << ((k / 2) * 4));
            qh[h * 32 + l] |= (uint8_t)((code >> 4) << (2 * k));
        }
    }
}

/* ---- Float types ------------------------------------------------------------ */

static void quantize_f32(const float *x, void *dst, int64_t n) { memcpy(dst, x, (size_t)n * sizeof(float)); }

static void quantize_f16(const float *x, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) put_f16(p, (size_t)i * 2, x[i]);
}

static void quantize_bf16(const float *x, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        const lmoe_bf16 h = lmoe_f32_to_bf16(x[i]);
        memcpy(p + i * 2, &h, sizeof h);
    }
}

/* ---- Dispatch ----------------------------------------------------------------- */

typedef void (*quantize_fn)(const float *x, void *dst, int64_t n);

static quantize_fn quantizer(uint32_t type) {
    switch (type) {
    case LMOE_DTYPE_F32:
        return quantize_f32;
    case LMOE_DTYPE_F16:
        return quantize_f16;
    case LMOE_DTYPE_BF16:
        return quantize_bf16;
    case LMOE_DTYPE_Q4_0:
        return quantize_q4_0;
    case LMOE_DTYPE_Q4_1:
        return quantize_q4_1;
    case LMOE_DTYPE_Q5_0:
        return quantize_q5_0;
    case LMOE_DTYPE_Q5_1:
        return quantize_q5_1;
    case LMOE_DTYPE_Q8_0:
        return lmoe_quantize_row_q8_0;
    case LMOE_DTYPE_Q2_K:
        return quantize_q2_k;
    case LMOE_DTYPE_Q3_K:
        return quantize_q3_k;
    case LMOE_DTYPE_Q4_K:
        return quantize_q4_k;
    case LMOE_DTYPE_Q5_K:
        return quantize_q5_k;
    case LMOE_DTYPE_Q6_K:
        return quantize_q6_k;
    default:
        return NULL;
    }
}

int lmoe_quantize_supported(uint32_t type) { return quantizer(type) != NULL; }

int64_t lmoe_quantize(uint32_t type, const float *x, void *dst, int64_t n) {
    const quantize_fn fn = quantizer(type);
    const int64_t bytes = lmoe_dtype_row_size(type, n);
    if (!fn || bytes < 0) return -1;
    fn(x, dst, n);
    return bytes;
}
